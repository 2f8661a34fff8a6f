"""Image data: IDX and CIFAR readers, verified fetching, stacked construction, device sampling.

The tests write tiny files in the real formats under tmp_path; nothing is downloaded (file:// URLs
and an unreachable local port stand in for mirrors). One test reads Debian's real Fashion-MNIST.
"""

import dataclasses
import gzip
import hashlib
import io
import math
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_cfg
from hydra.utils import instantiate

from ganlab.config import validate
from ganlab.data import files, images
from ganlab.data.images import ImageDataset, load_split, mode_ids, read_idx
from ganlab.errors import ConfigError, GanlabError

IDX_NAMES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    raw = struct.pack(f">BBBB{array.ndim}I", 0, 0, 0x08, array.ndim, *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def fake_mnist(root: Path, name: str = "mnist", n_train: int = 30, n_test: int = 10) -> dict:
    """Image i of a split is the constant i + 1 (so a pixel identifies its source); its label is i % 10."""
    made = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = np.broadcast_to(np.arange(1, n + 1, dtype=np.uint8)[:, None, None], (n, 28, 28)).copy()
        y = np.arange(n, dtype=np.uint8) % 10
        (root / name).mkdir(parents=True, exist_ok=True)
        write_idx(root / name / IDX_NAMES[split][0], x)
        write_idx(root / name / IDX_NAMES[split][1], y)
        made[split] = (x, y)
    return made


def cifar_batch(n: int, offset: int) -> bytes:
    rng = np.random.default_rng(offset)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    return pickle.dumps({b"batch_label": b"x", b"data": data, b"labels": labels}, protocol=2)


def fake_cifar(root: Path, extracted: bool = False) -> dict[str, bytes]:
    batches = {f"data_batch_{i}": cifar_batch(2, i) for i in range(1, 6)} | {"test_batch": cifar_batch(3, 9)}
    (root / "cifar10").mkdir(parents=True)
    if extracted:
        (root / "cifar10" / "cifar-10-batches-py").mkdir()
        for name, blob in batches.items():
            (root / "cifar10" / "cifar-10-batches-py" / name).write_bytes(blob)
    else:
        with tarfile.open(root / "cifar10" / "cifar-10-python.tar.gz", "w:gz") as tar:
            for name, blob in batches.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    return batches


# --- reading ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trips(tmp_path, gz):
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    got = read_idx(write_idx(tmp_path / ("a.gz" if gz else "a"), x, gz))
    assert got.dtype == torch.uint8 and got.shape == (5, 28, 28)
    assert np.array_equal(got.numpy(), x)


def test_load_split_mnist_like(tmp_path):
    made = fake_mnist(tmp_path, "fashion_mnist")
    for split in ("train", "test"):
        x, y = load_split("fashion_mnist", split, str(tmp_path))
        assert x.dtype == torch.uint8 and x.shape == (len(made[split][0]), 1, 28, 28)
        assert y.dtype == torch.int64 and y.shape == (len(made[split][0]),)
        assert np.array_equal(x[:, 0].numpy(), made[split][0]) and np.array_equal(y.numpy(), made[split][1])


@pytest.mark.parametrize("extracted", [False, True])
def test_load_split_cifar10_from_tar_or_directory(tmp_path, extracted):
    batches = fake_cifar(tmp_path, extracted)
    x, y = load_split("cifar10", "train", str(tmp_path))
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.uint8 and y.shape == (10,) and y.dtype == torch.int64
    first = pickle.loads(batches["data_batch_1"], encoding="bytes")
    row = first[b"data"][1]  # row-major CHW: R plane, G plane, B plane
    assert x[1, 2, 5, 7] == row[2 * 1024 + 5 * 32 + 7] and y[1] == first[b"labels"][1]
    last = pickle.loads(batches["data_batch_5"], encoding="bytes")
    assert np.array_equal(x[-2:].reshape(2, -1).numpy(), last[b"data"])
    xt, yt = load_split("cifar10", "test", str(tmp_path))
    assert xt.shape == (3, 3, 32, 32)
    assert yt.tolist() == pickle.loads(batches["test_batch"], encoding="bytes")[b"labels"]


def test_corrupt_files_ask_to_be_deleted(tmp_path):
    good = gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 28, 28) + bytes(2 * 784))
    cases = {"truncated.gz": good[: len(good) // 2],
             "short.gz": gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 28, 28) + bytes(100)),
             "magic.gz": gzip.compress(b"\x01\x02\x03\x04" + bytes(100)),
             "notgzip.gz": b"this is not gzip"}
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(GanlabError) as err:
            read_idx(tmp_path / name)
        message = str(err.value)
        assert name in message and "delete it" in message and "\n" not in message
    fake_cifar(tmp_path)
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").write_bytes(b"garbage")
    with pytest.raises(GanlabError, match="cifar-10-python.tar.gz is corrupt"):
        load_split("cifar10", "train", str(tmp_path))


def idx_bytes(dims: tuple[int, ...], payload: bytes, type_code: int = 0x08) -> bytes:
    """An IDX file whose header says `dims` (each a uint32, whatever the payload) before `payload`."""
    return struct.pack(f">BBBB{len(dims)}I", 0, 0, type_code, len(dims), *dims) + payload


def assert_refused_in_one_line(path: Path, *words: str) -> str:
    with pytest.raises(GanlabError) as err:
        read_idx(path)
    message = str(err.value)
    assert str(path) in message and "delete it" in message and "\n" not in message, message
    for word in words:
        assert word in message, (word, message)
    return message


# (2**32-1)**3 wraps to 3 * 2**32 - 1 in int64; (2**16,)*4 wraps to 0; 2 * 2147549185 * 4294836226 is
# 2**64 + 4, which wraps to 4: its 4-byte payload matched the wrapped product, so the old check passed
# and numpy's reshape raised a ValueError (a traceback) instead of the file's one-line error.
@pytest.mark.parametrize("dims, payload", [((2**32 - 1,) * 3, 12), ((2**16,) * 4, 0),
                                           ((2, 2147549185, 4294836226), 4)])
@pytest.mark.parametrize("gz", [True, False])
def test_an_idx_header_whose_size_overflows_64_bits_is_refused(tmp_path, dims, payload, gz):
    assert math.prod(dims) >= 2**64
    path = tmp_path / ("huge.gz" if gz else "huge")
    raw = idx_bytes(dims, bytes(payload))
    path.write_bytes(gzip.compress(raw) if gz else raw)
    assert_refused_in_one_line(path, str(math.prod(dims)))


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("n_payload", [2 * 784 - 1, 2 * 784 + 1, 0, 3 * 784])
def test_an_idx_payload_of_another_size_than_its_header_says_is_refused(tmp_path, gz, n_payload):
    """Fewer bytes than the header's (2, 28, 28) need, and more: the decompressed length is compared."""
    path = tmp_path / ("images.gz" if gz else "images")
    raw = idx_bytes((2, 28, 28), bytes(n_payload))
    path.write_bytes(gzip.compress(raw) if gz else raw)
    assert_refused_in_one_line(path, "1568 bytes", f"holds {n_payload}")


@pytest.mark.parametrize("dims", [(0, 28, 28), (2, 0, 28), (0,)])
def test_an_idx_header_with_a_zero_dimension_is_refused(tmp_path, dims):
    path = write_idx(tmp_path / "empty.gz", np.zeros(dims, np.uint8))  # a consistent, empty file
    assert_refused_in_one_line(path, "zero", str(dims))


@pytest.mark.parametrize("type_code, words", [(0x0D, ["type 0x0d", "0x08"]), (0x42, ["type 0x42", "0x08"])])
def test_an_idx_file_of_another_or_unknown_type_is_refused(tmp_path, type_code, words):
    path = tmp_path / "floats.gz"  # 0x0d is IDX's float32: a size that matches it, not 0x08's
    path.write_bytes(gzip.compress(idx_bytes((2, 3), bytes(2 * 3 * 4), type_code)))
    assert_refused_in_one_line(path, *words)


@pytest.mark.parametrize("gz", [True, False])
def test_a_valid_small_idx_file_still_loads(tmp_path, gz):
    labels = np.array([3, 1, 4, 1, 5, 9, 2], np.uint8)
    images = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5) * 7
    got_labels = read_idx(write_idx(tmp_path / ("l.gz" if gz else "l"), labels, gz))
    got_images = read_idx(write_idx(tmp_path / ("i.gz" if gz else "i"), images, gz))
    assert got_labels.dtype == torch.uint8 and got_labels.tolist() == [3, 1, 4, 1, 5, 9, 2]
    assert got_images.shape == (2, 3, 5) and np.array_equal(got_images.numpy(), images)


class _ShapedArray:
    """Pickles as the ndarray numpy would write, but with the header's `shape` over `payload` bytes,
    through the same _reconstruct + __setstate__ calls a CIFAR batch uses."""

    def __init__(self, shape: tuple[int, ...], payload: bytes | str):
        self.shape, self.payload = shape, payload

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct  # what pickling an ndarray names under numpy 2

        return _reconstruct, (np.ndarray, (0,), b"b"), (1, self.shape, np.dtype(np.uint8), False, self.payload)


def cifar_entry(data, labels) -> bytes:
    return pickle.dumps({b"batch_label": b"x", b"data": data, b"labels": labels}, protocol=2)


@pytest.mark.parametrize("case, words", [
    ("more rows than the payload holds", ["data_batch_3"]),
    ("fewer rows than the payload holds", ["data_batch_3"]),
    ("rows of 3071 bytes", ["data_batch_3", "(2, 3071)"]),
    ("3 labels for 2 rows", ["data_batch_3", "3 labels"]),
    ("no rows", ["data_batch_3", "(0, 3072)"]),
    ("int64 pixels", ["data_batch_3", "int64"]),
    ("a label of 10", ["data_batch_3", "0..9"]),
    ("a label past int64", ["data_batch_3"]),
])
@pytest.mark.parametrize("extracted", [False, True])
def test_a_cifar_batch_of_the_wrong_size_or_type_is_refused(tmp_path, case, words, extracted):
    rows = np.random.default_rng(0).integers(0, 256, (2, 3072), dtype=np.uint8)
    blob = {"more rows than the payload holds": cifar_entry(_ShapedArray((3, 3072), rows.tobytes()), [1, 2, 3]),
            "fewer rows than the payload holds": cifar_entry(_ShapedArray((1, 3072), rows.tobytes()), [1]),
            "rows of 3071 bytes": cifar_entry(rows[:, :3071].copy(), [1, 2]),
            "3 labels for 2 rows": cifar_entry(rows, [1, 2, 3]),
            "no rows": cifar_entry(_ShapedArray((0, 3072), ""), []),  # numpy pickles b"" as builtins.bytes
            "int64 pixels": cifar_entry(rows.astype(np.int64), [1, 2]),
            "a label of 10": cifar_entry(rows, [1, 10]),
            "a label past int64": cifar_entry(rows, [1, 2**70])}[case]
    fake_cifar(tmp_path, extracted)
    directory = tmp_path / "cifar10"
    if extracted:
        (directory / "cifar-10-batches-py" / "data_batch_3").write_bytes(blob)
        source = directory / "cifar-10-batches-py"
    else:
        source = directory / "cifar-10-python.tar.gz"
        with tarfile.open(source, "r:gz") as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        members["cifar-10-batches-py/data_batch_3"] = blob
        with tarfile.open(source, "w:gz") as tar:
            for name, content in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    with pytest.raises(GanlabError) as err:
        load_split("cifar10", "train", str(tmp_path))
    message = str(err.value)
    assert str(source) in message and "is corrupt" in message and "delete it" in message and "\n" not in message
    for word in words:
        assert word in message, (word, message)
    assert load_split("cifar10", "test", str(tmp_path))[0].shape == (3, 3, 32, 32)  # the other split reads


def test_train_on_an_overflowing_idx_file_is_one_line_without_traceback(tmp_path, capsys, monkeypatch):
    """`ganlab train` with a corrupt data file: exit status 2, one line naming the file, no traceback
    (the run used to fail inside with a ValueError from numpy's reshape, its traceback in train.log)."""
    from test_bad_input import run_in_process

    root = tmp_path / "data"
    fake_mnist(root, "fashion_mnist", n_train=20, n_test=10)
    bad = root / "fashion_mnist" / IDX_NAMES["train"][0]
    bad.write_bytes(gzip.compress(idx_bytes((2, 2147549185, 4294836226), bytes(4))))
    code, out, err = run_in_process(["dataset=fashion_mnist", f"dataset.root={root}", "steps=2"],
                                    capsys, monkeypatch, tmp_path)
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("ganlab: error: data file ") and str(bad) in lines[0], err
    assert "Traceback" not in out + err + "".join(p.read_text() for p in tmp_path.rglob("train.log"))


def test_cifar_pickle_may_not_run_code(tmp_path):
    fake_cifar(tmp_path, extracted=True)
    evil = pickle.dumps(os.system)  # a pickle that would import a callable
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch").write_bytes(evil)
    with pytest.raises(GanlabError, match="unexpected"):
        load_split("cifar10", "test", str(tmp_path))


# --- fetching --------------------------------------------------------------------------------------

def local_mirror(monkeypatch, tmp_path, payload: bytes, sha256: str | None) -> tuple[str, Path]:
    """Serve `payload` as MNIST's train labels from a file:// mirror, with `sha256` as the registry's hash."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "train-labels-idx1-ubyte.gz").write_bytes(payload)
    remote = files.REGISTRY["mnist"]
    patched = dataclasses.replace(remote, mirrors=(mirror.as_uri() + "/",),
                                  files={**remote.files, "train-labels-idx1-ubyte.gz": sha256})
    monkeypatch.setitem(files.REGISTRY, "mnist", patched)
    (tmp_path / "root").mkdir()
    return mirror.as_uri() + "/train-labels-idx1-ubyte.gz", tmp_path / "root"


def test_a_data_root_that_does_not_exist_is_refused_and_not_created(monkeypatch, tmp_path):
    _, root = local_mirror(monkeypatch, tmp_path, b"bytes", hashlib.sha256(b"bytes").hexdigest())
    missing = root / "typo"
    with pytest.raises(GanlabError, match=f"dataset.root={missing} does not exist; create it first"):
        files.fetch("mnist", "train-labels-idx1-ubyte.gz", missing)
    assert not missing.exists()
    monkeypatch.setenv("GANLAB_DATA", str(missing))
    with pytest.raises(GanlabError, match=r"\$GANLAB_DATA=.* does not exist"):
        files.fetch("mnist", "train-labels-idx1-ubyte.gz")
    assert not missing.exists()


def test_fetch_verifies_and_places_the_file(monkeypatch, tmp_path):
    payload = b"label bytes"
    _, root = local_mirror(monkeypatch, tmp_path, payload, hashlib.sha256(payload).hexdigest())
    path = files.fetch("mnist", "train-labels-idx1-ubyte.gz", root)
    assert path == root / "mnist" / "train-labels-idx1-ubyte.gz" and path.read_bytes() == payload
    assert os.listdir(root / "mnist") == ["train-labels-idx1-ubyte.gz"]  # no temporary left over
    assert files.fetch("mnist", "train-labels-idx1-ubyte.gz", root) == path  # found, not fetched again


def test_fetch_rejects_a_checksum_mismatch(monkeypatch, tmp_path):
    expected = hashlib.sha256(b"the real bytes").hexdigest()
    _, root = local_mirror(monkeypatch, tmp_path, b"tampered bytes", expected)
    with pytest.raises(GanlabError) as err:
        files.fetch("mnist", "train-labels-idx1-ubyte.gz", root)
    message = str(err.value)
    assert "train-labels-idx1-ubyte.gz" in message and expected in message
    assert hashlib.sha256(b"tampered bytes").hexdigest() in message
    assert os.listdir(root / "mnist") == []  # nothing kept, not even the temporary


def test_fetch_refuses_a_file_without_a_verified_hash(monkeypatch, tmp_path):
    _, root = local_mirror(monkeypatch, tmp_path, b"bytes", None)
    with pytest.raises(GanlabError, match="no verified checksum"):
        files.fetch("mnist", "train-labels-idx1-ubyte.gz", root)
    assert not (root / "mnist" / "train-labels-idx1-ubyte.gz").exists()


def test_offline_error_names_file_path_and_url(monkeypatch, tmp_path):
    remote = dataclasses.replace(files.REGISTRY["mnist"], mirrors=("http://127.0.0.1:9/mnist/",))
    monkeypatch.setitem(files.REGISTRY, "mnist", remote)
    monkeypatch.setattr(files, "TIMEOUT", 2.0)
    with pytest.raises(GanlabError) as err:  # at construction: a missing file fails at start-up
        images.mnist(root=str(tmp_path))
    assert type(err.value) is GanlabError
    message = str(err.value)
    assert "\n" not in message and "train-images-idx3-ubyte.gz" in message
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in message
    assert "http://127.0.0.1:9/mnist/train-images-idx3-ubyte.gz" in message
    assert os.listdir(tmp_path / "mnist") == []


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("GANLAB_DATA", str(tmp_path / "env"))
    assert files.data_root("/explicit") == Path("/explicit")
    assert files.data_root(None) == tmp_path / "env"
    monkeypatch.delenv("GANLAB_DATA")
    assert files.data_root(None) == Path.home() / ".cache" / "ganlab" / "data"


# --- datasets --------------------------------------------------------------------------------------

def test_construction_is_lazy(monkeypatch, tmp_path):
    fake_mnist(tmp_path)
    calls = []
    monkeypatch.setattr(images, "read_idx", lambda p: calls.append(p) or read_idx(p))
    data = images.stacked_mnist(root=str(tmp_path), n=100)
    assert calls == [] and data.memory_bytes() == 0
    data.sample(4)
    assert len(calls) == 2
    data.sample(4)
    assert len(calls) == 2  # read once


def test_sampling_holds_uint8_and_returns_scaled_floats(tmp_path):
    made = fake_mnist(tmp_path)
    data = images.mnist(root=str(tmp_path), device="cpu")
    assert (data.name, data.base, data.shape, data.n_modes, data.stacked) == ("mnist", "mnist", (1, 28, 28), 10, False)
    g = torch.Generator().manual_seed(0)
    x, y = data.sample_with_labels(64, generator=g)
    assert data._images.dtype == torch.uint8 and data._images.device == data.device
    assert x.dtype == torch.float32 and x.shape == (64, 1, 28, 28) and y.shape == (64,)
    assert x.min() >= -1 and x.max() <= 1
    source = ((x[:, 0, 0, 0] + 1) * 127.5).round().long() - 1  # image i is the constant i + 1
    assert torch.equal(y, torch.as_tensor(made["train"][1]).long()[source])
    same = [data.sample(8, torch.Generator().manual_seed(1)) for _ in range(2)]
    assert torch.equal(*same)
    assert data.memory_bytes() == 30 * 28 * 28 + 30 * 8
    # 0 and 255 map to exactly -1 and 1
    full = ImageDataset("mnist", root=str(tmp_path))
    full._images, full._labels = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1), torch.zeros(2).long()
    assert set(full.sample(50).flatten().tolist()) == {-1.0, 1.0}


def test_pad_to_32(tmp_path):
    fake_mnist(tmp_path)
    data = images.mnist(root=str(tmp_path), pad_to_32=True)
    x = data.sample(5)
    assert data.shape == (1, 32, 32) and x.shape == (5, 1, 32, 32)
    assert (x[:, :, :2] == -1).all() and (x[:, :, :, -2:] == -1).all() and (x[:, :, 2:30, 2:30] > -1).all()


def test_stacked_channels_are_the_labelled_digits(tmp_path):
    made = fake_mnist(tmp_path, n_train=50)
    data = images.stacked_mnist(root=str(tmp_path), n=1000, seed=3)
    assert (data.name, data.base, data.shape, data.n_modes) == ("stacked_mnist", "mnist", (3, 28, 28), 1000)
    assert data.stacked and data.split == "train"
    x, y = data.sample_with_labels(500, torch.Generator().manual_seed(0))
    assert x.shape == (500, 3, 28, 28) and y.shape == (500, 3)
    pixels = ((x + 1) * 127.5).round().long()
    assert (pixels == pixels[:, :, :1, :1]).all()  # each channel is one whole base image
    source = pixels[:, :, 0, 0] - 1  # (500, 3): the base index of each channel's digit
    assert torch.equal(y, torch.as_tensor(made["train"][1]).long()[source])
    ids = mode_ids(y)
    assert torch.equal(ids, y[:, 0] * 100 + y[:, 1] * 10 + y[:, 2]) and ids.max() < 1000
    assert data.memory_bytes() == 50 * 784 + 50 * 8 + 1000 * 3 * 8


def test_stacked_table_is_fixed_by_its_seed(tmp_path):
    fake_mnist(tmp_path)
    def table(seed):
        data = images.stacked_mnist(root=str(tmp_path), n=200, seed=seed)
        data.sample(1)
        return data._table
    assert torch.equal(table(0), table(0)) and not torch.equal(table(0), table(1))
    expected = torch.randint(0, 30, (200, 3), generator=torch.Generator().manual_seed(0))
    assert torch.equal(table(0), expected)  # a CPU generator: the same on every machine


def test_bad_values_are_one_line_config_errors(tmp_path):
    fake_mnist(tmp_path)
    for make in (lambda: images.mnist(root=str(tmp_path), split="val"),
                 lambda: images.stacked_mnist(root=str(tmp_path), n=0),
                 lambda: load_split("svhn", "train", str(tmp_path))):
        with pytest.raises(ConfigError) as err:
            make()
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "stacked_mnist", "stacked_fashion_mnist"])
def test_configs_validate_and_instantiate(tmp_path, name):
    if "cifar" in name:
        fake_cifar(tmp_path)
    else:
        fake_mnist(tmp_path, name.removeprefix("stacked_"))
    cfg = make_cfg(f"dataset={name}", f"dataset.root={tmp_path}")
    validate(cfg)
    data = instantiate(cfg.dataset, device="cpu")
    assert isinstance(data, ImageDataset) and data.name == name
    assert data.sample(2).shape == (2, *data.shape)


# --- the real Fashion-MNIST (Debian's dataset-fashion-mnist) ---------------------------------------

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def test_debian_fashion_mnist(tmp_path):
    if not all((DEBIAN / f).is_file() for pair in IDX_NAMES.values() for f in pair):
        if os.environ.get("GANLAB_REQUIRE_DEBIAN_FASHION") == "1":
            pytest.fail(f"GANLAB_REQUIRE_DEBIAN_FASHION=1 but {DEBIAN} lacks the IDX files "
                        "(apt-get install dataset-fashion-mnist)")
        pytest.skip(f"Debian's dataset-fashion-mnist is not installed ({DEBIAN})")
    for split, n in (("train", 60000), ("test", 10000)):
        x, y = load_split("fashion_mnist", split, str(tmp_path))  # empty root: found in the system copy
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.uint8
        assert torch.equal(torch.bincount(y, minlength=10), torch.full((10,), n // 10))
    assert list((tmp_path).iterdir()) == []  # nothing downloaded


def test_the_real_reference_is_drawn_without_replacement(tmp_path):
    """FID's protocol uses each training image once: at n = len(train) every image appears exactly
    once (with replacement, 30 draws from 30 would hold about 63 % of them); beyond, whole passes."""
    fake_mnist(tmp_path, "mnist", n_train=30)
    data = ImageDataset("mnist", root=str(tmp_path))
    g = torch.Generator().manual_seed(0)
    source = lambda x: ((x[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()  # noqa: E731 - image i is i + 1
    assert sorted(source(data.sample_unique(30, g))) == list(range(1, 31))
    twice = source(data.sample_unique(60, g))
    assert sorted(twice[:30]) == sorted(twice[30:]) == list(range(1, 31))
    assert len(set(data.unique_indices(30, g).tolist())) == 30
    stacked = ImageDataset("mnist", root=str(tmp_path), stack_n=50, stack_seed=1)
    assert len(set(stacked.unique_indices(50, g).tolist())) == 50
