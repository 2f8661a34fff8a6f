"""Tests that kill the single-line changes the rest of the suite let survive (issue 31): each pins a number
worked by hand, so the change fails it.

- `still_moving` with the population standard deviation (ddof=0) in place of the sample one;
- the confusion-corrected count's floor (MIN_SHARE, 30 % of the uniform share), the bounds' floors and
  `modes_above_share`'s 10 % one, removed or moved;
- the plain binomial variance p (1 - p) / m in place of `_leak_variance`'s posterior one;
- `reverse_kl_hq` with the high-quality counts divided by all n samples instead of the high-quality ones;
- `speed.amp` and `speed.channels_last` forced off (and the other two switches, compile and cudnn_benchmark, cut off).
"""

import math

import pytest
import torch
from conftest import TINY, TINY_DCGAN, built, make_cfg

from ganlab.metrics.classes import class_metrics
from ganlab.metrics.confusion import _leak_variance, corrected_modes, count_bounds, plausible_modes
from ganlab.metrics.modes import mode_coverage
from ganlab.train import run
from ganlab.verdicts import still_moving

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

