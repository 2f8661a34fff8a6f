"""The 2-D pictures keep their figure between evaluations (ganlab/pictures.py `_Canvas`): a reused
figure draws exactly what a fresh one does, and each frame (mode centres, limits) has its own."""

from __future__ import annotations

import io

import numpy as np
import pytest

from ganlab import pictures


@pytest.fixture
def fresh_canvases():
    for canvas in pictures._Canvas._kept.values():
        pictures.plt.close(canvas.fig)
    pictures._Canvas._kept.clear()
    yield
    pictures._Canvas._kept.clear()


def _frame(scale=1.0):
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    return scale * np.stack([np.cos(angles), np.sin(angles)], 1), (-1.5 * scale, 1.5 * scale)


def _points(seed, n=300):
    return np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)))


def test_a_reused_samples_picture_equals_a_fresh_one(fresh_canvases):
    centers, limits = _frame()
    first = pictures.samples_picture(_points(0), _points(1), centers, limits, "step 500: 1/8 modes")
    second = pictures.samples_picture(_points(2), _points(3), centers, limits, "step 1000: 8/8 modes")
    assert len(pictures._Canvas._kept) == 1  # one figure for both
    again = pictures.samples_picture(_points(0), _points(1), centers, limits, "step 500: 1/8 modes")
    assert np.array_equal(_pixels(again), _pixels(first))  # the second left no trace
    assert not np.array_equal(_pixels(second), _pixels(first))
    pictures._Canvas._kept.clear()
    fresh = pictures.samples_picture(_points(2), _points(3), centers, limits, "step 1000: 8/8 modes")
    assert np.array_equal(_pixels(fresh), _pixels(second))


def test_the_heatmap_colour_scale_follows_each_map(fresh_canvases):
    centers, limits = _frame()
    ramp = np.linspace(0, 1, 120)[None, :] * np.ones((120, 1))
    small = pictures.discriminator_picture(ramp, _points(0), centers, limits, "D at step 500")
    pictures.discriminator_picture(100 * ramp - 50, _points(1), centers, limits, "D at step 1000")
    again = pictures.discriminator_picture(ramp, _points(0), centers, limits, "D at step 500")
    assert np.array_equal(_pixels(again), _pixels(small))


def test_each_frame_and_mode_count_has_its_own_figure(fresh_canvases):
    centers, limits = _frame()
    wide_centers, wide_limits = _frame(scale=3.0)
    pictures.samples_picture(_points(0), _points(1), centers, limits, "a")
    pictures.samples_picture(_points(0), _points(1), wide_centers, wide_limits, "b")
    pictures.mode_history_picture([0, 500], [[1, 2, 3], [3, 2, 1]], "h")
    pictures.mode_history_picture([0, 500, 1000], [[1, 2, 3], [3, 2, 1], [0, 0, 6]], "h")
    pictures.mode_history_picture([0], [[1, 1, 1, 1]], "h")
    assert len(pictures._Canvas._kept) == 4
    for _ in range(pictures._Canvas._MAX_KEPT + 3):  # old figures are closed, not kept for ever
        pictures.samples_picture(_points(0), _points(1), *_frame(scale=float(len(pictures._Canvas._kept) + 5)), "c")
    assert len(pictures._Canvas._kept) == pictures._Canvas._MAX_KEPT


def test_the_mode_history_grows_a_column_per_evaluation(fresh_canvases):
    one = _pixels(pictures.mode_history_picture([0, 500], [[4, 0], [0, 4]], "h"))
    two = _pixels(pictures.mode_history_picture([0, 500, 1000], [[4, 0], [0, 4], [2, 2]], "h"))
    assert one.shape == two.shape and not np.array_equal(one, two)
    pictures._Canvas._kept.clear()
    assert np.array_equal(_pixels(pictures.mode_history_picture([0, 500], [[4, 0], [0, 4]], "h")), one)
