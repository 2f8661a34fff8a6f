"""The part of an evaluation that needs no device, done in a background process.

Exact W1/W2 (an O(n^3) assignment: up to ~1 s at n = 1,000 when G has collapsed) and the
matplotlib pictures (~0.5 s) would otherwise stall training for seconds at every eval; a worker
process does them on another core while training goes on, and the loop writes their results at its
next log tick, under the step they belong to. This module imports no torch, so the worker starts
quickly. `background=False` does the same work inline (for debugging, and for tests).
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from ganlab import pictures
from ganlab.metrics.wasserstein import empirical_wasserstein


@dataclass
class EvalJob:
    step: int
    fake: np.ndarray            # generated samples, n x 2
    real: np.ndarray            # data samples, n x 2
    d_grid: np.ndarray          # D's output on a square grid over `limits`
    centers: np.ndarray
    limits: tuple[float, float]
    metrics: dict               # the metrics already computed on the device (for picture titles)
    history_steps: list[int]    # mode histogram so far, for the over-time picture
    history_counts: list[list[int]]
    w_samples: int


@dataclass
class EvalResult:
    step: int
    scalars: dict[str, float]
    images: dict[str, np.ndarray]


def complete(job: EvalJob) -> EvalResult:
    """Exact Wasserstein distances and the three pictures of one evaluation."""
    n = job.w_samples
    if np.isfinite(job.fake).all():
        scalars = empirical_wasserstein(job.fake[:n], job.real[:n])
    else:  # a diverging G: the loop reports the divergence; the metrics must not crash first
        scalars = {"wasserstein1": float("nan"), "wasserstein2": float("nan")}
    m, k = job.metrics, len(job.centers)
    title = f"step {job.step}: {m['modes_captured']}/{k} modes, HQ {m['high_quality_pct']:.0f}%"
    images = {
        "samples": pictures.samples_picture(job.fake, job.real, job.centers, job.limits, title),
        "discriminator": pictures.discriminator_picture(job.d_grid, job.fake, job.centers, job.limits,
                                                        f"D at step {job.step}"),
        "mode_histogram": pictures.mode_history_picture(job.history_steps, job.history_counts,
                                                        "mode histogram over training"),
    }
    return EvalResult(job.step, scalars, images)


class Offloader:
    """Runs `complete` on submitted jobs, in order, in one worker process (or inline)."""

    def __init__(self, background: bool = True):
        self.pool = None
        if background:
            # spawn, not fork: forking a process that holds torch's thread pools can deadlock.
            self.pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        self.pending: deque[Future] = deque()

    def submit(self, job: EvalJob) -> None:
        if self.pool is None:
            future: Future = Future()
            future.set_result(complete(job))
        else:
            future = self.pool.submit(complete, job)
        self.pending.append(future)

    def ready(self) -> list[EvalResult]:
        """Results finished so far, oldest first; never waits."""
        done = []
        while self.pending and self.pending[0].done():
            done.append(self.pending.popleft().result())
        return done

    def drain(self) -> list[EvalResult]:
        """Wait for every submitted job."""
        done = [future.result() for future in self.pending]
        self.pending.clear()
        return done

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
