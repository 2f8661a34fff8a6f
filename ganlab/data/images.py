"""Image datasets: MNIST, Fashion-MNIST, CIFAR-10 and their stacked 1,000-mode versions (docs/images.md).

Each is held on the training device as uint8 and sampled by random index there (docs/benchmarks.md): no
DataLoader, no per-step host-to-device copy.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import logging
import math
import pickle
import struct
import tarfile
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ganlab.data.files import data_root, fetch
from ganlab.errors import ConfigError, GanlabError

log = logging.getLogger(__name__)

NAMES = ("mnist", "fashion_mnist", "cifar10")
SPLITS = ("train", "test")
_IDX = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
_CIFAR_TAR, _CIFAR_DIR = "cifar-10-python.tar.gz", "cifar-10-batches-py"
_CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _corrupt(path: Path | str, problem: str) -> GanlabError:
    return GanlabError(f"data file {path} is corrupt or truncated ({problem}); delete it so that it is fetched again")


# IDX type codes (the third magic byte) and their item sizes; the datasets here are all 0x08.
_IDX_TYPES = {0x08: ("unsigned bytes", 1), 0x09: ("signed bytes", 1), 0x0B: ("int16", 2), 0x0C: ("int32", 4),
              0x0D: ("float32", 4), 0x0E: ("float64", 8)}


def read_idx(path: str | Path) -> Tensor:
    """An IDX file (gzipped or raw) of unsigned bytes, as a uint8 tensor of its dims.

    The header is checked with Python ints, not numpy's 64-bit ones (whose product of dims wraps), and
    the payload (decompressed, for a .gz) must be exactly as long as the dims say."""
    path = Path(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut-off gzip, EOFError
        raise _corrupt(path, str(exc)) from None
    if len(data) < 4 or data[:2] != b"\0\0":  # magic: 0, 0, type code, number of dims
        raise _corrupt(path, "not an IDX file")
    type_code, ndim = data[2], data[3]
    if type_code != 0x08:
        kind = _IDX_TYPES[type_code][0] if type_code in _IDX_TYPES else "an unknown type"
        raise _corrupt(path, f"IDX type 0x{type_code:02x} ({kind}); expected 0x08 (unsigned bytes)")
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise _corrupt(path, "bad IDX header")
    dims = tuple(int(d) for d in struct.unpack(f">{ndim}I", data[4:header]))
    if 0 in dims:
        raise _corrupt(path, f"IDX dims {dims} have a zero dimension, so no data")
    expected = math.prod(dims) * _IDX_TYPES[type_code][1]  # exact: a Python int never wraps
    if len(data) - header != expected:
        raise _corrupt(path, f"IDX dims {dims} need {expected} bytes of data; the "
                             f"{'decompressed ' if path.suffix == '.gz' else ''}file holds {len(data) - header}")
    return torch.from_numpy(np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy())


def idx_sha256(array: Tensor) -> str:
    """SHA-256 of uint8 `array` written as an IDX file: for an array `read_idx` returned, the SHA-256 of the
    (decompressed) file it was read from, which is exactly that header and payload, whatever its compression."""
    a = array.detach().cpu().contiguous()
    if a.dtype != torch.uint8:
        raise ValueError(f"idx_sha256 needs uint8 data, not {a.dtype}")
    digest = hashlib.sha256(struct.pack(f">BBBB{a.ndim}I", 0, 0, 0x08, a.ndim, *a.shape))
    digest.update(a.numpy().data)
    return digest.hexdigest()


def split_sha256(name: str, split: str, images: Tensor, labels: Tensor) -> dict[str, str]:
    """The SHA-256 of each decompressed IDX file of an MNIST-like split, from what `load_split` returned
    ((n, 1, 28, 28) uint8 images, int64 labels in 0..9): {"train-images-idx3-ubyte": hex, ...}."""
    if name not in _IDX_DATASETS:
        raise ValueError(f"{name} is not read from IDX files")
    image_file, label_file = (f.removesuffix(".gz") for f in _IDX[split])
    return {image_file: idx_sha256(images.reshape(len(images), *images.shape[-2:])),
            label_file: idx_sha256(labels.to(torch.uint8))}


_IDX_DATASETS = ("mnist", "fashion_mnist")


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles: allow only what numpy arrays need, so a planted file cannot run code.
    (Python 3's protocol 2 writes bytes through _codecs.encode.)"""

    _ALLOWED = frozenset({("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype"),
                          ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                          ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")})

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected {module}.{name}")
        return super().find_class(module, name)


def _sources(name: str, split: str, root: str | None) -> list[Path]:
    """The files a split is read from, fetched if missing (this is where an offline start fails)."""
    if name not in NAMES:
        raise ConfigError(f"unknown image dataset {name!r}; choose one of {', '.join(NAMES)}")
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}: choose train or test")
    if name == "cifar10":
        extracted = data_root(root) / "cifar10" / _CIFAR_DIR
        return [extracted] if extracted.is_dir() else [fetch("cifar10", _CIFAR_TAR, root)]
    return [fetch(name, f, root) for f in _IDX[split]]


def _read(name: str, split: str, sources: list[Path]) -> tuple[Tensor, Tensor]:
    if name == "cifar10":
        return _read_cifar(sources[0], split)
    images, labels = (read_idx(p) for p in sources)
    if images.shape[1:] != (28, 28):  # a consistent IDX file of other images: the networks are built for 28 x 28
        raise _corrupt(sources[0], f"IDX dims {tuple(images.shape)}; {name} images are (n, 28, 28)")
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or not len(labels) or labels.max() > 9:
        raise _corrupt(sources[0].parent, f"images {tuple(images.shape)} and labels {tuple(labels.shape)} in "
                                          "0..9 do not match")
    return images.unsqueeze(1), labels.long()


def _read_cifar(source: Path, split: str) -> tuple[Tensor, Tensor]:
    """The python batches, from the extracted directory or straight from the tar.gz. Each must hold
    uint8 data of shape (n, 3072), n >= 1, and n labels in 0..9."""
    images, labels = [], []
    batch = None
    try:
        with (contextlib.nullcontext() if source.is_dir() else tarfile.open(source, "r:gz")) as tar:
            for batch in _CIFAR_BATCHES[split]:
                if tar is None:
                    blob = (source / batch).read_bytes()
                else:
                    member = tar.extractfile(f"{_CIFAR_DIR}/{batch}")
                    blob = member.read() if member else b""
                try:
                    entry = _ArrayUnpickler(io.BytesIO(blob), encoding="bytes").load()
                except Exception as exc:  # noqa: BLE001 - what damaged bytes make it raise (a codec name: LookupError)
                    raise _corrupt(source, f"{batch}: {type(exc).__name__}: {exc}".replace("\n", " ")) from None
                data = entry[b"data"]
                if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
                    raise ValueError(f"data of {getattr(data, 'dtype', type(data).__name__)}, not uint8")
                # As stored, not cast to int64: a cast would read a label 1.5 as class 1 and "7" as class 7.
                batch_labels = np.asarray(entry[b"labels"])
                if data.ndim != 2 or not len(data) or data.shape[1] != 3072 or batch_labels.shape != data.shape[:1]:
                    raise ValueError(f"data {data.shape} and {batch_labels.size} labels, not (n, 3072) and n labels")
                if batch_labels.dtype.kind not in "biu":  # integers (or booleans); not floats, strings, objects
                    raise ValueError(f"labels of {batch_labels.dtype}, not integers")
                if batch_labels.min() < 0 or batch_labels.max() > 9:
                    raise ValueError(f"labels {batch_labels.min()}..{batch_labels.max()}, not in 0..9")
                images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))  # rows are R, G, B planes
                labels.append(torch.from_numpy(batch_labels.astype(np.int64)))
    except (OSError, EOFError, KeyError, ValueError, TypeError, IndexError, OverflowError, pickle.UnpicklingError,
            tarfile.TarError, zlib.error) as exc:
        where = f"{batch}: " if batch is not None else ""
        raise _corrupt(source, f"{where}{type(exc).__name__}: {exc}".replace("\n", " ")) from None
    return torch.cat(images), torch.cat(labels)


def load_split(name: str, split: str, root: str | None = None) -> tuple[Tensor, Tensor]:
    """One split of `name` ("mnist", "fashion_mnist", "cifar10"): uint8 images (N, C, H, W) and
    int64 labels (N,), on the CPU. Fetches missing files into `data_root(root)`."""
    return _read(name, split, _sources(name, split, root))


# The labels conditional remedies get from a stacked dataset: the triple's mode id, or its first digit.
Classes = Literal["mode", "first"]


def mode_ids(labels: Tensor) -> Tensor:
    """One mode id per sample: the label, or 100*l0 + 10*l1 + l2 for a stacked triple (n, 3)."""
    if labels.ndim == 1:
        return labels
    return labels[:, 0] * 100 + labels[:, 1] * 10 + labels[:, 2]


class ImageDataset:
    """A real image dataset held on `device` as uint8, sampled at random indices there.

    It offers `ganlab.data.protocol.ImageData` (what the image evaluator reads) and `LabelledData`
    (`n_classes`, `sample_with_classes`, for conditional remedies).
    Files are resolved (and fetched) at construction, so a missing file fails at start-up; the
    pixels are read on first use, so building every job of a sweep beforehand stays cheap.
    A stacked dataset (`stack_n` > 0) puts three base digits in the RGB channels, drawn from a
    fixed table of `stack_n` index triples: the base images plus the table are gathered at
    sample time, far smaller than the materialized stack (128k x 3 x 28 x 28 = 301 MB).
    """

    evaluator = "image"  # the protocol that measures it (ganlab.evaluation.make_evaluator)

    def __init__(self, base: str, split: str = "train", root: str | None = None, device: str | torch.device = "cpu",
                 pad_to_32: bool = False, stack_n: int = 0, stack_seed: int = 0, classes: Classes = "mode"):
        if stack_n < 0 or (stack_n and split != "train"):
            raise ConfigError(f"a stacked dataset needs n >= 1 triples from the train split, got n={stack_n}")
        if pad_to_32 and base == "cifar10":
            raise ConfigError("pad_to_32 is for 28x28 data; CIFAR-10 is already 32x32")
        self._sources = _sources(base, split, root)
        self.base, self.split, self.root, self.device = base, split, root, torch.device(device)
        self.stacked, self.pad_to_32 = stack_n > 0, pad_to_32
        self.stack_n, self.stack_seed = stack_n, stack_seed
        if classes not in ("mode", "first"):
            raise ConfigError(f"classes={classes!r}: choose mode (a stacked triple's mode id, 1,000 classes) or first "
                              "(the first channel's digit, 10 classes)")
        if classes == "first" and not self.stacked:
            raise ConfigError("classes=first labels a stacked triple by its first channel; this dataset is not stacked")
        self.classes = classes
        self.name = ("stacked_" if self.stacked else "") + base
        side = 32 if pad_to_32 or base == "cifar10" else 28
        self.shape = (3 if self.stacked or base == "cifar10" else 1, side, side)
        self.n_modes = 1000 if self.stacked else 10
        # The project's mode classifier is trained on MNIST-like digits (metrics/classifier_training.py);
        # Inception's features are meant for photographs.
        self.mode_classifier = None if base == "cifar10" else base
        self.natural_images = base == "cifar10"
        self._images: Tensor | None = None  # (N, C, H, W), or (N, H, W) base digits when stacked
        self._labels: Tensor | None = None
        self._table: Tensor | None = None  # (stack_n, 3) indices into the base set
        self._held_out: Tensor | bool | None = None  # the test split's images (False: not here)

    def _load(self) -> tuple[Tensor, Tensor]:
        if self._images is None:
            images, labels = _read(self.base, self.split, self._sources)
            if self.pad_to_32:
                images = F.pad(images, (2, 2, 2, 2))
            if self.stacked:
                images = images[:, 0]
                # Generated on the CPU with its own generator: the same triples on every machine and device.
                cpu = torch.Generator().manual_seed(self.stack_seed)
                self._table = torch.randint(0, len(images), (self.stack_n, 3), generator=cpu).to(self.device)
            self._images, self._labels = images.to(self.device), labels.to(self.device)
        return self._images, self._labels

    def identity(self) -> dict:
        """What decides the images sample_unique draws: the real reference statistics' cache key."""
        return {"dataset": self.name, "split": self.split, "shape": list(self.shape),
                "stack": [self.stack_n, self.stack_seed]}

    def __len__(self) -> int:
        return self.stack_n if self.stacked else len(self._load()[0])

    def sample_with_labels(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n images in [-1, 1], float32 (n, C, H, W), and their labels: (n,), or (n, 3) when stacked."""
        images, labels = self._load()
        idx = torch.randint(0, len(self), (n,), device=self.device, generator=generator)
        if self.stacked:
            idx = self._table[idx]  # (n, 3): gathering (n, 3, H, W) puts the three digits in the channels
        return images[idx].float().div_(127.5).sub_(1.0), labels[idx]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.sample_with_labels(n, generator)[0]

    @property
    def n_classes(self) -> int:
        """Labels for conditional remedies: the class, or for a stacked triple its mode id (1,000) or,
        with classes=first, its first channel's digit (10: each class then holds 100 of the modes, so
        a conditional G can collapse within a class while following its labels)."""
        return 10 if self.classes == "first" else self.n_modes

    def sample_with_classes(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n images and one class index each in [0, n_classes)."""
        images, labels = self.sample_with_labels(n, generator)
        return images, (labels[:, 0] if self.classes == "first" else mode_ids(labels))

    def unique_indices(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n indices drawn without replacement: each item once while n <= len (FID's real reference
        uses every training image once; 50k draws with replacement from 50k hold only ~63 % of
        them), then further passes of fresh permutations."""
        passes = -(-n // len(self))
        return torch.cat([torch.randperm(len(self), generator=generator, device=self.device)
                          for _ in range(passes)])[:n]

    def sample_unique(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images in [-1, 1] at `unique_indices` (stacked: n distinct triples of the table)."""
        images, _ = self._load()
        idx = self.unique_indices(n, generator)
        if self.stacked:
            idx = self._table[idx]
        return images[idx].float().div_(127.5).sub_(1.0)

    def held_out_sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, str]:
        """n real images in [-1, 1] from the scored half of the test split (metrics/matched_confusion.split_test):
        images the mode classifier did not train on, and not those its confusion matrices were measured on (a
        stacked sample: three independent test images, so its triples are uniform over the 1,000 as the stack's
        are in expectation); the ceiling rows. Returns them and the split they came from: the training split
        when the test split's files are not here (the run's log says so)."""
        from ganlab.metrics.matched_confusion import split_test

        if self._held_out is None:
            try:
                if self.split == "test":
                    images, labels = self._load()
                    images = images[:, None] if self.stacked else images  # (N, C, H, W) either way
                else:
                    images, labels = _read(self.base, "test", _sources(self.base, "test", self.root))
                    if self.pad_to_32:
                        images = F.pad(images, (2, 2, 2, 2))
            except GanlabError as exc:
                log.warning("the ceiling rows come from the %s split: %s", self.split, exc)
                self._held_out = False
            else:
                scored = split_test(labels)[0]
                if labels[scored.to(labels.device)].unique().numel() < labels.unique().numel():
                    # a class with one image has none in the scored half (test fixtures): all of them, then
                    log.warning("the %s test split holds one image of some class: the ceiling rows use all of it, "
                                "the images the confusion matrices were measured on included", self.base)
                    scored = torch.arange(len(labels))
                self._held_out = images[scored.to(images.device)].to(self.device)
        if self._held_out is False:
            return self.sample(n, generator), self.split
        images = self._held_out
        shape = (n, 3) if self.stacked else (n,)
        idx = torch.randint(0, len(images), shape, device=self.device, generator=generator)
        picked = images[idx][:, :, 0] if self.stacked else images[idx]  # stacked: (n, 3, H, W), a digit a channel
        return picked.float().div_(127.5).sub_(1.0), "test"

    mode_ids = staticmethod(mode_ids)

    def memory_bytes(self) -> int:
        """Device memory held now (0 until first use): images, labels and the stacked table."""
        held = (self._images, self._labels, self._table)
        return sum(t.numel() * t.element_size() for t in held if t is not None)


def _mnist_like(base, root, split, pad_to_32, device) -> ImageDataset:
    return ImageDataset(base, split, root, device, pad_to_32=pad_to_32)


def _stacked(base, root, n, seed, pad_to_32, device, classes="mode") -> ImageDataset:
    if n < 1:
        raise ConfigError(f"n={n}: a stacked dataset needs n >= 1 triples (128000 in the usual protocol)")
    return ImageDataset(base, "train", root, device, pad_to_32=pad_to_32, stack_n=n, stack_seed=seed, classes=classes)


# Builders for Hydra `_target_`s (ganlab/configs/dataset/*.yaml). `root: null` means $GANLAB_DATA or ~/.cache/ganlab/data.
def mnist(root: str | None = None, split: str = "train", pad_to_32: bool = False, device="cpu") -> ImageDataset:
    """MNIST digits, 1x28x28 (1x32x32 zero-padded with pad_to_32), 10 modes."""
    return _mnist_like("mnist", root, split, pad_to_32, device)


def fashion_mnist(root: str | None = None, split: str = "train", pad_to_32: bool = False,
                  device="cpu") -> ImageDataset:
    """Fashion-MNIST, 1x28x28 (1x32x32 with pad_to_32), 10 modes; Debian's copy is used if installed."""
    return _mnist_like("fashion_mnist", root, split, pad_to_32, device)


def cifar10(root: str | None = None, split: str = "train", device="cpu") -> ImageDataset:
    """CIFAR-10, 3x32x32, 10 classes."""
    return ImageDataset("cifar10", split, root, device)


def stacked_mnist(root: str | None = None, n: int = 128000, seed: int = 0, pad_to_32: bool = False,
                  classes: Classes = "mode", device="cpu") -> ImageDataset:
    """Stacked MNIST: three MNIST training digits as the RGB channels, 3x28x28, 1,000 modes."""
    return _stacked("mnist", root, n, seed, pad_to_32, device, classes)


def stacked_fashion_mnist(root: str | None = None, n: int = 128000, seed: int = 0, pad_to_32: bool = False,
                          classes: Classes = "mode", device="cpu") -> ImageDataset:
    """Stacked Fashion-MNIST: the same construction over Fashion-MNIST, a 1,000-mode benchmark offline."""
    return _stacked("fashion_mnist", root, n, seed, pad_to_32, device, classes)
