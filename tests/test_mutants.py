"""Tests that kill the single-line changes the rest of the suite let survive (issue 31): each pins a number
worked by hand, so the change fails it.

- `still_moving` with the population standard deviation (ddof=0) in place of the sample one;
- the confusion-corrected count's floor (MIN_SHARE, 30 % of the uniform share), the bounds' floors and
  `modes_above_share`'s 10 % one, removed or moved;
- the plain binomial variance p (1 - p) / m in place of `_leak_variance`'s posterior one;
- `reverse_kl_hq` with the high-quality counts divided by all n samples instead of the high-quality ones;
- `speed.amp` and `speed.channels_last` forced off (and the other two switches, compile and cudnn_benchmark, cut off);
- and the mutants `make mutation` found surviving in verdicts.py, the metric modules and report.py's aggregation
  (docs/testing.md lists those left, each with why): a section per module below.
"""

import math

import numpy as np
import pytest
import torch
from conftest import TINY, TINY_DCGAN, built, make_cfg

from ganlab.errors import ConfigError
from ganlab.metrics.classes import class_metrics
from ganlab.metrics.confusion import _leak_variance, corrected_modes, count_bounds, plausible_modes
from ganlab.metrics.modes import mode_coverage
from ganlab.report import BLOB_FLAG, build_report
from ganlab.train import run
from ganlab.verdicts import compare, still_moving, within

# --- still_moving: the sample standard error, and p from t with n - 1 degrees of freedom --------------------


def t4_two_sided_p(t: float) -> float:
    """Student's t with 4 degrees of freedom in closed form (no scipy): F(t) = 1/2 + (3/8) u (1 - u^2 / 12)
    with u = t / sqrt(1 + t^2 / 4), so the two-sided p = 1 - (3/4) u (1 - u^2 / 12)."""
    u = t / math.sqrt(1 + t * t / 4)
    return 1 - 0.75 * u * (1 - u * u / 12)


def two_point_curves(changes):
    """Two evaluations: the window is both (first = 2 - 1 - ceil(0.2 * 1) = 0), so each seed's fitted
    slope times the window's length is its second value minus its first."""
    return [0, 10], [[0.0, c] for c in changes]


def test_still_moving_standard_error_is_the_sample_one_by_hand():
    # changes 0, 2, 0, 2, 1: mean 1, squared deviations 1 + 1 + 1 + 1 + 0 = 4, sample variance 4 / 4 = 1,
    # s.e. sqrt(1 / 5) = 0.4472 (ddof=0 would give sqrt(0.8 / 5) = 0.4); t = 1 / sqrt(1/5) = sqrt(5) = 2.236
    # on 4 degrees of freedom: u = sqrt(5) / sqrt(1 + 5/4) = 1.4907, p = 1 - (3/4) u (1 - u^2/12) = 1 - 11 sqrt(5) / 27
    # = 0.0890: not moving.
    steps, curves = two_point_curves([0, 2, 0, 2, 1])
    m = still_moving(steps, curves)
    assert m.change == pytest.approx(1.0, rel=1e-12) and m.se == pytest.approx(math.sqrt(1 / 5), rel=1e-12)
    assert m.change / m.se == pytest.approx(math.sqrt(5), rel=1e-12)
    assert t4_two_sided_p(math.sqrt(5)) == pytest.approx(1 - 11 * math.sqrt(5) / 27, rel=1e-12)
    assert t4_two_sided_p(math.sqrt(5)) == pytest.approx(0.08901, abs=1e-5)
    assert m.moving is False and m.since_step == 0


@pytest.mark.parametrize("shift, p, moving", [
    # changes 0.2 + (0, 2, 0, 2, 1): mean 1.2, the same s.e. sqrt(1/5); t = 1.2 sqrt(5) = 2.6833 (ddof=0: 3.0);
    # u = 2.6833 / sqrt(2.8) = 1.60357, p = 1 - 0.75 x 1.60357 x (1 - 2.5714/12) = 0.05504 >= 0.05.
    (0.2, 0.05504, False),
    # mean 1.25: t = 1.25 sqrt(5) = 2.7951 (ddof=0: 3.125); u = 2.7951 / sqrt(2.953125) = 1.62650,
    # p = 1 - 0.75 x 1.62650 x (1 - 2.64550/12) = 0.04906 < 0.05.
    (0.25, 0.04906, True),
])
def test_still_moving_p_straddles_alpha_by_hand(shift, p, moving):
    """The two-sided p on n - 1 = 4 degrees of freedom, pinned from both sides of 0.05: the population s.e.
    (t 11.8 % larger), 5 degrees of freedom or a one-sided p would all call the first case moving."""
    steps, curves = two_point_curves([shift + c for c in (0, 2, 0, 2, 1)])
    m = still_moving(steps, curves)
    assert m.change == pytest.approx(1 + shift, rel=1e-12) and m.se == pytest.approx(math.sqrt(1 / 5), rel=1e-12)
    assert t4_two_sided_p(m.change / m.se) == pytest.approx(p, abs=1e-5)
    assert m.moving is moving


# --- the count floors: modes_above_share 10 %, modes_corrected 30 %, the bounds' 50 % and 30 % - 2 sd ----------

IDENTITY = torch.eye(10, dtype=torch.float64)


def test_identity_confusion_with_five_stray_samples_is_one_mode():
    # 9,995 samples over 10 classes: the uniform share is 999.5; 5 samples are under 10 % of it (99.95) and
    # under 30 % (299.85). With an exact C there is no leak, so only the floor keeps class 1 out.
    labels = torch.tensor([0] * 9990 + [1] * 5)
    m = class_metrics(labels, confusion=IDENTITY)
    assert m["modes_captured"] == 2 and m["modes_above_share"] == 1 and m["modes_corrected"] == 1
    assert m["reverse_kl_corrected"] == pytest.approx(math.log(10), rel=1e-12)  # the refit puts everything on 0


# 10,000 samples, uniform share 1,000: 10 % = 100, 30 % = 300, 50 % = 500, each floor met exactly by one class and
# missed by one sample by the next. The high end keeps a class when h + 2 sqrt(h) >= 300: 268 + 2 x 16.371 = 300.74
# yes, 267 + 2 x 16.340 = 299.68 no.
AT_THE_FLOORS = [7668, 500, 499, 300, 299, 268, 267, 100, 99, 0]


def test_every_floor_counts_a_class_at_it_and_not_one_sample_below():
    assert sum(AT_THE_FLOORS) == 10_000
    labels = torch.repeat_interleave(torch.arange(10), torch.tensor(AT_THE_FLOORS))
    m = class_metrics(labels, confusion=IDENTITY)
    assert m["modes_captured"] == 9
    assert m["modes_above_share"] == 8     # 7668, 500, 499, 300, 299, 268, 267, 100 (>= 100)
    assert m["modes_corrected"] == 4       # 7668, 500, 499, 300 (>= 300)
    counts = torch.tensor(AT_THE_FLOORS, dtype=torch.float64)
    assert plausible_modes(counts, IDENTITY) == 6  # + 299 and 268
    # low: >= 500 (and 5 sd above a leak of 0): 7668 and 500
    assert count_bounds(counts, IDENTITY, None, m["modes_corrected"]) == {"modes_corrected_low": 2,
                                                                         "modes_corrected_high": 6}
    # the floor is a parameter: at 10 % the corrected count is the share count, at 0 every observed class
    assert corrected_modes(counts, IDENTITY, min_share=0.1)["modes_corrected"] == 8
    assert corrected_modes(counts, IDENTITY, min_share=0.0)["modes_corrected"] == 9


# --- the leak's variance from C's sampling error ------------------------------------------------------------

TOY = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)


def test_leak_variance_by_hand():
    """Each entry of C measured on m = 10 images has the posterior variance of a uniform prior,
    (c m + 1)(m (1 - c) + 1) / ((m + 2)^2 (m + 3)): c = 0.1 gives 2 x 10 / (144 x 13) = 20/1872, c = 0.2 gives
    3 x 9 / 1872 = 27/1872 (the binomial c (1 - c) / m would give 0.009 and 0.016)."""
    per_class = torch.tensor([10, 10])
    # 1-D, n p = (100, 50): cell 1 gets 100^2 x 20/1872 = 106.838, cell 0 gets 50^2 x 27/1872 = 36.058.
    v = _leak_variance(torch.tensor([100.0, 50.0], dtype=torch.float64), TOY, per_class)
    assert v.tolist() == pytest.approx([67_500 / 1872, 200_000 / 1872], rel=1e-12)
    # 2-D, 100 samples at (0, 0): its leak into (0, 1) is C00 C01, of variance Var(C00) C01^2 + C00^2 Var(C01)
    # = 20/1872 x (0.01 + 0.81) = 16.4/1872 per sample squared; into (1, 1), C01 C01: 2 x 20/1872 x 0.01. The
    # cell's own retention C00 C00 is not leak: 0.
    np2 = torch.zeros(2, 2, dtype=torch.float64)
    np2[0, 0] = 100.0
    v2 = _leak_variance(np2, TOY, per_class)
    assert v2.flatten().tolist() == pytest.approx([0.0, 164_000 / 1872, 164_000 / 1872, 4_000 / 1872], rel=1e-12)


def leaky(x: float, n0: float = 10_000) -> tuple[torch.Tensor, torch.Tensor]:
    """10 classes, exact but for class 0, 30 % of which is labelled 1 (tests/test_confusion.py's case)."""
    c = torch.eye(10, dtype=torch.float64)
    c[0, :2] = torch.tensor([0.7, 0.3])
    counts = torch.zeros(10, dtype=torch.float64)
    counts[:2] = torch.tensor([0.7 * n0, 0.3 * n0 + x])
    return counts, c


@pytest.mark.parametrize("x, modes", [(1369, 1), (1370, 2)])
def test_the_leak_variance_decides_a_class_at_three_sd(x, modes):
    """C measured on 100 images per class: the leak of 10,000 class-0 samples into class 1 has variance
    3000 (Poisson) + 10,000^2 x 31 x 71 / (102^2 x 103) = 3000 + 205,391 = 208,391, 3 sd = 1369.50, so a class 1 of
    1,370 samples stands above it and 1,369 does not. (The binomial 0.3 x 0.7 / 100 would make it 3 sd = 1384.56.)"""
    counts, c = leaky(x)
    assert corrected_modes(counts, c, per_class=torch.full((10,), 100))["modes_corrected"] == modes


# --- reverse KL over the high-quality samples ----------------------------------------------------------------

def ring8(radius: float = 2.0) -> torch.Tensor:
    angle = torch.arange(8) * (2 * math.pi / 8)
    return radius * torch.stack([angle.cos(), angle.sin()], 1)


def test_reverse_kl_hq_is_over_the_high_quality_samples_by_hand():
    """100 samples at mode 0 (high quality) and 100 at 5x the radius along mode 4 (nearest to it, 40 std away:
    not high quality). All samples: p = (1/2 at modes 0 and 4), KL = 2 x 1/2 log(8/2) = log 4. High-quality only:
    p_hq = (1 at mode 0), KL = log 8 (over all n it would be 1/2 log(8/2) = log 2)."""
    centers, std = ring8(), 0.2
    x = torch.cat([centers[0].expand(100, 2), 5 * centers[4].expand(100, 2)])
    m = mode_coverage(x, centers, std)
    assert m["modes_captured"] == 1 and m["high_quality_pct"] == 50.0
    assert m["mode_counts"] == [100, 0, 0, 0, 100, 0, 0, 0]
    assert m["reverse_kl"] == pytest.approx(math.log(4), rel=1e-12)
    assert m["reverse_kl_hq"] == pytest.approx(math.log(8), rel=1e-12)
    # Against a mixture's weights w: mode 0 holding w_0 = 1/4 gives KL(p_hq || w) = log 4 (over n: 1/2 log 2).
    w = torch.tensor([0.25] + [0.75 / 7] * 7)
    assert mode_coverage(x, centers, std, weights=w)["reverse_kl_hq"] == pytest.approx(math.log(4), rel=1e-6)


# --- the speed switches inside a training step ------------------------------------------------------------------

def record_during_training(module_type, what):
    """A global forward hook: what(module, inputs, output) for every `module_type` forward with gradients on
    (the training steps; the evaluation runs without them)."""
    seen = []

    def hook(module, inputs, output):
        if isinstance(module, module_type) and torch.is_grad_enabled():
            seen.append(what(module, inputs, output))

    return seen, torch.nn.modules.module.register_module_forward_hook(hook)


def test_amp_bf16_runs_the_training_steps_in_bfloat16_on_the_cpu(tmp_path):
    seen, handle = record_during_training(torch.nn.Linear, lambda m, i, out: out.dtype)
    try:
        run(make_cfg(*TINY, "steps=2", "eval.every=2", "speed.amp=bf16"), tmp_path / "bf16")
        bf16 = list(seen)
        seen.clear()
        run(make_cfg(*TINY, "steps=2", "eval.every=2"), tmp_path / "fp32")
    finally:
        handle.remove()
    # every Linear of G and D in both phases of both steps: autocast, not some of them
    assert bf16 and set(bf16) == {torch.bfloat16}
    assert seen and set(seen) == {torch.float32}


def test_channels_last_weights_and_batches_in_a_training_step(image_root):
    """The conv weights (and so the conv outputs) and the real image batches in NHWC during a training step. A
    tensor with 1 channel or 1 x 1 pixels is both formats at once, so the check is against a step without the
    switch, where every other weight and the (3-channel) real batch are not channels_last."""
    from ganlab.speed import Speed
    from ganlab.step import one_step

    cl = torch.channels_last

    def formats(tensor, output=None):
        return (tuple(tensor.shape), tensor.is_contiguous(memory_format=cl),
                True if output is None else output.is_contiguous(memory_format=cl))

    data = [*TINY_DCGAN, "dataset=stacked_fashion_mnist", f"dataset.root={image_root}", "dataset.n=100"]
    seen = {}
    for switch in ("true", "false"):
        exp = built(*data, f"speed.channels_last={switch}")
        speed = Speed(make_cfg(*data, f"speed.channels_last={switch}").speed, torch.device("cpu"))
        speed.prepare(exp.G, exp.D)  # as train.run does
        real = []
        first = next(m for m in exp.D.modules() if isinstance(m, torch.nn.Conv2d))
        on_real = first.register_forward_pre_hook(lambda m, args: real.append(formats(args[0])))
        seen[switch], handle = record_during_training((torch.nn.Conv2d, torch.nn.ConvTranspose2d),
                                                      lambda m, i, out: formats(m.weight, out))
        try:
            one_step(exp, 8, speed)
        finally:
            handle.remove(), on_real.remove()
        seen[switch].append(real[0])  # the real batch, D's first input
    nhwc, nchw = seen["true"], seen["false"]
    assert len(nhwc) > 4 and all(weight and out for _, weight, out in nhwc), nhwc
    assert nhwc[-1][0] == (8, 3, 28, 28)
    # the control: the same tensors without the switch are not NHWC, but for the ones that are both
    assert [shape for shape, _, _ in nhwc] == [shape for shape, _, _ in nchw]
    either = [shape[1] == 1 or shape[2] * shape[3] == 1 for shape, _, _ in nchw]
    assert sum(either) < len(either) / 2 and not any(w for (_, w, _), e in zip(nchw, either) if not e), nchw


def test_compile_and_cudnn_benchmark_switches_reach_the_networks_and_cudnn(monkeypatch):
    """Neither compiles nor times anything here (compiling on the CPU takes minutes; both are for CUDA, where
    tests/test_image_training.py::test_speed_switches_on_cuda runs them): compile is asked of G and D in place, and
    cudnn_benchmark sets cuDNN's flag for a CUDA device (a flag, set on any host)."""
    from ganlab.speed import Speed

    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *args, **kwargs: compiled.append(self))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # restored after the test
    exp = built(*TINY)
    Speed(make_cfg(*TINY).speed, torch.device("cpu")).prepare(exp.G, exp.D)
    assert compiled == []
    Speed(make_cfg(*TINY, "speed.compile=true").speed, torch.device("cpu")).prepare(exp.G, exp.D)
    assert compiled == [exp.G, exp.D]
    Speed(make_cfg(*TINY).speed, torch.device("cuda"))
    assert torch.backends.cudnn.benchmark is True
    Speed(make_cfg(*TINY, "speed.cudnn_benchmark=false").speed, torch.device("cuda"))
    assert torch.backends.cudnn.benchmark is False



# --- `make mutation`'s survivors in ganlab/verdicts.py (docs/testing.md lists those left, each equivalent) -----

def test_welch_p_of_two_values_a_side_by_hand():
    """a = (1, 3), b = (4, 6): each sample variance 2, s.e.^2 = 2/2 + 2/2 = 2, t = -3 / sqrt(2), Welch's
    df = 2^2 / (1^2/1 + 1^2/1) = 2; on 2 df the two-sided p is 1 - |t| / sqrt(2 + t^2) = 1 - sqrt(4.5 / 6.5)
    = 1 - 3 / sqrt(13) = 0.1679. Two values are enough (n - 1 = 1 in each variance); one is not."""
    from ganlab.verdicts import welch_p

    assert welch_p([1.0, 3.0], [4.0, 6.0]) == pytest.approx(1 - 3 / math.sqrt(13), rel=1e-12)
    assert welch_p([1.0], [1.0, 2.0, 3.0]) is None and welch_p([1.0, 2.0, 3.0], [1.0]) is None


def test_welch_p_with_one_arm_of_zero_spread_by_hand():
    """a = (1, 3) (variance 2), b = (5, 5, 5) (variance 0): s.e.^2 = 1, t = -3, df = 1^2 / (1^2 / 1) = 1, so t is
    Cauchy: p = 1 - (2 / pi) atan(3) = 0.2048 (not the degenerate 0 or 1 of two arms without spread)."""
    from ganlab.verdicts import welch_p

    p = 1 - 2 * math.atan(3) / math.pi
    assert welch_p([1.0, 3.0], [5.0, 5.0, 5.0]) == pytest.approx(p, rel=1e-12)
    assert welch_p([5.0, 5.0, 5.0], [1.0, 3.0]) == pytest.approx(p, rel=1e-12)
    # both without spread: degenerate, 1 for equal means and 0 otherwise
    assert welch_p([8.0] * 5, [8.0] * 5) == 1.0 and welch_p([8.0] * 5, [7.0] * 5) == 0.0


def test_compare_with_two_seeds_a_side_by_hand():
    """(8, 8) against (1, 2, 3): of the C(5, 2) = 10 splits only the observed one has |difference| >= 6, so
    p = 1/10; two seeds are enough for a verdict (one is not), and a single comparison is a family of one."""
    v = compare("modes_captured", [8.0, 8.0], [1.0, 2.0, 3.0])
    assert v.p == pytest.approx(0.1, rel=1e-12) and v.diff == pytest.approx(6.0) and v.family == 1
    assert v.word == "not significant"
    w = compare("modes_captured", [1.0, 2.0, 3.0], [8.0, 8.0])
    assert w.p == pytest.approx(0.1, rel=1e-12) and w.diff == pytest.approx(-6.0)
    assert compare("modes_captured", [8.0], [1.0, 2.0]).text() == "n/a (fewer than 2 seeds)"


def test_decide_at_alpha_nan_and_without_a_better_side():
    from ganlab.verdicts import ALPHA, decide

    assert decide("modes_captured", 8.0, 1.0, ALPHA) == "not significant"  # q < 0.05 is significant, 0.05 is not
    assert decide("modes_captured", 8.0, 1.0, 0.0499) == "better"
    assert decide("modes_captured", 8.0, 1.0, math.nan) == "n/a"
    assert decide("critic_gap", 1.0, 2.0, 0.01) == "lower" and decide("critic_gap", 2.0, 1.0, 0.01) == "higher"


def test_permutation_p_tolerance_by_hand(monkeypatch):
    """Splits count as extreme as the observed one when their difference is within 1e-9 x max(1, |value|) below
    it. (1e-9, 1e-9) against (0, 0): observed 1e-9, the four mixed splits 0, exactly the tolerance below: p = 1.
    (3.5e-9, 1.5e-9) against (0, 0): observed 2.5e-9, the mixed splits 1e-9, 1.5e-9 below: p = 2/6. Values near
    1000 scale it to 1e-6: (1000 + 1e-8, 1000) against three times 1000 differ by less, so the splits without the
    larger value (difference 1e-8 / 3 against the observed 1e-8 / 2) tie too: p = 1 (a tolerance of 1e-9: 4/10)."""
    from ganlab import verdicts

    assert verdicts.permutation_p([1e-9, 1e-9], [0.0, 0.0]) == 1.0
    assert verdicts.permutation_p([3.5e-9, 1.5e-9], [0.0, 0.0]) == pytest.approx(1 / 3, rel=1e-12)
    assert verdicts.permutation_p([1000.0 + 1e-8, 1000.0], [1000.0] * 3) == 1.0
    # the random splits count ties the same way: every shuffle of the first case ties
    monkeypatch.setattr(verdicts, "MAX_EXACT_SPLITS", 0)
    assert verdicts.permutation_p([1e-9, 1e-9], [0.0, 0.0]) == 1.0


def test_permutation_p_enumerates_up_to_max_exact_splits_inclusive(monkeypatch):
    from ganlab import verdicts

    monkeypatch.setattr(verdicts, "MAX_EXACT_SPLITS", 10)  # C(5, 2) = 10: still every split, p = 1/10 exactly
    assert verdicts.permutation_p([8.0, 8.0], [1.0, 2.0, 3.0]) == pytest.approx(0.1, rel=1e-12)


def test_random_splits_p_is_one_plus_hits_over_one_plus_splits(monkeypatch):
    """Random splits: p = (1 + hits) / (1 + RANDOM_SPLITS), over exactly RANDOM_SPLITS shuffles. Equal values: every
    shuffle ties, p = 1. Thirty values against thirty others all below them: no shuffle of C(60, 30) ~ 1e17 reaches
    the observed split, p = 1 / 100,001."""
    from ganlab import verdicts

    monkeypatch.setattr(verdicts, "MAX_EXACT_SPLITS", 0)
    assert verdicts.permutation_p([2.0] * 5, [2.0] * 5) == 1.0
    high, low = [float(100 + i) for i in range(30)], [float(i) for i in range(30)]
    assert verdicts.permutation_p(high, low) == 1 / (1 + verdicts.RANDOM_SPLITS)


def test_bootstrap_resamples_every_value_by_hand():
    """(0, 1) against (0, 0): a resampled mean of the first arm is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4
    (10,000 resamples: about 2,500 each end), so its 2.5 % and 97.5 % points are 0 and 1."""
    from ganlab.verdicts import bootstrap_interval

    assert bootstrap_interval([0.0, 1.0], [0.0, 0.0]) == (0.0, 1.0)
    assert bootstrap_interval([0.0, 0.0], [0.0, 1.0]) == (-1.0, 0.0)


def test_within_counts_the_second_standard_error():
    assert within(0.0, None, 2.0, 1.0) and within(0.0, 1.0, 2.0, None)   # 2 <= 2 x 1
    assert not within(0.0, None, 2.1, 1.0)


def two_seed_change(changes):
    return [0, 10], [[0.0, c] for c in changes]


def test_still_moving_with_two_seeds_by_hand():
    """Changes 1 and 3: mean 2, s.e. sqrt(((1)^2 + (1)^2) / 1 / 2) = 1, t = 2 on 1 df (Cauchy): p = 1 - (2/pi) atan 2
    = 0.295, not moving; two seeds are enough to tell."""
    m = still_moving(*two_seed_change([1.0, 3.0]))
    assert (m.moving, m.change, m.se, m.since_step) == (False, pytest.approx(2.0), pytest.approx(1.0), 0)


def test_still_moving_with_one_or_no_usable_seed():
    m = still_moving(*two_seed_change([2.5]))
    assert (m.moving, m.change, m.se, m.since_step) == (None, pytest.approx(2.5), None, 0)
    none = still_moving([0, 10], [[0.0, math.nan], [math.inf, 1.0]])  # each seed has a non-finite value: left out
    assert (none.moving, none.change, none.se, none.since_step) == (None, None, None, 0)


@pytest.mark.parametrize("change, moving", [(2.0, True), (1.5e-12, True), (1e-12, False), (5e-13, False), (0.0, False)])
def test_still_moving_with_equal_changes_by_hand(change, moving):
    """Four seeds with the same change: s.e. 0, no t-test; moving when the change is above 1e-12 x max(1, |change|)
    (rounding): 2 and 1.5e-12 are, 1e-12 (at it), 5e-13 and 0 are not."""
    m = still_moving(*two_seed_change([change] * 4))
    assert (m.moving, m.change, m.se, m.since_step) == (moving, pytest.approx(change, rel=1e-9), 0.0, 0)


# --- the text a verdict prints (report tables, scripts/toy_results.py and stacked_results.py) -------------------

def test_verdict_texts_by_hand():
    from ganlab.verdicts import Verdict

    assert Verdict("n/a", None).text() == "n/a"
    assert Verdict("n/a", None, "no baseline").text() == "n/a (no baseline)"
    v = Verdict("better", 0.0123, diff=1.23456, low=0.123456, high=2.34567)
    assert v.ci_text() == "[0.123, 2.35]" and v.ci_text(digits=2) == "[0.12, 2.3]"
    assert v.interval_text() == "+1.23 [0.123, 2.35]"
    assert Verdict("worse", 0.01, diff=-0.5, low=-1.0, high=0.0).interval_text() == "-0.5 [-1, 0]"
    assert Verdict("better", 0.01, diff=0.5, low=0.25, high=1.0).interval_text() == "+0.5 [0.25, 1]"
    assert Verdict("not significant", 1.0, diff=0.0, low=0.0, high=0.0).interval_text() == "0 [0, 0]"  # no sign on 0
    assert Verdict("n/a", None).interval_text() == "" and Verdict("n/a", None).ci_text() == ""
    assert Verdict("better", 0.01, diff=1.0, low=None, high=1.0).ci_text() == ""


@pytest.mark.parametrize("diff, low, high, text", [
    (1.0, -4e-16, 4e-16, "[0, 0]"),           # rounding beside the difference: 0 (the scale is the difference's)
    (0.0, -1.0, 4e-16, "[-1, 0]"),            # ... or the low end's
    (0.0, -4e-16, 1.0, "[0, 1]"),             # ... or the high end's
    (0.0, -1e-10, 1e-10, "[-1e-10, 1e-10]"),  # no difference: nothing to round against
    (None, -1e-10, 1e-10, "[-1e-10, 1e-10]"),
    (0.0, -1e-9, 1.0, "[0, 1]"),              # 1e-9 of the scale is rounding, inclusive
])
def test_ci_text_rounds_to_zero_against_the_largest_number(diff, low, high, text):
    from ganlab.verdicts import Verdict

    assert Verdict("better", 0.01, diff=diff, low=low, high=high).ci_text() == text


def test_p_and_q_texts_by_hand():
    from ganlab.verdicts import _num, pq_cell, q_text

    assert pq_cell(None) == "" and pq_cell(0.0005) == "<0.001" and pq_cell(0.001) == "0.001"
    assert q_text(0.5) == "q=0.500" and q_text(0.0005) == "q<0.001" and q_text(0.001) == "q=0.001"
    assert q_text(0.5, "p") == "p=0.500" and q_text(0.0001, "p") == "p<0.001"
    assert _num(1.23456) == "1.23" and _num(1.23456, 2) == "1.2" and _num(1.0) == "1"
    assert _num(0.0) == "0" and _num(-0.0) == "0" and _num(None) == "–" and _num(math.inf) == "–"


# --- `make mutation`'s survivors in ganlab/metrics/modes.py ----------------------------------------------------

TWO_MODES = torch.tensor([[0.0, 0.0], [10.0, 0.0]])


def test_one_sample_at_exactly_three_std_is_high_quality_and_one_mode():
    """One sample at distance 3 of mode 0 (std 1): high quality (<= 3 std, inclusive), so one mode captured by one
    sample, and over the high-quality samples p_hq = (1, 0): reverse KL (HQ) = 1 log(2 x 1) = log 2."""
    m = mode_coverage(torch.tensor([[3.0, 0.0]]), TWO_MODES, 1.0)
    assert m["high_quality_pct"] == 100.0 and m["modes_captured"] == 1 and m["mode_counts"] == [1, 0]
    assert m["reverse_kl_hq"] == pytest.approx(math.log(2), rel=1e-12)


def test_no_high_quality_sample_leaves_reverse_kl_hq_undefined():
    """Distance 5 (3, 4) and 4 from the nearest modes: no high-quality sample, so no mode captured and the HQ
    histogram is empty: reverse KL (HQ) is NaN, not 0; the plain reverse KL is over all samples."""
    m = mode_coverage(torch.tensor([[3.0, 4.0]]), TWO_MODES, 1.0)
    assert m["modes_captured"] == 0 and m["high_quality_pct"] == 0.0 and math.isnan(m["reverse_kl_hq"])
    assert m["reverse_kl"] == pytest.approx(math.log(2), rel=1e-12)
    both = mode_coverage(torch.tensor([[0.0, 4.0], [10.0, -4.0]]), TWO_MODES, 1.0)
    assert both["reverse_kl"] == 0.0 and math.isnan(both["reverse_kl_hq"])


def test_reverse_kl_hq_of_two_equal_modes_by_hand():
    """100 high-quality samples at each of modes 0 and 2 of 8: p_hq = 1/2 twice, KL = 2 x 1/2 log(8 x 1/2) = log 4."""
    centers = ring8()
    x = torch.cat([centers[0].expand(100, 2), centers[2].expand(100, 2)])
    assert mode_coverage(x, centers, 0.2)["reverse_kl_hq"] == pytest.approx(math.log(4), rel=1e-12)


def test_reverse_kl_against_mixture_weights_by_hand():
    """test_reverse_kl_hq_is_over_the_high_quality_samples_by_hand's samples against weights w_0 = 1/4, w_k = 3/28:
    over all samples p = (1/2 at modes 0 and 4), KL(p || w) = 1/2 log((1/2) / (1/4)) + 1/2 log((1/2) / (3/28))
    = 1/2 log(28/3) = 1.1168."""
    from types import SimpleNamespace

    from ganlab.metrics.modes import coverage_of_samples

    centers, w = ring8(), torch.tensor([0.25] + [0.75 / 7] * 7)
    x = torch.cat([centers[0].expand(100, 2), 5 * centers[4].expand(100, 2)])
    assert mode_coverage(x, centers, 0.2, weights=w)["reverse_kl"] == pytest.approx(math.log(28 / 3) / 2, rel=1e-6)
    # the registry's function takes the dataset's own weights, uniform when it has none, nothing without modes
    weighted = coverage_of_samples(x, None, SimpleNamespace(centers=centers, std=0.2, weights=w))
    assert weighted["reverse_kl"] == pytest.approx(math.log(28 / 3) / 2, rel=1e-6)
    assert weighted["reverse_kl_hq"] == pytest.approx(math.log(4), rel=1e-6)
    plain = coverage_of_samples(x, None, SimpleNamespace(centers=centers, std=0.2))
    assert plain["reverse_kl"] == pytest.approx(math.log(4), rel=1e-12)
    assert coverage_of_samples(x, None, SimpleNamespace()) == {}
    assert coverage_of_samples(x, None, SimpleNamespace(centers=None)) == {}


# --- `make mutation`'s survivors in ganlab/metrics/confusion.py ------------------------------------------------

def test_confusion_matrix_errors_name_the_problem_and_one_sample_a_class_is_enough():
    from ganlab.metrics.confusion import confusion_matrix

    with pytest.raises(ValueError, match="^3 true labels but 2 predictions$"):
        confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1]), k=2)
    for true, pred in (([0, 1], [0, 2]), ([0, 2], [0, 1]), ([0, 1], [-1, 1])):  # label k = 2, or -1
        with pytest.raises(ValueError, match=r"^labels must lie in 0\.\.1$"):
            confusion_matrix(torch.tensor(true), torch.tensor(pred), k=2)
    c, per_class = confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), k=2)
    assert c.tolist() == [[1.0, 0.0], [0.5, 0.5]] and per_class.tolist() == [1, 2]


def test_confusion_of_the_wrong_shape_is_refused():
    counts = torch.tensor([5.0, 5.0])
    for bad in (torch.tensor(1.0), torch.tensor([1.0, 0.0]), torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])):
        with pytest.raises(ValueError, match=r"^confusion must be \(k, k\)"):
            corrected_modes(counts, bad)


def test_a_single_sample_is_one_mode():
    m = corrected_modes(torch.tensor([0.0, 1.0, 0.0]), torch.eye(3, dtype=torch.float64))
    assert m == {"modes_corrected": 1, "reverse_kl_corrected": pytest.approx(math.log(3), rel=1e-12)}


def test_one_em_step_by_hand():
    """TOY's C, h = (1/2, 1/2), from the uniform p: q = C^T p = (0.55, 0.45), h / q = (10/11, 10/9), and
    p_t <- p_t sum_j C[t, j] h_j / q_j = (1/2 (0.9 x 10/11 + 0.1 x 10/9), 1/2 (0.2 x 10/11 + 0.8 x 10/9)) = (46/99, 53/99).
    With tol = 1 EM stops there (no cell moved by more than 1); with the default it goes on to the ML p = (3/7, 4/7)."""
    from ganlab.metrics.confusion import deconvolve

    h = torch.tensor([50.0, 50.0])
    assert deconvolve(h, TOY, tol=1.0).tolist() == pytest.approx([46 / 99, 53 / 99], rel=1e-12)
    assert deconvolve(h, TOY).tolist() == pytest.approx([3 / 7, 4 / 7], rel=1e-9)


def test_the_high_end_divides_the_noise_by_what_a_cell_keeps_by_hand():
    """TOY's C, counts (816, 184): the ML n p = (880, 120). Cell 1 keeps A(1, 1) = 0.8 of its own samples, so its
    standard error is sqrt(184) / 0.8 = 16.956 and 120 + 2 x 16.956 = 153.9 >= 150 (30 % of 1000 / 2): two plausible
    modes (the noise times 0.8, or not divided, would leave 141.7 or 147.1: one)."""
    assert plausible_modes(torch.tensor([816.0, 184.0]), TOY) == 2
    # a mass exactly at the floor counts: 2,048 samples, p = (1/8, 7/8) exactly, floor 0.25 x 2048 / 2 = 256 = n p_0
    assert plausible_modes(torch.tensor([256.0, 1792.0]), torch.eye(2, dtype=torch.float64), min_share=0.25, z=0) == 2


@pytest.mark.parametrize("x, low", [(3181, 1), (3182, 2)])
def test_the_low_end_counts_c_sampling_error_on_half_the_images_at_five_sd(x, low):
    """`leaky`'s case with C measured on 100 images per class, the low end's rule: half of them (m = 50; the scored
    images' own confusion is a draw too), 5 sd, 50 % of the uniform share. The leak into class 1 has variance
    3000 (Poisson) + 10,000^2 x (0.3 x 50 + 1)(0.7 x 50 + 1) / (52^2 x 53) = 3000 + 401,920.8, 5 sd = 3181.67:
    class 1 of 3,182 samples stands above it, 3,181 does not. (m = 100 or 200, 3 sd, or no sampling error would
    all keep 3,181.) The headline count (3 sd, m = 100, 30 %: 1,369.5) keeps both."""
    counts, c = leaky(x)
    per_class = torch.full((10,), 100)
    corrected = corrected_modes(counts, c, per_class=per_class)["modes_corrected"]
    assert corrected == 2
    assert count_bounds(counts, c, per_class, corrected) == {"modes_corrected_low": low, "modes_corrected_high": 2}


# --- `make mutation`'s survivors in the other metric modules that change a published number --------------------

def test_class_metrics_of_one_sample_and_their_errors():
    """One sample of class 3 of 10: one class captured (a class with one sample counts), above the share (1 >= 0.1),
    reverse KL log 10. No samples, labels out of range or of the wrong shape are errors that say so."""
    from ganlab.metrics.classes import stacked_mode_metrics

    m = class_metrics(torch.tensor([3]))
    assert (m["modes_captured"], m["modes_above_share"]) == (1, 1) and m["class_counts"][3] == 1
    assert m["reverse_kl"] == pytest.approx(math.log(10), rel=1e-12)
    for labels, message in ((torch.tensor([], dtype=torch.long), "no samples"),
                            (torch.tensor([0, 10]), r"labels must lie in 0\.\.9"),
                            (torch.zeros(2, 2, dtype=torch.long), r"labels must be \(n,\), got \(2, 2\)")):
        with pytest.raises(ValueError, match=f"^{message}$"):
            class_metrics(labels)
    with pytest.raises(ValueError, match=r"^triples must be \(n, 3\), got \(2, 2\)$"):
        stacked_mode_metrics(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^channel labels must lie in 0\.\.9$"):
        stacked_mode_metrics(torch.tensor([[0, 0, 10]]))


@pytest.mark.parametrize("x, modes", [(1369, 1), (1370, 2)])
def test_class_metrics_pass_the_test_counts_to_the_corrected_count(x, modes):
    """test_the_leak_variance_decides_a_class_at_three_sd through class_metrics: the classifier's test images per class
    reach the count (without them the leak's 3 sd would be Poisson's alone, 164, and 1,369 would count)."""
    counts, c = leaky(x)
    labels = torch.repeat_interleave(torch.arange(10), counts.long())
    m = class_metrics(labels, confusion=c, per_class=torch.full((10,), 100))
    assert m["modes_corrected"] == modes


class CropLabeller:
    """A classifier stub: labels a grey 28 x 28 image by its top-left pixel (0 or 1)."""

    def predict(self, x, batch_size):
        return (x[:, 0, 0, 0] > 0).long()


def test_classify_channels_crops_the_centre_and_refuses_other_shapes():
    """32 x 32 images (the models' padded layout) are cropped to their centre 28 x 28: rows and columns 2-29. A
    marker at (2, 2) of the green channel is the crop's top-left pixel; the same at (1, 1) is outside it."""
    from ganlab.metrics.classes import classify_channels

    x = -torch.ones(2, 3, 32, 32)
    x[0, 1, 2, 2] = 1.0
    x[1, 1, 1, 1] = 1.0
    assert classify_channels(CropLabeller(), x).tolist() == [[0, 1, 0], [0, 0, 0]]
    for shape in ((1, 3, 20, 32), (1, 3, 32, 20), (1, 1, 28, 28)):
        with pytest.raises(ValueError, match=r"^expected \(n, 3, H, W\) images with H, W >= 28, got "):
            classify_channels(CropLabeller(), torch.zeros(shape))


def test_classifier_mode_metrics_by_hand():
    """The evaluator's mode metrics from a classifier's labels, on `leaky(3181)`'s labels. Without a confusion: the raw
    counts only. With the classifier's own C and test counts (100 a class): the corrected count, 2 (3 sd = 1,369.5).
    With a family of confusions: the one matched to the images (the nearest signature; here member 1, `leaky`'s C
    measured on 100 images a class, blur 1 and noise 0.2) corrects the count and gives its bounds: low 1 (5 sd on half
    the test counts = 3,181.67, see the low end's test), high 2."""
    from types import SimpleNamespace

    from ganlab.metrics.classes import classifier_mode_metrics
    from ganlab.metrics.matched_confusion import BANDS, ConfusionFamily, signature

    counts, c = leaky(3181)
    labels = torch.repeat_interleave(torch.arange(10), counts.long())
    images = torch.rand(20, 1, 28, 28) * 2 - 1
    bare = classifier_mode_metrics(labels, images, SimpleNamespace(), stacked=False)
    assert bare == {"modes_captured": 2, "modes_above_share": 2, "reverse_kl": pytest.approx(
        sum(k / 13181 * math.log(10 * k / 13181) for k in (7000, 6181)), rel=1e-12),
        "mode_counts": [7000, 6181] + [0] * 8}
    per_class = torch.full((10,), 100)
    own = classifier_mode_metrics(labels, images, SimpleNamespace(confusion=c, confusion_samples=per_class), False)
    assert own["modes_corrected"] == 2 and "modes_corrected_low" not in own
    near = classifier_mode_metrics(torch.repeat_interleave(torch.arange(10), leaky(900)[0].long()), images,
                                   SimpleNamespace(confusion=c, confusion_samples=per_class), False)
    # leaky(900): 900 < 3 sd = 1,369.5 with C's sampling error, > 164 = 3 sd of the Poisson leak alone: the count
    # takes the classifier's test counts
    assert near["modes_corrected"] == 1
    five = classifier_mode_metrics(torch.tensor([0, 4, 4]), images, SimpleNamespace(), False, n_classes=5)
    assert five["mode_counts"] == [1, 0, 0, 0, 2]

    def family_of(confusion, signatures):
        return ConfusionFamily(sigma=torch.tensor([0.0, 1.0], dtype=torch.float64),
                               noise=torch.tensor([0.0, 0.2], dtype=torch.float64), signatures=signatures,
                               confusions=torch.stack([torch.eye(10, dtype=torch.float64), confusion]),
                               samples=torch.full((2, 10), 100, dtype=torch.long))

    far = torch.full((len(BANDS),), 1e3, dtype=torch.float64)
    clf = SimpleNamespace(confusion=torch.eye(10, dtype=torch.float64), confusion_samples=per_class,
                          confusion_family=family_of(c, torch.stack([far, signature(images)])))
    m = classifier_mode_metrics(labels, images, clf, stacked=False)
    assert {k: m[k] for k in ("modes_corrected", "modes_corrected_low", "modes_corrected_high", "matched_blur",
                              "matched_noise", "modes_captured")} == {
        "modes_corrected": 2, "modes_corrected_low": 1, "modes_corrected_high": 2, "matched_blur": 1.0,
        "matched_noise": 0.2, "modes_captured": 2}
    assert m["mode_counts"] == bare["mode_counts"] and "class_counts" not in m
    # stacked: 3 triples of 100 samples each, matched to the clean member (exact C): 3 modes, bounds 3 and 3
    triples = torch.tensor([[1, 2, 3]] * 100 + [[4, 5, 6]] * 100 + [[0, 0, 0]] * 100)
    stacked_images = torch.zeros(300, 3, 28, 28)
    clf.confusion_family = family_of(c, torch.stack([signature(stacked_images), far]))
    s = classifier_mode_metrics(triples, stacked_images, clf, stacked=True)
    assert (s["modes_captured"], s["modes_corrected"], s["modes_corrected_low"], s["modes_corrected_high"]) == (3, 3, 3, 3)
    assert (len(s["mode_counts"]), s["mode_counts"][123], s["matched_blur"]) == (1000, 100, 0.0)
    assert s["reverse_kl_corrected"] == pytest.approx(math.log(1000 / 3), rel=1e-9)


def test_mmd_of_two_points_a_side_and_its_errors_by_hand():
    """x = y = (0, 1) at sigma 1: within each side k(0, 1) = e^-1/2 twice over 2 x 1 pairs, across (1 + 1 + 2 e^-1/2)
    / 4 x 2: MMD^2_u = 2 e^-1/2 - (1 + e^-1/2) = e^-1/2 - 1 (the unbiased estimate can be negative)."""
    from ganlab.metrics.mmd import mmd2_unbiased

    x = np.array([[0.0], [1.0]])
    assert mmd2_unbiased(x, x, [1.0]) == pytest.approx([math.exp(-0.5) - 1], rel=1e-12)
    for a, b in ((x[:1], x), (x, x[:1])):
        with pytest.raises(ValueError, match=f"^MMD needs at least 2 points per side, got {len(a)} and {len(b)}$"):
            mmd2_unbiased(a, b, [1.0])


def test_mmd_metrics_in_float64_at_sigma_one_for_equal_real_points_and_nan_when_diverged():
    """Real points all at 0 (median distance 0: sigma 1), fakes all at 1: within each side every kernel is 1, across
    e^-1/(2 s^2): MMD^2_u = 2 - 2 e^-1/(2 s^2), at s = 1 and averaged over s = (0.25, 0.5, 1, 2, 4)."""
    from ganlab.metrics.mmd import SCALES, mmd_metrics

    m = mmd_metrics(np.ones((3, 1)), np.zeros((4, 1)))
    assert m["mmd"] == pytest.approx(2 - 2 * math.exp(-0.5), rel=1e-12)
    assert m["mmd_multiscale"] == pytest.approx(
        sum(2 - 2 * math.exp(-1 / (2 * s * s)) for s in SCALES) / len(SCALES), rel=1e-12)
    # float32 samples are measured in float64 (the unbiased estimate cancels large sums)
    rng = np.random.default_rng(0)
    fake, real = rng.normal(size=(50, 2)).astype(np.float32), rng.normal(size=(60, 2)).astype(np.float32)
    assert mmd_metrics(fake, real) == pytest.approx(mmd_metrics(fake.astype(np.float64), real.astype(np.float64)),
                                                    rel=1e-12)
    for bad in (np.array([[np.nan], [0.0]]), np.array([[np.inf], [0.0]])):
        out = mmd_metrics(bad, np.zeros((2, 1)), prefix="x_")
        assert set(out) == {"x_mmd", "x_mmd_multiscale"} and all(math.isnan(v) for v in out.values())


def test_wasserstein_in_parallel_is_the_same_exact_distance():
    """A translation by (3, 4): every point moves 5, so W1 = W2 = 5, in two threads as in one."""
    from ganlab.metrics.wasserstein import empirical_wasserstein

    x = np.random.default_rng(0).normal(size=(20, 2))
    for parallel in (False, True):
        out = empirical_wasserstein(x, x + np.array([3.0, 4.0]), parallel=parallel)
        assert out == {"wasserstein1": pytest.approx(5.0, rel=1e-9), "wasserstein2": pytest.approx(5.0, rel=1e-9)}


def test_frechet_of_singular_covariances_is_finite_and_float32_is_measured_in_float64():
    """Three samples in 5-D: a covariance of rank 2, whose eigenvalues come out as -3e-17 and the like; clipped to 0,
    the distance of the set to itself is 0 (not NaN from the square root of a negative number)."""
    from ganlab.metrics.frechet import feature_statistics, frechet_distance

    rng = np.random.default_rng(0)
    mu, sigma = feature_statistics(rng.normal(size=(3, 5)))
    d = frechet_distance(mu, sigma, mu, sigma)
    assert math.isfinite(d) and abs(d) < 1e-6 * np.trace(sigma)
    a, b = rng.normal(size=(40, 4)).astype(np.float32), rng.normal(1.0, size=(40, 4)).astype(np.float32)
    (ma, sa), (mb, sb) = feature_statistics(a), feature_statistics(b)
    assert ma.dtype == np.float64 and ma.tolist() == a.astype(np.float64).mean(0).tolist()
    assert frechet_distance(ma, sa.astype(np.float32), mb, sb.astype(np.float32)) == pytest.approx(
        frechet_distance(ma, sa.astype(np.float32).astype(np.float64), mb, sb.astype(np.float32).astype(np.float64)),
        rel=1e-12)
    assert feature_statistics(a[:2])[1].shape == (4, 4)  # two samples are enough
    with pytest.raises(ValueError, match=r"^features must be an n x d array with n >= 2, got shape \(3,\)$"):
        feature_statistics(np.zeros(3))


def test_kid_subsets_seed_sizes_and_float64():
    """The subsets come from seed 0 by default (the evaluator passes the counts, not the seed); each side's subset is
    min(subset_size, len(x), len(y)) drawn without replacement; the kernel in float64."""
    from ganlab.metrics.kid import kernel_inception_distance, mmd2_unbiased

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(12, 3)), rng.normal(0.5, size=(9, 3))

    def by_hand(x, y, subsets, size, seed):
        r = np.random.default_rng(seed)
        values = [mmd2_unbiased(x[r.choice(len(x), size, replace=False)], y[r.choice(len(y), size, replace=False)])
                  for _ in range(subsets)]
        return pytest.approx((float(np.mean(values)), float(np.std(values))), rel=1e-12)

    assert kernel_inception_distance(x, y, subsets=5, subset_size=4) == by_hand(x, y, 5, 4, 0)
    assert kernel_inception_distance(x, y, subsets=5, subset_size=100) == by_hand(x, y, 5, 9, 0)
    assert kernel_inception_distance(y, x, subsets=5, subset_size=100) == by_hand(y, x, 5, 9, 0)
    assert kernel_inception_distance(x, y, subsets=5, subset_size=4) != kernel_inception_distance(
        x, y, subsets=5, subset_size=4, seed=1)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    assert mmd2_unbiased(x32, y32) == pytest.approx(mmd2_unbiased(x32.astype(np.float64), y32.astype(np.float64)),
                                                    rel=1e-12)
    with pytest.raises(ValueError, match="^the unbiased MMD\\^2 needs at least 2 samples per set, got 1 and 9$"):
        mmd2_unbiased(x[:1], y)


def test_prdc_below_unit_distances_on_ball_edges_and_at_the_papers_k():
    """test_image_metrics' hand-computed case scaled by 1/8 (distances below 1, exact in binary): the same numbers.
    Ball edges count: a fake at exactly a real's k-th neighbour distance is inside its ball."""
    from ganlab.metrics.prdc import density_coverage, knn_radii, prdc, precision_recall

    real = np.array([[0.0], [1.0], [2.0], [3.0]]) / 8
    fake = np.array([[0.5], [10.0]]) / 8
    assert knn_radii(real, 1).tolist() == [0.125] * 4
    assert precision_recall(real, fake, k=1) == {"precision": 0.5, "recall": 1.0}
    assert density_coverage(real, fake, k=1) == {"density": 1.0, "coverage": 0.5}
    # reals 0, 1, 2, 3 (k = 1: radius 1 each); fakes 4 (on real 3's ball edge) and 5 (outside every real ball).
    # Fakes 1 apart: radius 1 each, so real 3 is on fake 4's ball edge: inside it.
    edge = prdc(np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([[4.0], [5.0]]), k_pr=1, k_dc=1)
    assert edge == {"precision": 0.5, "recall": 0.25, "density": 0.5, "coverage": 0.25}
    # defaults: precision/recall at k = 3, density/coverage at k = 5 (Kynkaanniemi et al., Naeem et al.)
    rng = np.random.default_rng(0)
    r, f = rng.normal(size=(30, 2)), rng.normal(0.3, size=(30, 2))
    assert prdc(r, f) == prdc(r, f, k_pr=3, k_dc=5) != prdc(r, f, k_pr=4, k_dc=6)
    assert precision_recall(r, f) == precision_recall(r, f, k=3) != precision_recall(r, f, k=4)
    assert density_coverage(r, f) == density_coverage(r, f, k=5) != density_coverage(r, f, k=6)
    radii32 = knn_radii(r.astype(np.float32), 3)
    assert radii32.dtype == np.float64
    assert radii32.tolist() == pytest.approx(knn_radii(r.astype(np.float32).astype(np.float64), 3).tolist(), rel=1e-12)
    with pytest.raises(ValueError, match="^k=3 nearest neighbours need more than 3 points, got 3$"):
        knn_radii(r[:3], 3)


# --- `make mutation`'s survivors in ganlab/report.py's aggregation that change a published number or cell -------

def test_a_verdict_is_against_the_baseline_of_the_closest_config(tmp_path):
    """Two remedy=none rows (lr 1e-3 and 2e-3) and pacgan at each lr: each pacgan row is compared with the none row of
    its own lr (the config keys in which they differ, remedy.* set aside: 0 against 1), whichever comes first."""
    from test_report import PACGAN, metrics, write_summary

    for lr in (1e-3, 2e-3):
        for seed in range(3):
            write_summary(tmp_path / f"none_{lr}_s{seed}", seed, lr=lr, metrics=metrics(1 + seed))
            write_summary(tmp_path / f"pacgan_{lr}_s{seed}", seed, lr=lr, remedy=PACGAN, metrics=metrics(6 + seed))
    rows = {g.label: g for g in build_report(tmp_path).groups}
    for lr in ("0.001", "0.002"):
        assert rows[f"remedy=pacgan optim.g.lr={lr}"].baseline is rows[f"remedy=none optim.g.lr={lr}"]


def test_baseline_errors_and_when_there_is_nothing_to_compare(tmp_path):
    """An explicit --baseline no group has is an error naming the groups; by default (remedy=none) a sweep without
    that group has no baseline and no verdicts; asked for explicitly where every group has it, it is the baseline."""
    from test_report import PACGAN, metrics, write_summary

    for seed in range(2):
        write_summary(tmp_path / "pac" / f"s{seed}", seed, remedy=PACGAN, metrics=metrics(6 + seed))
        write_summary(tmp_path / "pac" / f"w{seed}", seed, remedy=PACGAN, loss="wgan_gp", metrics=metrics(5 + seed))
    with pytest.raises(ConfigError, match=r"^--baseline remedy=madgan: no group has it; the groups are: "
                                          r"loss=nsgan; loss=wgan_gp$"):
        build_report(tmp_path / "pac", baseline="remedy=madgan")
    report = build_report(tmp_path / "pac")
    assert report.baseline is None and not report.has_verdicts
    for seed in range(2):
        write_summary(tmp_path / "none" / f"s{seed}", seed, metrics=metrics(1 + seed))
    assert build_report(tmp_path / "none").baseline is None  # every group is the baseline: nothing to compare
    assert build_report(tmp_path / "none", baseline="remedy=none").baseline == ("remedy", "none")


def test_a_seed_run_twice_counts_once_after_a_seed_run_once(tmp_path):
    """Seeds 0 (once) and 1 (twice, the second in a sweep run again): 2 seeds, each once; runs without a seed are
    never merged (nothing says they are the same draw)."""
    from test_report import metrics, write_summary

    write_summary(tmp_path / "a" / "s0", 0, metrics=metrics(1))
    write_summary(tmp_path / "a" / "s1", 1, metrics=metrics(3))
    write_summary(tmp_path / "b" / "s1", 1, metrics=metrics(3))
    report = build_report(tmp_path)
    assert report.groups[0].n_seeds == 2 and len(report.duplicates) == 1
    write_summary(tmp_path / "c" / "x", None, metrics=metrics(5))
    write_summary(tmp_path / "d" / "x", None, metrics=metrics(5))
    assert sum(g.n_seeds for g in build_report(tmp_path).groups) == 4


def test_mean_se_of_no_value_and_the_stat_text_by_hand():
    from ganlab.report import Stat, mean_se

    assert mean_se([]) == Stat(None, None, 0) and mean_se([None, math.nan, True]) == Stat(None, None, 0)
    assert Stat(None, None, 0).text(3) == "–"
    assert Stat(6.3, 0.52, 4).text(5) == "6.30 ± 0.52 (n=4)"   # s.e. to 2 significant digits, the mean alike
    assert Stat(123.4, 45.6, 5).text(5) == "123 ± 46"          # no decimals from an s.e. of 10 up
    assert Stat(1.0, 1e-10, 5).text(5) == "1.00000000 ± 0.00000000"  # at most 8 decimals


def run_with_history(steps, values, name="r"):
    from pathlib import Path

    from ganlab.report import Run

    return Run(Path(name), name, "completed", steps[-1], 0, {}, {}, {}, 8,
               history={"steps": steps, "metrics": {"modes_captured": values}})


def test_curves_are_at_the_steps_every_completed_run_logged():
    from ganlab.report import Group

    runs = [run_with_history([10, 20, 30], [1, 2, None]), run_with_history([20, 30, 40], [5, 6, 7]),
            run_with_history([10, 20, 30, 40], [1, 2, 3, 4])]
    steps, curves = Group("g", [], runs).curves("modes_captured")
    assert steps == [20, 30] and curves[1:] == [[5, 6], [2, 3]]
    assert curves[0][0] == 2 and math.isnan(curves[0][1])  # not logged as a number: NaN
    assert Group("g", [], runs[1:2]).curves("modes_captured") == ([20, 30, 40], [[5, 6, 7]])


def test_a_metric_tables_verdict_cells():
    """Δ [95 % CI] (2 significant digits), p, q, the word; the baseline row says so; n/a says why; no verdict:
    empty cells."""
    from ganlab.report import Group, _verdict_cells
    from ganlab.verdicts import Verdict

    base, row, lone = Group("base", [], []), Group("row", [], []), Group("lone", [], [])
    base.baseline, row.baseline = base, base
    assert _verdict_cells(base, "modes_captured") == ["baseline", "", "", ""]
    assert base.verdict_text("modes_captured") == "baseline"
    assert _verdict_cells(lone, "modes_captured") == ["", "", "", ""] and lone.verdict_text("modes_captured") == ""
    row.verdicts = {"modes_captured": Verdict("better", 0.0079, q=0.0158, diff=6.6, low=5.8333, high=7.4167),
                    "reverse_kl": Verdict("n/a", None, "fewer than 2 seeds")}
    assert _verdict_cells(row, "modes_captured") == ["[5.8, 7.4]", "0.008", "0.016", "better"]
    assert _verdict_cells(row, "reverse_kl") == ["", "", "", "n/a (fewer than 2 seeds)"]
    assert row.verdict_text("reverse_kl") == "n/a (fewer than 2 seeds)"


def test_the_blob_flag_counts_the_gaussians_standard_error(tmp_path):
    """Every seed at 18 modes, KL 0.05, 1.5 % high quality (s.e. 0); the Gaussian fit's modes 18, 19, 18, 19: mean
    18.5, s.e. 0.289, so 18 is within 2 x 0.289 = 0.577 of it, by the Gaussian's s.e. alone: a blob."""
    from test_report import references, write_summary

    for seed in range(4):
        write_summary(tmp_path / f"s{seed}", seed, dataset="grid", references=references(gauss_kl=0.05, seed=seed),
                      metrics={"modes_captured": 18, "reverse_kl": 0.05, "high_quality_pct": 1.5})
    assert BLOB_FLAG in build_report(tmp_path).groups[0].flags


def test_untrained_reference_rows_are_per_model_and_the_others_per_dataset(tmp_path):
    """Two model widths on the ring, 2 seeds each: the Gaussian fit and the data are one row each (4 runs pooled once
    per seed: 2), the untrained G one row per model (2 runs each), labelled by the model of the first group using it."""
    import json

    from test_report import references, write_summary

    for width in (64, 128):
        for seed in range(2):
            run_dir = tmp_path / f"w{width}_s{seed}"
            write_summary(run_dir, seed, references=references(seed=seed + width),
                          metrics={"modes_captured": 8, "reverse_kl": 0.1})
            summary = json.loads((run_dir / "summary.json").read_text())
            summary["config"]["model"] = {"g": {"width": width}}
            (run_dir / "summary.json").write_text(json.dumps(summary))
    rows = build_report(tmp_path).reference_rows
    assert [(r.name, r.n) for r in rows] == [("untrained", 2), ("untrained", 2), ("gaussian", 2), ("data", 2)]
    assert rows[0].label.endswith("(the model of model.g.width=64)") and rows[1].label.endswith("model.g.width=128)")
    assert rows[2].label == "reference: Gaussian fit"
    # untrained KL 2.5 + 0.01 (64 + seed): the width-64 row's mean is 2.5 + 0.645, the other's 2.5 + 1.285
    assert rows[0].stats["reverse_kl"].mean == pytest.approx(3.145) and rows[1].stats["reverse_kl"].mean == pytest.approx(3.785)


def test_unreadable_summaries_are_counted_apart_and_the_metrics_default_to_what_the_runs_have(tmp_path):
    from test_report import write_summary

    from ganlab.report import DEFAULT_METRICS

    for seed in range(2):
        write_summary(tmp_path / "ok" / f"s{seed}", seed, metrics={"modes_captured": 6 + seed})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text("{not json")
    report = build_report(tmp_path)
    assert len(report.groups) == 1 and report.groups[0].n_seeds == 2
    assert report.metrics == ["modes_captured"]  # the headline metrics these runs have, no others
    assert report.notes == ["1 summary.json could not be read; listed with the runs that did not complete"]
    only_bad = build_report(tmp_path / "bad")
    assert only_bad.groups == [] and only_bad.metrics == list(DEFAULT_METRICS) and len(only_bad.notes) == 1


def test_reference_rows_of_runs_with_and_without_references_and_of_unknown_ones(tmp_path):
    """A reference a newer ganlab writes (unknown here) is skipped, not the end of the run's references; a run without
    references counts only where it has them; one seed per dataset gives one-run rows labelled by their dataset."""
    from test_report import references, write_summary

    write_summary(tmp_path / "ring_s0", 0, metrics={"modes_captured": 8},
                  references={"future": {"modes_captured": 1}, **references(seed=0)})
    write_summary(tmp_path / "ring_s1", 1, metrics={"modes_captured": 7})
    write_summary(tmp_path / "grid_s0", 0, dataset="grid", metrics={"modes_captured": 20}, references=references())
    report = build_report(tmp_path)
    ring = {g.label: g for g in report.groups}["dataset=ring"]
    assert ring.reference_stats["gaussian"]["modes_captured"].n == 1
    rows = sorted((r.label.split(" (")[1][:12], r.name, r.n) for r in report.reference_rows)
    assert rows == [("dataset=grid", "data", 1), ("dataset=grid", "gaussian", 1), ("dataset=grid", "untrained", 1),
                    ("dataset=ring", "data", 1), ("dataset=ring", "gaussian", 1), ("dataset=ring", "untrained", 1)]


def test_of_two_failed_runs_of_a_seed_the_one_with_a_step_counts(tmp_path):
    """Neither is a result (both failed): the one that trained (step 5) stands for the seed, not the one that never
    started (no step); no error comparing an unknown step with a number."""
    from test_report import write_summary

    write_summary(tmp_path / "a", 0, status="failed", step=5, n_modes=None, error="boom")
    write_summary(tmp_path / "b", 0, status="failed", step=None, n_modes=None, error="boom")
    report = build_report(tmp_path)
    assert [r.name for r in report.groups[0].runs] == ["a"] and report.duplicates[0][1][0].name == "b"


def test_rows_that_use_labels_have_the_word_n_a(tmp_path):
    from test_report import metrics, write_summary

    for seed in range(2):
        write_summary(tmp_path / f"none_s{seed}", seed, metrics=metrics(1 + seed))
        write_summary(tmp_path / f"acgan_s{seed}", seed, metrics=metrics(5 + seed),
                      remedy={"acgan": {"_target_": "ganlab.remedies.acgan.ACGAN"}})
    acgan = {g.label: g for g in build_report(tmp_path).groups}["remedy=acgan"]
    assert {v.word for v in acgan.verdicts.values()} == {"n/a"}
