"""Pictures for TensorBoard, rendered to PNG bytes with matplotlib (Agg, no display).

Every picture of a run uses the same fixed axes, so a TensorBoard image slider shows motion,
not rescaling.

The 2-D pictures drawn at every evaluation (samples, D's heatmap, the mode histogram) keep their
figure between calls (`_Canvas`) and only replace the data: building a figure, its axes, legend and
colour bar and laying them out was about half of their cost, and the evaluation worker draws them on
the core beside the one that trains (docs/benchmarks.md, "Loop overhead").
"""

from __future__ import annotations

import io
from typing import ClassVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

_DPI = 80


def _to_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    plt.close(fig)
    return buffer.getvalue()


class _Canvas:
    """A figure kept for the pictures of one kind and one fixed frame (mode centres, axis limits):
    `get` builds it on first use; later calls update its artists and render it again."""

    _kept: ClassVar[dict[tuple, _Canvas]] = {}
    _MAX_KEPT = 8  # a process that draws for many runs (the tests, `ganlab eval`) keeps the latest only

    def __init__(self, fig, artists: dict):
        self.fig, self.artists = fig, artists

    @classmethod
    def get(cls, key: tuple, build) -> _Canvas:
        canvas = cls._kept.pop(key, None) or cls(*build())
        cls._kept[key] = canvas  # most recently used last
        while len(cls._kept) > cls._MAX_KEPT:
            plt.close(cls._kept.pop(next(iter(cls._kept))).fig)
        return canvas

    def png(self) -> bytes:
        # One draw and a fast zlib level: savefig drew the figure twice and compressed at level 6,
        # together about half of a picture's time. The PNGs grow a little (D's heatmap: 64 kB, not 51).
        self.fig.canvas.draw()
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(self.fig.canvas.buffer_rgba())[..., :3]).save(buffer, format="png", compress_level=1)
        return buffer.getvalue()


def _frame_key(kind: str, centers: np.ndarray, limits) -> tuple:
    return kind, tuple(float(v) for v in limits), np.asarray(centers, np.float64).tobytes()


def samples_picture(fake: np.ndarray, real: np.ndarray, centers: np.ndarray, limits, title: str) -> bytes:
    """Generated samples (blue) over data samples (grey), mode centres as crosses."""

    def build():
        fig, ax = plt.subplots(figsize=(4, 4), dpi=_DPI)
        data = ax.scatter(real[:, 0], real[:, 1], s=2, c="0.6", alpha=0.5, linewidths=0, label="data")
        generated = ax.scatter(fake[:, 0], fake[:, 1], s=2, c="tab:blue", alpha=0.5, linewidths=0, label="generated")
        ax.scatter(centers[:, 0], centers[:, 1], marker="x", s=20, c="black", linewidths=0.8)
        ax.set(xlim=limits, ylim=limits, aspect="equal", title=title)
        ax.legend(loc="upper right", fontsize=7, markerscale=4)
        fig.tight_layout()
        return fig, {"ax": ax, "data": data, "generated": generated}

    canvas = _Canvas.get(_frame_key("samples", centers, limits), build)
    art = canvas.artists
    art["data"].set_offsets(real[:, :2])
    art["generated"].set_offsets(fake[:, :2])
    art["ax"].set_title(title)
    return canvas.png()


def sources_picture(fake: np.ndarray, source: np.ndarray, centers: np.ndarray, limits, title: str) -> bytes:
    """Generated samples coloured by the generator that made them (MAD-GAN): which modes each owns."""
    fig, ax = plt.subplots(figsize=(4, 4), dpi=_DPI)
    colors = plt.get_cmap("tab10")
    for i in np.unique(source):
        mine = fake[source == i]
        ax.scatter(mine[:, 0], mine[:, 1], s=2, color=colors(int(i) % 10), alpha=0.6, linewidths=0, label=f"G{i}")
    ax.scatter(centers[:, 0], centers[:, 1], marker="x", s=20, c="black", linewidths=0.8)
    ax.set(xlim=limits, ylim=limits, aspect="equal", title=title)
    ax.legend(loc="upper right", fontsize=7, markerscale=4)
    fig.tight_layout()
    return _to_png(fig)


def discriminator_picture(values: np.ndarray, fake: np.ndarray, centers: np.ndarray, limits,
                          title: str) -> bytes:
    """D's output over the plane (`values[i, j]` at y_i, x_j) as a heatmap, with the generated samples."""

    def build():
        fig, ax = plt.subplots(figsize=(4.6, 4), dpi=_DPI)
        mesh = ax.imshow(values, origin="lower", extent=(*limits, *limits), cmap="RdBu_r", aspect="equal")
        fig.colorbar(mesh, ax=ax, fraction=0.046, pad=0.04, label="D(x)")
        generated = ax.scatter(fake[:, 0], fake[:, 1], s=1, c="black", alpha=0.4, linewidths=0)
        ax.scatter(centers[:, 0], centers[:, 1], marker="x", s=20, c="lime", linewidths=0.8)
        ax.set(xlim=limits, ylim=limits, title=title)
        fig.tight_layout()
        return fig, {"ax": ax, "mesh": mesh, "generated": generated}

    canvas = _Canvas.get(_frame_key("discriminator", centers, limits), build)
    art = canvas.artists
    art["mesh"].set_data(values)
    art["mesh"].autoscale()  # the colour scale (and its bar) spans this map's values, as a new figure's would
    art["generated"].set_offsets(fake[:, :2])
    art["ax"].set_title(title)
    return canvas.png()


def mode_history_picture(steps: list[int], counts: list[list[int]], title: str) -> bytes:
    """Fraction of samples nearest to each mode (rows) at each evaluation (columns).

    A collapsed run shows one bright cell per column; mode hopping shows the bright cell jumping.
    """
    matrix = np.asarray(counts, dtype=np.float64).T
    matrix /= np.maximum(matrix.sum(axis=0, keepdims=True), 1)
    n_modes = matrix.shape[0]

    def build():
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=_DPI)
        mesh = ax.imshow(matrix, origin="lower", aspect="auto", cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        fig.colorbar(mesh, ax=ax, pad=0.02, label="fraction of samples")
        ax.set_yticks(range(0, n_modes, max(1, n_modes // 8)))
        ax.set(xlabel="step", ylabel="mode", title=title)
        ax.set_xticks([0], ["0"], fontsize=7)  # a placeholder step label, so the layout leaves room for them
        fig.tight_layout()
        return fig, {"ax": ax, "mesh": mesh}

    canvas = _Canvas.get(("mode_history", n_modes), build)
    ax, mesh = canvas.artists["ax"], canvas.artists["mesh"]
    mesh.set_data(matrix)  # one more column per evaluation: the extent and the step labels follow
    mesh.set_extent((-0.5, len(steps) - 0.5, -0.5, n_modes - 0.5))
    shown = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 8)).round().astype(int))
    ax.set_xticks(shown, [str(steps[i]) for i in shown], fontsize=7)
    ax.set_title(title)
    return canvas.png()


def tile(images: np.ndarray, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """uint8 images N x C x H x W -> one H' x W' x C mosaic, `columns` per row (default: square-ish)."""
    n, c, h, w = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    canvas = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, k = divmod(i, columns)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + k * (w + pad):pad + k * (w + pad) + w] = image.transpose(1, 2, 0)
    return canvas


def image_grid_picture(images: np.ndarray, title: str, columns: int | None = None) -> bytes:
    """A sample grid (uint8 N x C x H x W), drawn at twice the pixel size so digits stay legible."""
    mosaic = tile(images, columns)
    height, width = mosaic.shape[:2]
    fig, ax = plt.subplots(figsize=(2 * width / _DPI, 2 * height / _DPI + 0.3), dpi=_DPI)
    ax.imshow(mosaic[..., 0] if mosaic.shape[2] == 1 else mosaic, cmap="gray", vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    fig.tight_layout(pad=0.2)
    return _to_png(fig)


def occupancy_picture(counts: np.ndarray, title: str) -> bytes:
    """Stacked data's 1,000 modes as 10 panels (first digit) of 10 x 10 cells (second x third digit),
    each cell the number of samples of that triple, on a log scale: empty cells (missed modes) are
    black, a collapsed G lights a few cells."""
    cube = np.asarray(counts, dtype=np.float64).reshape(10, 10, 10)
    fig, axes = plt.subplots(2, 5, figsize=(7.5, 3.6), dpi=_DPI)
    vmax = max(cube.max(), 1.0)
    norm = matplotlib.colors.LogNorm(vmin=1, vmax=max(vmax, 2.0))
    for first, ax in enumerate(axes.flat):
        shown = np.ma.masked_equal(cube[first], 0)
        cmap = plt.get_cmap("viridis").with_extremes(bad="black")
        mesh = ax.imshow(shown, cmap=cmap, norm=norm, origin="upper", interpolation="nearest")
        ax.set_title(f"first = {first}", fontsize=7)
        ax.set_xticks([0, 9], ["0", "9"], fontsize=6)
        ax.set_yticks([0, 9], ["0", "9"], fontsize=6)
    fig.supxlabel("third label", fontsize=7)
    fig.supylabel("second label", fontsize=7)
    fig.colorbar(mesh, ax=axes.ravel().tolist(), fraction=0.02, pad=0.02, label="samples (black: none)")
    fig.suptitle(title, fontsize=8)
    return _to_png(fig)


def class_histogram_picture(counts: np.ndarray, title: str) -> bytes:
    """The share of generated samples per class against the uniform share of the data."""
    counts = np.asarray(counts, dtype=np.float64)
    share = counts / max(counts.sum(), 1)
    fig, ax = plt.subplots(figsize=(4.5, 2.8), dpi=_DPI)
    ax.bar(np.arange(len(share)), share, color="tab:blue", label="generated")
    ax.axhline(1 / len(share), color="black", linestyle="--", linewidth=1, label="data (uniform)")
    ax.set(xlabel="class (mode classifier)", ylabel="share of samples", title=title, xticks=range(len(share)))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _to_png(fig)
