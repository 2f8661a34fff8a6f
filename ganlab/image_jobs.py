"""The background part of an image evaluation: its pictures (no metric is left to compute here).

Imports no torch, so the evaluation worker (ganlab.offload) starts quickly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ganlab.offload import EvalResult


@dataclass
class ImageEvalJob:
    step: int
    grid: np.ndarray               # G at the fixed grid codes, uint8 N x C x H x W
    metrics: dict                  # for picture titles
    mode_counts: list[int] | None  # samples per class (10) or per stacked triple (1000); None without a classifier
    n_modes: int
    stacked: bool
    history_steps: list[int]
    history_counts: list[list[int]]
    source: np.ndarray | None = None  # which generator made each grid sample (MAD-GAN)

    def complete(self) -> EvalResult:
        from ganlab import pictures

        m = self.metrics
        title = f"step {self.step} (fixed z)"
        if "modes_captured" in m:
            title += f": {m['modes_captured']}/{self.n_modes} modes, KL {m['reverse_kl']:.2f}"
        images = {"samples": pictures.image_grid_picture(self.grid, title)}
        if self.source is not None:  # one row per generator: which kinds of image each one makes
            order = np.argsort(self.source, kind="stable")
            per_row = int(np.bincount(self.source).max())
            rows = [self.grid[order][self.source[order] == g] for g in np.unique(self.source)]
            padded = [np.concatenate([r, np.full((per_row - len(r), *r.shape[1:]), 255, np.uint8)]) for r in rows]
            images["samples_by_generator"] = pictures.image_grid_picture(
                np.concatenate(padded), f"samples by generator (rows), step {self.step}", columns=per_row)
        if self.mode_counts is not None:
            counts = np.asarray(self.mode_counts)
            if self.stacked:
                images["mode_occupancy"] = pictures.occupancy_picture(counts, f"samples per triple, step {self.step}")
            else:
                images["class_histogram"] = pictures.class_histogram_picture(counts, f"classes, step {self.step}")
            if self.history_steps:
                images["mode_histogram"] = pictures.mode_history_picture(self.history_steps, self.history_counts,
                                                                         "mode histogram over training")
        return EvalResult(self.step, {}, images)
