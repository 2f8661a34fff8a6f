"""Fuzzing the data files (issue 28, item 9): IDX files and CIFAR-10 batches with corrupt headers, and data roots
of every kind. Each property holds for any generated input: the reader returns exactly the array an independent
reading of the format gives, or refuses with one GanlabError line naming the file; nothing else escapes.

The oracles below read the formats themselves (the IDX header with int.from_bytes, a CIFAR batch with their own
restricted unpickler and the format's rules), never through ganlab's readers. Everything runs in this process on
small files under a temporary directory; downloads are blocked (no network).

`make fuzz` runs these with many fresh examples (HYPOTHESIS_PROFILE=fuzz, tests/conftest.py); `make test` with a
few fixed ones.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.error
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from test_image_data import IDX_NAMES

from ganlab.config import check_data_root
from ganlab.data import files
from ganlab.data.images import load_split, read_idx
from ganlab.errors import ConfigError, GanlabError

FUZZING = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"


def examples(default: int, fuzz: int = 2000, fixtures: bool = False) -> settings:
    """A property's example count: `default` under `make test`, `fuzz` under `make fuzz`. `fixtures`: the test
    takes function-scoped fixtures (capsys, a monkeypatch) that every example may share."""
    return settings(max_examples=fuzz if FUZZING else default,
                    suppress_health_check=[HealthCheck.function_scoped_fixture] if fixtures else [])


@contextlib.contextmanager
def scratch(tmp_path_factory):
    """A fresh directory for one example (Hypothesis runs many examples in one test call)."""
    directory = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    try:
        yield directory
    finally:
        for path in directory.rglob("*"):  # an example may leave a directory without permissions
            with contextlib.suppress(OSError):
                if not path.is_symlink():
                    path.chmod(0o755)
        shutil.rmtree(directory, ignore_errors=True)


def assert_one_line_naming(error: BaseException, *names: object) -> str:
    message = str(error)
    assert isinstance(error, GanlabError), (type(error), message)
    assert message and "\n" not in message and "\r" not in message, message
    for name in names:
        assert str(name) in message, (name, message)
    return message


# --- IDX -------------------------------------------------------------------------------------------

def idx_header(dims, type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)


def idx_expected(raw: bytes | None) -> np.ndarray | None:
    """What an IDX file of unsigned bytes holds, read from the format's definition; None when it is no such file."""
    if raw is None or len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] == 0:
        return None
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        return None
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if 0 in dims or math.prod(dims) != len(raw) - header:
        return None
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def decompressed(path: Path) -> bytes | None:
    """The bytes a reader of `path` sees: gunzipped for a .gz (by the standard library), None if it cannot."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error):
        return None


# A mutation is a tagged tuple, so that a failing example reads as what was done to the file.
def byte_mutations(header_bytes: int = 40):
    at = st.one_of(st.integers(0, header_bytes), st.integers(0, 10**6))
    return st.one_of(
        st.tuples(st.just("set"), at, st.integers(0, 255)),
        st.tuples(st.just("flip"), at, st.integers(1, 255)),
        st.tuples(st.just("truncate"), st.integers(0, 10**6)),
        st.tuples(st.just("append"), st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("insert"), at, st.binary(min_size=1, max_size=8)),
    )


def mutate(blob: bytes, mutation) -> bytes:
    kind, *args = mutation
    out = bytearray(blob)
    if kind == "truncate":
        return bytes(out[: args[0] % max(len(out), 1)])  # strictly shorter (or empty)
    if kind == "append":
        return bytes(out) + args[0]
    if not out:
        return bytes(out)
    at = args[0] % len(out)
    if kind == "set":
        out[at] = args[1]
    elif kind == "flip":
        out[at] ^= args[1]
    elif kind == "insert":
        out[at:at] = args[1]
    return bytes(out)


UINT32 = st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 1), st.sampled_from([2**16, 2**31, 2**32 - 1]))
header_mutations = st.one_of(
    st.tuples(st.just("dims"), st.lists(UINT32, min_size=0, max_size=6)),  # a header of other dims, same payload
    st.tuples(st.just("ndim"), st.integers(0, 255)),
    st.tuples(st.just("type"), st.one_of(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]), st.integers(0, 255))),
    st.tuples(st.just("magic"), st.integers(0, 255), st.integers(0, 255)),
)


def mutate_header(raw: bytes, dims: tuple[int, ...], mutation) -> bytes:
    kind, *args = mutation
    header = 4 + 4 * len(dims)
    if kind == "dims":
        return raw[:2] + bytes([raw[2], len(args[0]) % 256]) + b"".join(d.to_bytes(4, "big") for d in args[0]) + \
            raw[header:]
    out = bytearray(raw)
    if kind == "ndim":
        out[3] = args[0]
    elif kind == "type":
        out[2] = args[0]
    elif kind == "magic":
        out[0], out[1] = args
    return bytes(out)


def some(mutations, most: int = 2):
    """No mutation half the time (so that intact files are read too), else up to `most`."""
    return st.one_of(st.just([]), st.lists(mutations, min_size=1, max_size=most))


@st.composite
def idx_files(draw):
    """(file name, bytes): a valid IDX file of small random dims, then header and byte mutations, gzipped or not
    (and sometimes named .gz when it is not, or the other way round), and mutations of the compressed bytes."""
    dims = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    seed = draw(st.integers(0, 2**32 - 1))
    raw = idx_header(dims) + np.random.default_rng(seed).integers(0, 256, math.prod(dims), dtype=np.uint8).tobytes()
    for mutation in draw(some(header_mutations)):
        raw = mutate_header(raw, dims, mutation)
    for mutation in draw(some(byte_mutations())):
        raw = mutate(raw, mutation)
    compress = draw(st.booleans())
    blob = gzip.compress(raw, mtime=0) if compress else raw
    if compress:
        for mutation in draw(some(byte_mutations())):
            blob = mutate(blob, mutation)
    named_gz = compress if draw(st.integers(0, 9)) else not compress
    return ("images.gz" if named_gz else "images"), blob


def check_idx(path: Path) -> None:
    expected = idx_expected(decompressed(path))
    try:
        got = read_idx(path)
    except GanlabError as exc:
        assert expected is None, f"refused a valid IDX file of dims {expected.shape}: {exc}"
        assert_one_line_naming(exc, path, "delete it")
        event("refused")
        return
    event("read")
    assert expected is not None, f"read a file that is not a valid IDX file of unsigned bytes: {tuple(got.shape)}"
    assert got.dtype.is_floating_point is False and str(got.dtype) == "torch.uint8"
    assert tuple(got.shape) == expected.shape and np.array_equal(got.numpy(), expected)


@examples(150)
@given(idx_files())
# The regression cases of test_image_data.py, as generated files: a product of dims that wraps 64 bits onto the
# payload's length, and a zero dimension.
@example(("huge", idx_header((2, 2147549185, 4294836226)) + bytes(4)))
@example(("empty.gz", gzip.compress(idx_header((0, 28, 28)))))
def test_an_idx_file_is_read_exactly_or_refused_in_one_line(tmp_path_factory, file):
    name, blob = file
    with scratch(tmp_path_factory) as directory:
        path = directory / name
        path.write_bytes(blob)
        check_idx(path)


# --- CIFAR-10 python batches -------------------------------------------------------------------------

# What a CIFAR batch's pickle may name (numpy arrays, bytes): the format's own needs, as an oracle of its own.
CIFAR_GLOBALS = {("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype"),
                 ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                 ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}


class _Oracle(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name}")
        return super().find_class(module, name)


def cifar_expected(blob: bytes | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(images (n, 3, 32, 32) uint8, labels (n,) int64) of a batch's bytes by the format's rules: a dict with
    b"data", uint8 rows of 3,072 values (n >= 1), and b"labels", n integers in 0..9; None when it is not one."""
    if blob is None:
        return None
    try:
        entry = _Oracle(io.BytesIO(blob), encoding="bytes").load()
    except Exception:  # noqa: BLE001 - any pickle that does not load is no batch
        return None
    if not isinstance(entry, dict) or b"data" not in entry or b"labels" not in entry:
        return None
    data, labels = entry[b"data"], entry[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[0] < 1 \
            or data.shape[1] != 3072:
        return None
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "biu":
            return None
        labels = labels.tolist()
    if not isinstance(labels, (list, tuple)) or len(labels) != len(data):
        return None
    if not all(isinstance(v, (int, np.integer, np.bool_)) and 0 <= int(v) <= 9 for v in labels):
        return None
    return data.reshape(-1, 3, 32, 32), np.array([int(v) for v in labels], np.int64)


@st.composite
def cifar_entries(draw):
    """A batch's pickle: mostly the format's dict with random sizes, dtypes, layouts and labels, sometimes
    another object; then byte mutations of the pickle."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(0, 3))
    if draw(st.booleans()):  # the format's own layout: what varies is the labels, the keys and the bytes
        cols, dtype, shape = 3072, "uint8", "rows"
    else:
        cols = draw(st.sampled_from([3072, 3072, 3072, 3071, 3073, 1, 0]))
        dtype = draw(st.sampled_from(["uint8", "uint8", "uint8", "int8", "uint16", ">u2", "int64", "float32", "bool"]))
        shape = draw(st.sampled_from(["rows", "rows", "flat", "planes", "images"]))
    values = rng.integers(0, 256, n * cols).astype(dtype)
    data = {"rows": values.reshape(n, cols), "flat": values,
            "planes": values.reshape(n, 3, cols // 3) if cols % 3 == 0 else values.reshape(n, cols),
            "images": values.reshape(n, 3, 32, 32) if cols == 3072 else values.reshape(n, cols)}[shape]
    if draw(st.integers(0, 4)) == 0:
        data = np.asfortranarray(data)
    if draw(st.integers(0, 9)) == 0:
        data = draw(st.sampled_from([data.tolist(), data.tobytes(), None, 0]))
    length = max(n + draw(st.sampled_from([0, 0, 0, 0, -1, 1])), 0)
    label = st.one_of(st.integers(0, 9), st.integers(0, 9), st.integers(-3, 12), st.integers(-2**70, 2**70),
                      st.floats(allow_nan=True), st.booleans(), st.text(alphabet="0123456789", max_size=2),
                      st.none())
    label = st.one_of(st.integers(0, 9), label)  # mostly class labels, so that whole batches occur
    labels = draw(st.lists(label, min_size=length, max_size=length))
    form = draw(st.sampled_from(["list", "list", "list", "list", "list", "tuple", "array", "bytes", "dict"]))
    if form == "tuple":
        labels = tuple(labels)
    elif form == "array":
        with contextlib.suppress(Exception):
            labels = np.asarray(labels, draw(st.sampled_from(["int64", "uint8", "float64", "int8", "bool"])))
    elif form == "bytes":
        labels = bytes(v % 256 for v in labels if isinstance(v, int))
    elif form == "dict":
        labels = dict(enumerate(labels))
    entry = {b"batch_label": b"fuzzed", b"data": data, b"labels": labels}
    if draw(st.integers(0, 9)) == 0:
        del entry[draw(st.sampled_from([b"data", b"labels"]))]
    if draw(st.integers(0, 19)) == 0:
        entry = draw(st.sampled_from([[data, labels], 7, None, "text"]))
    blob = pickle.dumps(entry, protocol=2)
    for mutation in draw(some(byte_mutations(header_bytes=200))):
        blob = mutate(blob, mutation)
    return blob


def cifar_batch(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return pickle.dumps({b"batch_label": b"x", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"labels": [int(v) for v in rng.integers(0, 10, n)]}, protocol=2)


BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def write_cifar(root: Path, batches: dict[str, bytes], extracted: bool) -> Path:
    directory = root / "cifar10"
    directory.mkdir(parents=True, exist_ok=True)
    if extracted:
        (directory / "cifar-10-batches-py").mkdir(exist_ok=True)
        for name, blob in batches.items():
            (directory / "cifar-10-batches-py" / name).write_bytes(blob)
        return directory / "cifar-10-batches-py"
    with tarfile.open(directory / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name, blob in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return directory / "cifar-10-python.tar.gz"


def check_cifar_split(root: Path, split: str, blobs: list[bytes | None], source: Path) -> None:
    """load_split(cifar10, split) against the oracle over the split's batches (None: a batch that cannot be read)."""
    parts = [cifar_expected(blob) for blob in blobs]
    expected = None if any(p is None for p in parts) else (np.concatenate([p[0] for p in parts]),
                                                           np.concatenate([p[1] for p in parts]))
    try:
        images, labels = load_split("cifar10", split, str(root))
    except GanlabError as exc:
        assert expected is None, f"refused a valid {split} split: {exc}"
        assert_one_line_naming(exc, source, "delete it")
        event(f"{split}: refused")
        return
    event(f"{split}: read")
    assert expected is not None, f"read a {split} split with a batch that breaks the format: {tuple(images.shape)}"
    assert str(images.dtype) == "torch.uint8" and str(labels.dtype) == "torch.int64"
    assert np.array_equal(images.numpy(), expected[0]) and images.shape == expected[0].shape
    assert np.array_equal(labels.numpy(), expected[1])


@examples(80)
@given(blob=cifar_entries(), which=st.sampled_from(BATCHES["train"] + BATCHES["test"]), extracted=st.booleans())
# Labels that numpy turns into integers without a word: 1.5 read as class 1, "7" as class 7.
@example(blob=pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1.5, 2.0]}, protocol=2),
         which="test_batch", extracted=True)
@example(blob=pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": ["7"]}, protocol=2),
         which="data_batch_2", extracted=False)
# A corrupt codec name in the pickle (the bytes of a batch are written through _codecs.encode(..., "latin1")).
@example(blob=pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [3]}, protocol=2).replace(
    b"latin1", b"lbtin1"), which="test_batch", extracted=True)
def test_a_cifar_batch_is_read_exactly_or_refused_in_one_line(tmp_path_factory, blob, which, extracted):
    batches = {name: cifar_batch(2, i) for i, name in enumerate(BATCHES["train"] + BATCHES["test"])}
    batches[which] = blob
    with scratch(tmp_path_factory) as root:
        source = write_cifar(root, batches, extracted)
        for split in ("train", "test"):
            check_cifar_split(root, split, [batches[b] for b in BATCHES[split]], source)


# --- data roots ---------------------------------------------------------------------------------------

# What may be wrong with one data file under a root that exists.
FILE_FATES = st.one_of(
    st.just(("intact",)), st.just(("intact",)), st.just(("missing",)), st.just(("empty",)),
    st.just(("directory",)), st.just(("dangling link",)), st.tuples(st.just("bytes"), byte_mutations()),
    # a consistent IDX file of other dims: the same pixels, another geometry
    st.tuples(st.just("reshape"), st.sampled_from([(-1, 784), (-1, 14, 56), (-1, 28, 28, 1), (-1,), (-1, 28)])),
    st.tuples(st.just("gunzipped"), st.just(None)),  # the raw bytes under the .gz name
)


def place(path: Path, content: bytes, fate, raw: bytes | None = None) -> None:
    kind, *args = fate
    if kind == "missing":
        return
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    elif kind == "dangling link":
        path.symlink_to(path.with_name("nowhere"))
    elif kind == "bytes":
        path.write_bytes(mutate(content, args[0]))
    elif kind == "reshape" and raw is not None:
        dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3])]
        pixels = raw[4 + 4 * len(dims):]
        try:
            shape = np.empty(len(pixels), np.uint8).reshape(args[0]).shape
        except ValueError:  # a length that does not divide: the file stays as it was
            shape = tuple(dims)
        path.write_bytes(gzip.compress(idx_header(shape) + pixels, mtime=0))
    elif kind == "gunzipped" and raw is not None:
        path.write_bytes(raw)
    else:
        path.write_bytes(content)


ROOT_KINDS = ["missing", "file", "dangling link", "link to a file", "empty", "populated", "populated",
              "link to populated", "unreadable"]


@contextlib.contextmanager
def offline():
    """Downloads fail as offline (nothing reaches the network), through the real fetch and download code."""
    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("offline (the fuzz tests block downloads)")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(files.urllib.request, "urlopen", unreachable)
        yield


def mnist_expected(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """An MNIST split by the format: two readable IDX files, images (n, 28, 28) and n labels in 0..9, n >= 1."""
    image_file, label_file = (directory / name for name in IDX_NAMES[split])
    if not (image_file.is_file() and label_file.is_file()):
        return None
    images, labels = idx_expected(decompressed(image_file)), idx_expected(decompressed(label_file))
    if images is None or labels is None or images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 \
            or len(images) != len(labels) or not len(labels) or labels.max() > 9:
        return None
    return images[:, None], labels.astype(np.int64)


@examples(80)
@given(kind=st.sampled_from(ROOT_KINDS), dataset=st.sampled_from(["mnist", "cifar10"]),
       fates=st.lists(FILE_FATES, min_size=6, max_size=6), sizes=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       extracted=st.booleans())
@example(kind="populated", dataset="mnist", fates=[("reshape", (-1, 14, 56))] + [("intact",)] * 5, sizes=(2, 2),
         extracted=False)  # 2 images of 14 x 56 pixels are no MNIST split
def test_a_data_root_is_refused_in_one_line_or_its_files_read_exactly(tmp_path_factory, kind, dataset, fates, sizes,
                                                                       extracted):
    if kind == "unreadable" and os.geteuid() == 0:
        kind = "populated"  # root reads every directory: no way to make one unreadable here
    with scratch(tmp_path_factory) as base, offline():
        populated = base / "data"
        populated.mkdir()
        if dataset == "mnist":
            raws = {}
            for split, n in zip(("train", "test"), sizes):
                x = np.random.default_rng(n).integers(0, 256, (n, 28, 28), dtype=np.uint8)
                y = np.arange(n, dtype=np.uint8) % 10
                for name, array in zip(IDX_NAMES[split], (x, y)):
                    raws[name] = idx_header(array.shape) + array.tobytes()
            (populated / "mnist").mkdir()
            for (name, raw), fate in zip(sorted(raws.items()), fates):
                place(populated / "mnist" / name, gzip.compress(raw, mtime=0), fate, raw)
        else:
            batches = {name: cifar_batch(1 + i % 2, i) for i, name in enumerate(BATCHES["train"] + BATCHES["test"])}
            write_cifar(populated, batches, extracted)
            if extracted:
                for name, fate in zip(sorted(batches), fates):
                    (populated / "cifar10" / "cifar-10-batches-py" / name).unlink()
                    place(populated / "cifar10" / "cifar-10-batches-py" / name, batches[name], fate)
            else:
                archive = populated / "cifar10" / "cifar-10-python.tar.gz"
                content = archive.read_bytes()
                archive.unlink()
                place(archive, content, fates[0])
        root = {"missing": base / "typo", "file": base / "a_file", "dangling link": base / "link",
                "link to a file": base / "link", "empty": base / "empty", "populated": populated,
                "link to populated": base / "link", "unreadable": populated}[kind]
        if kind == "file" or kind == "link to a file":
            (base / "a_file").write_text("not a folder")
        if kind == "link to a file":
            root.symlink_to(base / "a_file")
        elif kind == "dangling link":
            root.symlink_to(base / "gone")
        elif kind == "link to populated":
            root.symlink_to(populated)
        elif kind == "empty":
            root.mkdir()
        elif kind == "unreadable":
            root.chmod(0)
        before = sorted(p.relative_to(base) for p in base.rglob("*"))

        # The check every command makes of dataset.root before any lookup (config.validate, `ganlab classifier`).
        is_folder = root.is_dir()
        try:
            check_data_root(str(root))
        except ConfigError as exc:
            assert not is_folder, f"refused the folder {root}: {exc}"
            assert_one_line_naming(exc, f"dataset.root={root}", "give the folder that holds the data")
            assert sorted(p.relative_to(base) for p in base.rglob("*")) == before  # nothing created
            event("root refused")
            return
        assert is_folder, f"passed {kind} {root}, which is no folder"

        for split in ("train", "test"):
            if dataset == "mnist":
                expected = mnist_expected(root / "mnist", split) if kind != "unreadable" else None
            else:
                source = root / "cifar10" / ("cifar-10-batches-py" if extracted else "cifar-10-python.tar.gz")
                expected = cifar_split_expected(source, split, extracted) if kind != "unreadable" else None
            try:
                images, labels = load_split(dataset, split, str(root))
            except GanlabError as exc:
                assert expected is None, f"refused a valid {dataset} {split} split under {kind} root: {exc}"
                assert_one_line_naming(exc)
                event("split refused")
                continue
            event("split read")
            assert expected is not None, f"read a broken {dataset} {split} split: {tuple(images.shape)}"
            assert np.array_equal(images.numpy(), expected[0]) and images.shape == expected[0].shape
            assert np.array_equal(labels.numpy(), expected[1]) and str(labels.dtype) == "torch.int64"


def cifar_split_expected(source: Path, split: str, extracted: bool) -> tuple[np.ndarray, np.ndarray] | None:
    blobs = []
    for name in BATCHES[split]:
        if extracted:
            path = source / name
            blobs.append(path.read_bytes() if path.is_file() else None)
            continue
        try:
            with tarfile.open(source, "r:gz") as tar:
                member = tar.extractfile(f"cifar-10-batches-py/{name}")
                blobs.append(member.read() if member else None)
        except (OSError, EOFError, KeyError, tarfile.TarError, zlib.error):
            blobs.append(None)
    parts = [cifar_expected(blob) for blob in blobs]
    if any(p is None for p in parts):
        return None
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def test_the_oracles_know_a_good_file_from_a_bad_one():
    """The properties above are only as good as their oracles: they accept the formats and refuse breaks."""
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_header(x.shape) + x.tobytes()
    assert np.array_equal(idx_expected(raw), x)
    assert idx_expected(raw[:-1]) is None and idx_expected(raw + b"\0") is None
    assert idx_expected(idx_header(x.shape, 0x0D) + x.tobytes()) is None and idx_expected(b"\0\0\x08\0") is None
    good = cifar_batch(2, 0)
    images, labels = cifar_expected(good)
    assert images.shape == (2, 3, 32, 32) and labels.dtype == np.int64
    for entry in ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1.5, 2]},
                  {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 10]},
                  {b"data": np.zeros((2, 3072), np.int64), b"labels": [1, 2]},
                  {b"data": np.zeros((0, 3072), np.uint8), b"labels": []},
                  {b"data": np.zeros((2, 3071), np.uint8), b"labels": [1, 2]}):
        assert cifar_expected(pickle.dumps(entry, protocol=2)) is None, entry
    assert cifar_expected(good[:-1]) is None
    assert cifar_expected(pickle.dumps(os.system)) is None
    assert struct.unpack(">I", idx_header((7,))[4:])[0] == 7
