"""Data of one's own, read from files (README, "Your own data"): `points` (an .npz or .npy of points, optional mode
labels), `images_npz` (an .npz or .npy of images, optional labels) and `image_folder` (a folder of PNG files, one
subfolder per class when labelled). A Gaussian mixture of one's own is `dataset=mixture` (ganlab/data/toy.py).

Each offers what its evaluator reads (ganlab/data/protocol.py): `points` the 2-D protocol's (in any dimension;
mode metrics only where the modes are known, from labels or given centres), the images the image protocol's
(FID/KID/PRDC on a mode classifier's features, or pixels' sliced W1; modes counted only with a mode classifier).
An .npz or .npy file is read when the dataset is built, so a bad file is one line before anything trains (a file
read once is kept for the process: a sweep builds every job's dataset); a folder is listed then, and its PNG files
are read when it is first sampled.
"""

from __future__ import annotations

import functools
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ganlab.data.pngs import first_image_shape, png_files, read_png_folder
from ganlab.data.toy import _numbers
from ganlab.errors import ConfigError, GanlabError

LABELS = "labels"  # the optional array of integer labels beside the data in an .npz


# --- reading a file of arrays -------------------------------------------------------------------------------

def _existing(value, key: str, kind: str) -> Path:
    if value in (None, ""):
        raise ConfigError(f"{key} is required: the path of {kind}")
    path = Path(str(value)).expanduser()
    if kind.startswith("a folder"):
        if not path.is_dir():
            raise ConfigError(f"{key}={value}: {'not a folder' if path.exists() else 'no such folder'}; give {kind}")
    elif not path.is_file():
        raise ConfigError(f"{key}={value}: {'not a file' if path.exists() else 'no such file'}; give {kind}")
    return path.resolve()


def load_arrays(path: Path, names: tuple[str, ...], how: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The first array of `names` in the .npz at `path` (or the bare array of an .npy) and its `labels`, if any;
    GanlabError in one line naming the file and `how` to write one. `ganlab eval --samples FILE` reads with it too."""
    try:
        with open(path, "rb") as handle:
            loaded = np.load(handle, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                return loaded, None
            with loaded:
                key = next((n for n in names if n in loaded.files), None)
                if key is None:
                    raise GanlabError(f"{path} holds {', '.join(loaded.files) or 'no arrays'}, no array named "
                                      f"{' or '.join(names)}; write it with {how}")
                return loaded[key], (loaded[LABELS] if LABELS in loaded.files else None)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        # numpy calls any other file "pickled data": its advice to unpickle an unknown file is not ours.
        why = "neither" if "pickle" in str(exc) else str(exc).splitlines()[0]
        raise GanlabError(f"cannot read {path} as a .npz or .npy file ({why}); write it with {how}") from None


@functools.lru_cache(maxsize=8)
def _read_arrays(path: Path, names: tuple[str, ...], _stamp: tuple) -> tuple[np.ndarray, np.ndarray | None]:
    return load_arrays(path, names, f"numpy.savez(PATH, {names[0]}=..., labels=...) or numpy.save(PATH, array)")


def read_arrays(path: Path, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    """The first array of `names` in the .npz at `path` (or the bare array of an .npy) and its `labels`, if any."""
    stat = path.stat()
    return _read_arrays(path, names, (stat.st_mtime_ns, stat.st_size))


def check_labels(labels: np.ndarray | None, n: int, where: Path) -> tuple[np.ndarray, int] | None:
    """Integer labels, one per item, as indices 0..k-1 (in the order of their values) and k; None without."""
    if labels is None:
        return None
    if labels.ndim != 1 or len(labels) != n:
        raise GanlabError(f"{where}: labels of shape {labels.shape}; give one integer label per item, shape ({n},)")
    if labels.dtype.kind not in "biu":
        raise GanlabError(f"{where}: labels of dtype {labels.dtype}; give integers")
    values, index = np.unique(labels, return_inverse=True)
    return index.astype(np.int64), len(values)


# --- what both kinds share: random rows, and their labels where they have them --------------------------------

class _Rows:
    """Data held as rows on `device`, drawn at random indices (`sample`), with the labels conditional remedies read
    (`n_classes`, `sample_with_classes`) only where the data has them: without, both raise AttributeError, so
    hasattr is False and a conditional remedy is refused at build (ganlab/data/protocol.py)."""

    device: torch.device
    _labels: Tensor | None  # one class index per row, where known (loaded with the rows)

    def _size(self) -> int:
        raise NotImplementedError

    def _rows(self, idx: Tensor) -> Tensor:
        raise NotImplementedError

    def _classes(self) -> int | None:
        """How many classes the labels name; None without labels."""
        raise NotImplementedError

    def _index(self, n: int, generator: torch.Generator | None) -> Tensor:
        return torch.randint(0, self._size(), (n,), device=self.device, generator=generator)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self._rows(self._index(n, generator))

    @property
    def n_classes(self) -> int:
        k = self._classes()
        if k is None:
            raise AttributeError(f"n_classes: this {type(self).__name__} has no labels")
        return k

    def sample_with_classes(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        if self._classes() is None:
            raise AttributeError(f"sample_with_classes: this {type(self).__name__} has no labels")
        idx = self._index(n, generator)
        return self._rows(idx), self._labels[idx]


# --- dataset=points ------------------------------------------------------------------------------------------

class PointCloud(_Rows):
    """Points of one's own (n, d), sampled at random rows. The 2-D protocol measures it (ganlab.data.protocol.
    ToyData): W1/W2 and the MMD always; the mode metrics against `centers` and `std` where the modes are known
    (labels in the file: each class's mean, and the points' spread around their class mean; or centres given),
    with the reverse KL against the classes' shares of the points. Without, `centers` and `n_modes` are None:
    no mode metrics."""

    evaluator = "toy"

    def __init__(self, points: np.ndarray, labels: np.ndarray | None, centers: np.ndarray | None, std: float | None,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.shape = (points.shape[1],)
        self._points = torch.from_numpy(points).to(self.device)
        self._labels = None if labels is None else torch.from_numpy(labels).to(self.device)
        self.centers: Tensor | None = None if centers is None else torch.tensor(centers, dtype=torch.float32,
                                                                                device=self.device)
        self.std = std
        self.weights: Tensor | None = None
        if labels is not None:
            shares = np.bincount(labels, minlength=len(centers)) / len(labels)
            if not np.allclose(shares, shares[0]):  # the reverse KL against the data's own shares of the modes
                self.weights = torch.tensor(shares, dtype=torch.float32, device=self.device)
        lows, highs = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
        extent = float(np.abs(np.concatenate([lows, highs])).max())
        self._limits = (-1.05 * extent - 0.5, 1.05 * extent + 0.5)
        mean = points.astype(np.float64).mean(axis=0)
        cov = np.atleast_2d(np.cov(points.astype(np.float64), rowvar=False))
        self._mean, self._cov = mean, cov + 1e-9 * max(float(np.trace(cov)), 1.0) * np.eye(len(mean))

    @property
    def n_modes(self) -> int | None:
        return None if self.centers is None else self.centers.shape[0]

    def _size(self) -> int:
        return len(self._points)

    def _rows(self, idx: Tensor) -> Tensor:
        return self._points[idx]

    def _classes(self) -> int | None:
        """The modes, where known (labels in the file, or given centres): a conditional remedy's classes."""
        return None if self._labels is None else self.n_modes

    def gaussian_fit(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples of the Gaussian with the points' mean and covariance."""
        mean = torch.tensor(self._mean, dtype=torch.float64, device=self.device)
        chol = torch.linalg.cholesky(torch.tensor(self._cov, dtype=torch.float64, device=self.device))
        noise = torch.randn(n, *self.shape, device=self.device, generator=generator, dtype=torch.float64)
        return (mean + noise @ chol.T).float()

    def plot_limits(self) -> tuple[float, float]:
        return self._limits


def points(file: str | None = None, centers: list | None = None, std: float | None = None,
           device="cpu") -> PointCloud:
    """`file`: an .npz with `points` (n, d) (or `x`) and optionally integer `labels` (n,), the mode of each point;
    or an .npy of the points. `centers`: the modes' centres where the file has no labels (each point's mode is
    then its nearest centre). `std`: the modes' std for the mode metrics (default: the RMS per coordinate of the
    points' distances to their mode's centre)."""
    path = _existing(file, "file", "an .npz (points, labels) or .npy file of points")
    array, labels = read_arrays(path, ("points", "x"))
    if array.ndim != 2 or len(array) < 2 or array.shape[1] < 1:
        raise GanlabError(f"{path}: points of shape {array.shape}; give (n, d) with n >= 2")
    if array.dtype.kind not in "fiu":
        raise GanlabError(f"{path}: points of dtype {array.dtype}; give numbers")
    pts = np.asarray(array, np.float32)
    if not np.isfinite(pts).all():
        raise GanlabError(f"{path}: {int((~np.isfinite(pts)).sum())} values are NaN or infinite")
    checked = check_labels(labels, len(pts), path)
    if centers is not None:
        if checked is not None:
            raise ConfigError(f"centers: {path} has labels, which give the modes; leave centers out")
        c = _numbers(centers, "centers", 2).numpy()
        if c.shape[1] != pts.shape[1]:
            raise ConfigError(f"centers: points of {c.shape[1]} coordinates; the file's have {pts.shape[1]}")
        nearest = ((pts[:, None, :] - c[None].astype(np.float32)) ** 2).sum(-1).argmin(1)
        empty = np.flatnonzero(np.bincount(nearest, minlength=len(c)) == 0)
        if len(empty):  # a mode the data never visits: its share 0 makes the reverse KL NaN at every evaluation
            raise ConfigError(f"centers: no point of {path} is nearest to centre {empty[0]} "
                              f"({c[empty[0]].tolist()}); give one centre per mode the points have")
        checked = (nearest.astype(np.int64), len(c))
    else:
        c = None
    if checked is None:
        if std is not None:
            raise ConfigError("std: these points have no modes (no labels in the file, no centers); leave it out")
        return PointCloud(pts, None, None, None, device)
    index, k = checked
    if c is None:  # each class's mean
        c = np.stack([pts[index == j].astype(np.float64).mean(axis=0) for j in range(k)])
    if std is None:
        residual = pts.astype(np.float64) - c[index]
        std = float(np.sqrt((residual ** 2).mean()))
        if std == 0:
            raise ConfigError(f"std: every point of {path} sits on its mode's centre, so no spread can be measured; "
                              "give dataset.std")
    elif not std > 0:
        raise ConfigError(f"std must be > 0, got {std}")
    return PointCloud(pts, index, c, float(std), device)


# --- dataset=images_npz, dataset=image_folder ---------------------------------------------------------------

class UserImages(_Rows):
    """Images of one's own, held as uint8 and sampled at random indices (ganlab.data.protocol.ImageData). No
    held-out split: the ceiling rows are drawn from the same images (their split: "all"). Measured by a mode
    classifier's features and counts where `mode_classifier` names one (MNIST-like 1x28x28 or 1x32x32 images),
    else by the pixels' sliced W1 (and Inception FID/IS where metrics.inception asks for them)."""

    evaluator = "image"
    split = "all"
    stacked = False

    def __init__(self, name: str, source: Path, load, shape: tuple[int, int, int], n_labels: int | None,
                 mode_classifier: str | None, natural_images: bool, root: str | None,
                 device: str | torch.device = "cpu"):
        if mode_classifier is not None and shape not in ((1, 28, 28), (1, 32, 32)):
            raise ConfigError(f"mode_classifier={mode_classifier}: it labels 1x28x28 (or 1x32x32) images; these are "
                              f"{'x'.join(map(str, shape))}: leave mode_classifier out (null)")
        self.name, self.source, self._load_arrays = name, source, load
        self.shape, self.root, self.device = shape, root, torch.device(device)
        self.mode_classifier, self.natural_images = mode_classifier, bool(natural_images)
        self._n_labels = n_labels
        # the modes counted: the classifier's classes, else the data's labels (None: none known)
        self.n_modes = 10 if mode_classifier is not None else n_labels
        self._images: Tensor | None = None
        self._labels: Tensor | None = None
        self._hash: str | None = None

    def _load(self) -> Tensor:
        if self._images is None:
            images, labels = self._load_arrays()
            self._hash = hashlib.sha256(images.tobytes()).hexdigest()
            self._images = torch.from_numpy(images).to(self.device)
            self._labels = None if labels is None else torch.from_numpy(labels).to(self.device)
        return self._images

    def __len__(self) -> int:
        return len(self._load())

    def _size(self) -> int:
        return len(self)

    def _rows(self, idx: Tensor) -> Tensor:
        """The images at `idx` as floats in [-1, 1]."""
        return self._load()[idx].float().div_(127.5).sub_(1.0)

    def _classes(self) -> int | None:
        return self._n_labels

    def sample_unique(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images without replacement while n <= their number (then further passes of fresh permutations)."""
        passes = -(-n // len(self))
        idx = torch.cat([torch.randperm(len(self), generator=generator, device=self.device) for _ in range(passes)])
        return self._rows(idx[:n])

    def held_out_sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, str]:
        return self.sample(n, generator), self.split

    def identity(self) -> dict:
        self._load()
        return {"dataset": self.name, "source": str(self.source), "shape": list(self.shape), "sha256": self._hash}



def as_uint8_images(array: np.ndarray, where: Path) -> np.ndarray:
    """Images (n, C, H, W) as uint8: uint8 as they are, floats in [-1, 1] mapped to 0..255; GanlabError otherwise."""
    if array.ndim != 4 or len(array) < 1:
        raise GanlabError(f"{where}: images of shape {array.shape}; give (n, C, H, W), e.g. (n, 1, 28, 28)")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind != "f":
        raise GanlabError(f"{where}: images of dtype {array.dtype}; give uint8 (0..255) or floats in [-1, 1]")
    if not np.isfinite(array).all():
        raise GanlabError(f"{where}: {int((~np.isfinite(array)).sum())} values are NaN or infinite")
    low, high = float(array.min()), float(array.max())
    if low < -1.001 or high > 1.001:
        raise GanlabError(f"{where}: float images in [-1, 1], got values from {low:.4g} to {high:.4g}; rescale them "
                          "(x / 127.5 - 1 for 0..255) or save them as uint8")
    return np.round((np.clip(array, -1, 1) + 1) * 127.5).astype(np.uint8)


def images_npz(file: str | None = None, mode_classifier: str | None = None, natural_images: bool = False,
               root: str | None = None, device="cpu") -> UserImages:
    """`file`: an .npz with `images` (n, C, H, W) (or `x`), uint8 or floats in [-1, 1], and optionally integer
    `labels` (n,); or an .npy of the images. `mode_classifier`: mnist or fashion_mnist to count modes with
    ganlab's classifier (1x28x28 or 1x32x32 images); its training data is read from `root`."""
    path = _existing(file, "file", "an .npz (images, labels) or .npy file of images")
    array, labels = read_arrays(path, ("images", "x"))
    images = as_uint8_images(array, path)
    checked = check_labels(labels, len(images), path)
    arrays = (images, None if checked is None else checked[0])
    return UserImages(path.stem, path, lambda: arrays, tuple(images.shape[1:]),
                      None if checked is None else checked[1], mode_classifier, natural_images, root, device)


def image_folder(folder: str | None = None, mode_classifier: str | None = None, natural_images: bool = False,
                 root: str | None = None, device="cpu") -> UserImages:
    """`folder`: PNG files (8-bit greyscale or RGB, all of one size); or one subfolder of them per class, whose
    names, in sorted order, are the labels. Read when first sampled; the first file's header sets the shape."""
    path = _existing(folder, "folder", "a folder of PNG files (or of one subfolder of them per class)")
    top = png_files(path)
    classes = [] if top else sorted(p for p in path.iterdir() if p.is_dir() and png_files(p))
    if not top and not classes:
        from ganlab.data.pngs import describe_folder

        raise GanlabError(f"{path} holds no PNG files, nor subfolders of them ({describe_folder(path)})")
    per_class = [png_files(c) for c in classes]
    files = top or [f for found in per_class for f in found]
    shape = first_image_shape(files[0])
    labels = None if top else np.concatenate([np.full(len(found), i, np.int64) for i, found in enumerate(per_class)])

    def load():  # the first file set the size: another one's advice is about the folder, not the samples of a GAN
        fix = f"give the folder images of one size (its first, {files[0].name}, is {shape[2]}x{shape[1]})"
        return read_png_folder(path, shape, files, size_fix=fix), labels

    return UserImages(path.name, path, load, shape, None if top else len(classes), mode_classifier,
                      natural_images, root, device)
