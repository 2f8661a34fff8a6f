"""Images as PNG files: a folder of them read as one uint8 array (N, C, H, W), and such an array written as one
file per image. `ganlab sample RUN --out DIR` writes them, `ganlab eval --samples DIR` and `dataset=image_folder`
read them. Pillow (which matplotlib, a dependency, requires) encodes and decodes them.

What a file may hold: 8-bit greyscale (1 channel), RGB (3), or a palette image (read as RGB); an alpha channel
only when it is fully opaque; a greyscale image saved as RGB (R = G = B everywhere) is read as 1 channel where 1 is
expected. Anything else is refused in one line naming the file, never converted silently: 16-bit or float pixels,
transparency, another size or channel count than the dataset's.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ganlab.errors import GanlabError

SUFFIX = ".png"
WRITABLE_CHANNELS = (1, 3)  # greyscale, RGB: what the reader takes back


def _unreadable(path: Path, exc: Exception) -> GanlabError:
    return GanlabError(f"{path}: not a readable PNG file ({' '.join(str(exc).split()) or type(exc).__name__})")


def png_files(folder: Path) -> list[Path]:
    """The PNG files directly in `folder` (not in its subfolders), in name order."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == SUFFIX and p.is_file())


def describe_folder(folder: Path) -> str:
    """What a folder without PNG files holds instead, for the error line."""
    others = [p for p in folder.iterdir() if p.is_file()]
    if not others:
        subfolders = [p.name for p in folder.iterdir() if p.is_dir()]
        return f"it holds subfolders ({', '.join(sorted(subfolders)[:3])}...)" if subfolders else "it is empty"
    suffixes = sorted({p.suffix.lower() or "(no suffix)" for p in others})
    return f"it holds {len(others)} other file(s) ({', '.join(suffixes[:4])}); convert them to PNG"


# What a file of another size is told: samples scored against a dataset (`ganlab eval --samples DIR`); a folder that
# is the dataset (`dataset=image_folder`) says its own (its first file sets the size).
SAMPLES_SIZE_FIX = "resize the samples or choose the dataset they imitate"


def read_png(path: Path, shape: tuple[int, int, int], size_fix: str = SAMPLES_SIZE_FIX) -> np.ndarray:
    """One PNG file as uint8 (C, H, W) for images of `shape` (C, H, W); GanlabError naming the file otherwise
    (`size_fix`: the advice for a file of another size)."""
    from PIL import Image, UnidentifiedImageError

    channels, height, width = shape
    try:
        with Image.open(path) as image:
            image.load()
            mode, size = image.mode, image.size
            if mode == "P":  # a palette: its colours
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
                mode = image.mode
            elif mode == "1":
                image, mode = image.convert("L"), "L"
            pixels = np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:  # Pillow's errors of a damaged file
        raise _unreadable(path, exc) from None
    if mode not in ("L", "LA", "RGB", "RGBA"):
        raise GanlabError(f"{path}: a PNG of mode {mode} (16-bit or float pixels); save the images as 8-bit "
                          "greyscale or RGB")
    if (width, height) != size:
        raise GanlabError(f"{path} is {size[0]}x{size[1]} pixels; the dataset's images are {width}x{height}: "
                          f"{size_fix}")
    pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    if mode in ("LA", "RGBA"):
        if (pixels[:, :, -1] != 255).any():
            raise GanlabError(f"{path}: transparent pixels (an alpha channel below 255); save the images without "
                              "transparency")
        pixels = pixels[:, :, :-1]
    if pixels.shape[2] == 3 and channels == 1 and (pixels == pixels[:, :, :1]).all():
        pixels = pixels[:, :, :1]  # greyscale saved as RGB
    if pixels.shape[2] != channels:
        kind = {1: "greyscale", 3: "RGB"}.get(pixels.shape[2], f"{pixels.shape[2]}-channel")
        raise GanlabError(f"{path}: {kind} ({pixels.shape[2]} channel(s)); the dataset's images have {channels} "
                          f"channel(s)")
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def read_png_folder(folder: Path, shape: tuple[int, int, int], files: list[Path] | None = None,
                    size_fix: str = SAMPLES_SIZE_FIX) -> np.ndarray:
    """Every PNG file directly in `folder` (or `files`), in name order, as uint8 (N, C, H, W)."""
    files = png_files(folder) if files is None else files
    if not files:
        raise GanlabError(f"{folder} holds no PNG files ({describe_folder(folder)})")
    out = np.empty((len(files), *shape), np.uint8)
    for i, path in enumerate(files):
        out[i] = read_png(path, shape, size_fix)
    return out


def first_image_shape(path: Path) -> tuple[int, int, int]:
    """(C, H, W) of one PNG file, from its header (a palette image counts as RGB, an opaque alpha as none)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            mode, (width, height) = image.mode, image.size
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise _unreadable(path, exc) from None
    channels = {"1": 1, "L": 1, "LA": 1, "P": 3, "RGB": 3, "RGBA": 3}.get(mode)
    if channels is None:
        raise GanlabError(f"{path}: a PNG of mode {mode} (16-bit or float pixels); save the images as 8-bit "
                          "greyscale or RGB")
    return channels, height, width


def png_bytes(image: np.ndarray) -> bytes:
    """One uint8 (C, H, W) image as the bytes of a PNG file."""
    import io

    from PIL import Image

    c = image.shape[0]
    pixels = image[0] if c == 1 else image.transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="png")  # (H, W): L; (H, W, 3): RGB
    return buffer.getvalue()


def write_png_folder(images: np.ndarray, folder: Path, replace: bool = False) -> list[Path]:
    """uint8 (N, C, H, W) images as N PNG files 000000.png, 000001.png, ... in `folder`: written into a new
    folder beside it, which then takes its place (a reader never sees half of them). `replace`: the PNG files
    `folder` holds are deleted first (its other files are left as they are). Returns the files written."""
    if images.shape[1] not in WRITABLE_CHANNELS:
        raise GanlabError(f"images of {images.shape[1]} channels cannot be PNG files here (1 or 3); write a .npz file")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    digits = max(6, len(str(len(images) - 1)))
    partial = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".partial"))
    try:
        names = []
        for i, image in enumerate(images):
            name = f"{i:0{digits}d}{SUFFIX}"
            (partial / name).write_bytes(png_bytes(image))
            names.append(name)
        if folder.is_dir():
            if replace:
                for old in png_files(folder):
                    old.unlink()
            for name in names:
                os.replace(partial / name, folder / name)
            partial.rmdir()
        else:
            os.replace(partial, folder)
    finally:
        if partial.exists():
            for leftover in partial.iterdir():
                leftover.unlink()
            partial.rmdir()
    return [folder / name for name in names]
