"""The background part of an evaluation: what needs no device (exact W1/W2, the pictures), done
in the evaluation worker (ganlab/evaluation/worker.py) from a job the evaluator hands it.

Imports no torch, so the worker starts quickly.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass
class EvalJob:
    step: int
    fake: np.ndarray            # generated samples, n x 2
    real: np.ndarray            # data samples, n x 2
    d_grid: np.ndarray | None   # D's output on a square grid over `limits` (2-D data only)
    centers: np.ndarray
    limits: tuple[float, float]
    metrics: dict               # the metrics already computed on the device (for picture titles)
    history_steps: list[int]    # mode histogram so far, for the over-time picture
    history_counts: list[list[int]]
    w_samples: int
    mmd_sigma: float            # the run's fixed MMD bandwidth (ToyEvaluator.mmd_sigma)
    source: np.ndarray | None = None  # which generator made each sample, for a picture by generator
    # The run's last evaluation: its training process only waits for it, so it may use a second core.
    last: bool = False

    def complete(self) -> EvalResult:
        return _complete_toy(self)

    def pictures(self) -> dict[str, bytes]:
        """The pictures alone (`ganlab eval --samples FILE --tensorboard DIR`: the metrics are computed already)."""
        return _toy_pictures(self)

    def samples_picture(self, who: str = "") -> bytes:
        """The generated samples over the data's, titled `who` (a name and a comma, or nothing: G's own) and the step."""
        from ganlab import pictures  # matplotlib: ~1 s to load, paid by evaluations only

        m, k = self.metrics, len(self.centers)
        title = f"{who}step {self.step}" + (f": {m['modes_captured']}/{k} modes, HQ {m['high_quality_pct']:.0f}%"
                                           if "modes_captured" in m else "")
        # Points of any dimension: the pictures show the first two coordinates (1-D data on the x axis).
        return pictures.samples_picture(_plane(self.fake), _plane(self.real), _plane(self.centers), self.limits, title)


@dataclass
class EvalResult:
    step: int
    scalars: dict[str, float]
    images: dict[str, bytes]     # PNG
    references: dict[str, dict] | None = None  # a ReferenceJob's: {row name: offline metrics}


@dataclass
class ReferenceJob:
    """The offline metrics (exact W1/W2, MMD) of a fresh run's reference rows, done by the worker
    while training starts: inline they were most of the default run's start-up (about 1 s of
    optimal transport and kernels on one core)."""

    rows: dict[str, tuple[np.ndarray, np.ndarray]]  # row name -> (its samples, the real set)
    w_samples: int
    mmd_sigma: float  # the run's, as its evaluations': the rows are a scale for their MMD

    def complete(self) -> EvalResult:
        return EvalResult(0, {}, {}, references={name: offline_toy_metrics(x, real, self.w_samples, self.mmd_sigma)
                                                 for name, (x, real) in self.rows.items()})


def offline_toy_metrics(fake: np.ndarray, real: np.ndarray, w_samples: int, mmd_sigma: float,
                        parallel: bool = False) -> dict:
    """The 2-D metrics computed off the device: exact W1/W2 on the first `w_samples` points per side,
    and the Gaussian-kernel MMD (metrics/mmd.py) at the run's fixed bandwidth `mmd_sigma`. The worker
    computes them for the loop, the evaluator for `ganlab eval` and the reference rows. parallel: W1
    and W2 on two cores at once."""
    # Imported here: POT and scipy take a while to load, which every run start would pay.
    from ganlab.metrics.mmd import mmd_metrics
    from ganlab.metrics.wasserstein import empirical_wasserstein

    if not np.isfinite(fake).all():  # a diverging G: the loop reports the divergence; the metrics must not crash first
        return {"wasserstein1": float("nan"), "wasserstein2": float("nan"), "mmd": float("nan"),
                "mmd_multiscale": float("nan")}
    n = min(w_samples, len(fake))
    return {**empirical_wasserstein(fake[:n], real[:n], parallel=parallel), **mmd_metrics(fake, real, sigma=mmd_sigma)}


def _complete_toy(job: EvalJob) -> EvalResult:
    """The offline metrics and the pictures of one evaluation. The last one of a run, which the
    training process waits for at its end, solves W1 and W2 in two threads while this one draws
    (the end of the default run waited about 0.35 s for it, done one after the other)."""
    if not job.last:
        scalars = offline_toy_metrics(job.fake, job.real, job.w_samples, job.mmd_sigma)
        return EvalResult(job.step, scalars, _toy_pictures(job))
    with ThreadPoolExecutor(1) as pool:
        metrics = pool.submit(offline_toy_metrics, job.fake, job.real, job.w_samples, job.mmd_sigma, True)
        images = _toy_pictures(job)
        return EvalResult(job.step, metrics.result(), images)


def _toy_pictures(job: EvalJob) -> dict[str, bytes]:
    from ganlab import pictures  # matplotlib: ~1 s to load, paid by evaluations only

    images = {"samples": job.samples_picture()}
    fake, centers = _plane(job.fake), _plane(job.centers)  # as the samples picture shows them
    if job.d_grid is not None:  # D's map over the plane: 2-D data only
        images["discriminator"] = pictures.discriminator_picture(job.d_grid, fake, centers, job.limits,
                                                                 f"D at step {job.step}")
    if job.history_steps:
        images["mode_histogram"] = pictures.mode_history_picture(job.history_steps, job.history_counts,
                                                                 "mode histogram over training")
    if job.source is not None:
        images["samples_by_generator"] = pictures.sources_picture(fake, job.source, centers, job.limits,
                                                                  f"samples by generator, step {job.step}")
    return images


def _plane(x: np.ndarray) -> np.ndarray:
    """Points as 2-D ones for a picture: the first two coordinates; 1-D points on the x axis."""
    x = np.asarray(x)
    x = x.reshape(len(x), -1) if x.ndim != 2 else x
    return x if x.shape[1] >= 2 else np.concatenate([x, np.zeros((len(x), 2 - x.shape[1]), x.dtype)], axis=1)


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

    def samples_picture(self, who: str = "") -> bytes:
        """The grid of samples from the fixed codes, titled `who` (a name and a comma, or nothing: G's own) and the
        step."""
        from ganlab import pictures

        m = self.metrics
        title = f"{who}step {self.step} (fixed z)"
        if "modes_captured" in m:
            title += f": {m['modes_captured']}/{self.n_modes} modes, KL {m['reverse_kl']:.2f}"
        return pictures.image_grid_picture(self.grid, title)

    def complete(self) -> EvalResult:
        from ganlab import pictures

        images = {"samples": self.samples_picture()}
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


@dataclass
class AverageJob:
    """The background part of the evaluation of G's moving average (ema.decay): its samples' picture, logged as
    `ema/samples` beside G's `samples` (about 0.1 s of the worker's time per evaluation on the ring). Not its
    W1/W2 and MMD: the exact optimal transport is the dearest part of G's own job (about 0.6 s per evaluation at
    1,000 points a side) and would double it; `ganlab eval RUN` measures them for the average."""

    of: EvalJob | ImageEvalJob  # the average's evaluation, as the evaluator hands over G's

    def complete(self) -> EvalResult:
        return EvalResult(self.of.step, {}, {"ema/samples": self.of.samples_picture("EMA of G, ")})


def complete(job) -> EvalResult:
    """The background part of one evaluation (an EvalJob, an ImageEvalJob, an AverageJob), or of the reference
    rows."""
    return job.complete()
