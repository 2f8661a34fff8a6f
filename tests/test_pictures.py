"""The 2-D pictures keep their figure between evaluations (ganlab/pictures.py `_Canvas`): a reused
figure draws exactly what a fresh one does, and each frame (mode centres, limits) has its own."""

from __future__ import annotations

import io

import numpy as np
import pytest

from ganlab import pictures


def _forget_canvases():
    for canvas in pictures._Canvas._kept.values():
        pictures.plt.close(canvas.fig)
    pictures._Canvas._kept.clear()


@pytest.fixture
def fresh_canvases():
    _forget_canvases()
    yield
    _forget_canvases()


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
    _forget_canvases()
    fresh = pictures.samples_picture(_points(2), _points(3), centers, limits, "step 1000: 8/8 modes")
    assert np.array_equal(_pixels(fresh), _pixels(second))


def test_the_heatmap_colour_scale_follows_each_map(fresh_canvases):
    centers, limits = _frame()
    ramp = np.linspace(0, 1, 120)[None, :] * np.ones((120, 1))
    small = pictures.discriminator_picture(ramp, _points(0), centers, limits, "D at step 500")
    pictures.discriminator_picture(100 * ramp - 50, _points(1), centers, limits, "D at step 1000")
    (canvas,) = pictures._Canvas._kept.values()
    assert canvas.artists["mesh"].get_clim() == (-50.0, 50.0)  # the second map's range, not the first's
    again = pictures.discriminator_picture(ramp, _points(0), centers, limits, "D at step 500")
    assert canvas.artists["mesh"].get_clim() == (0.0, 1.0)
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
    _forget_canvases()  # the reused figure's three columns are what a new figure draws
    assert np.array_equal(_pixels(pictures.mode_history_picture([0, 500, 1000], [[4, 0], [0, 4], [2, 2]], "h")), two)


@pytest.mark.parametrize("remedy", ["none", "minibatch_disc"])
def test_the_heatmap_is_scored_in_blocks_unless_d_couples_its_batch(remedy):
    """D's map over the heatmap's 14,400 points goes in blocks of GRID_BLOCK (the same values as one
    batch); a D whose scores depend on the rest of the batch (minibatch layers) gets one batch."""
    import torch
    from conftest import make_cfg

    from ganlab.evaluation.toy import GRID_BLOCK, d_map_in_blocks
    from ganlab.gan import build, seed_everything

    seed_everything(0)
    exp = build(make_cfg(f"remedy={remedy}"), torch.device("cpu"))
    blocks = 3 if remedy == "none" else 1  # minibatch layers are n^2: one block and a bit is enough
    points = torch.rand(blocks * GRID_BLOCK + 5, 2) * 4 - 2
    sizes = []
    original = exp.remedy.d_map
    exp.remedy.d_map = lambda D, x: sizes.append(len(x)) or original(D, x)
    with torch.no_grad():
        blocked = d_map_in_blocks(exp.remedy, exp.D, points)
        whole = original(exp.D, points)
    if remedy == "none":
        assert sizes == [GRID_BLOCK] * 3 + [5]
        assert torch.allclose(blocked, whole, rtol=1e-5, atol=1e-6)
    else:
        assert sizes == [len(points)] and torch.equal(blocked, whole)
