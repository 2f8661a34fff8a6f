"""Metrics: small functions of samples that return flat dicts of numbers, and their registry.

- modes.py: mode coverage on Gaussian mixtures (torch, runs on the training device);
- classes.py, confusion.py: classifier modes on images, and their confusion-corrected counts;
- frechet.py, kid.py, prdc.py, sliced.py: feature-space metrics for images (FID's Fréchet distance,
  KID, precision/recall and density/coverage, sliced W1) on the features ganlab/evaluation/image.py
  extracts; inception.py, inception_score.py: Inception-v3 features, FID and IS; mmd.py: the
  Gaussian-kernel MMD (2-D samples, classifier and Inception features);
- jacobian.py: products with G's Jacobian dG/dz, and its smallest singular value;
- wasserstein.py: exact empirical W1/W2 (numpy/scipy only, so the background worker can import
  it without torch);
- classifier.py, classifier_training.py: the mode classifier of MNIST-like data.

`REGISTRY` below names every number an evaluation reports, once: its better direction (for the
report's verdicts; None: a diagnostic without one, a verdict on it says "higher" or "lower"), its one
description (the docs' metric lists are generated from it: `python -m ganlab.metrics.docs`), and, per
protocol that reports it ("toy": 2-D mixtures, "image"), the function that computes it. The
evaluators' metric columns, `ganlab report` and the verdicts read it. This module imports nothing
heavy, so that the report and the worker read it without torch: the built-in functions are named by
`FunctionRef`s, imported on first call.

A function registered `on_samples` is called by every evaluator of that protocol, after the metrics
that need G and D: `function(fake, real, data) -> {name: number}` (tensors of one evaluation's generated
and real samples, on the training device, and the dataset; `sample_metrics`). The 2-D mode coverage
goes this way; a metric of one's own is one such function plus `register(Metric(...))`. The others are
called by the evaluator with what it holds (D's outputs, features of the reference sample, ...).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class FunctionRef:
    """A function of a module under ganlab.metrics (or a full module path), imported on first call."""

    path: str  # "module.function"

    def resolve(self) -> Callable:
        module, name = self.path.rsplit(".", 1)
        try:
            found = importlib.import_module(f"ganlab.metrics.{module}")
        except ModuleNotFoundError:
            found = importlib.import_module(module)
        return getattr(found, name)

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True)
class Computed:
    """How one protocol's evaluator gets a metric: `function` computes it; `on_samples`: the evaluator
    calls function(fake, real, data) through `sample_metrics`. function=None: the evaluator measures it
    itself (a wall clock)."""

    function: Callable | None
    on_samples: bool = False

    def where(self) -> str:
        """module.function, under ganlab.metrics where it is there (the docs' lists)."""
        name = str(self.function) if isinstance(self.function, FunctionRef) else \
            f"{self.function.__module__}.{self.function.__qualname__}"
        return name.removeprefix("ganlab.metrics.") + ("(fake, real, data)" if self.on_samples else "")


@dataclass(frozen=True)
class Metric:
    name: str
    better: str | None              # "higher", "lower", or None (no better side)
    meaning: str                    # the one description (docs/cli.md's and docs/images.md's lists)
    computed: Mapping[str, Computed]  # protocol -> how its evaluator computes it

    @property
    def protocols(self) -> tuple[str, ...]:
        return tuple(self.computed)


def on_samples(function: Callable | str) -> Computed:
    """Computed by function(fake, real, data), called by the evaluator's sample_metrics."""
    return Computed(FunctionRef(function) if isinstance(function, str) else function, on_samples=True)


def by_evaluator(function: str | None) -> Computed:
    """Computed by the evaluator, which calls `function` (module.function under ganlab.metrics) itself."""
    return Computed(None if function is None else FunctionRef(function))


_COVERAGE = on_samples("modes.coverage_of_samples")
_CLASSES = by_evaluator("classes.classifier_mode_metrics")  # stacked or plain, raw and corrected, bounds
_CORRECTED = _CLASSES  # which calls confusion.corrected_modes
_BOUNDS = _MATCHED = _CLASSES  # which calls confusion.count_bounds and matched_confusion.match_confusion
_GAP, _JACOBIAN = by_evaluator("critic.critic_gap"), by_evaluator("jacobian.smallest_singular_value")
_W, _MMD = by_evaluator("wasserstein.empirical_wasserstein"), by_evaluator("mmd.mmd_metrics")
_FID, _KID = by_evaluator("feature_cache.fid_from_features"), by_evaluator("kid.kernel_inception_distance")
_PRDC, _SWD, _IS = by_evaluator("prdc.prdc"), by_evaluator("sliced.sliced_wasserstein"), \
    by_evaluator("inception_score.inception_score")

# In the order tables and TensorBoard's HParams show them.
REGISTRY: dict[str, Metric] = {m.name: m for m in (
    Metric("modes_captured", "higher", "2-D: modes that are the nearest mode of at least one high-quality sample; "
           "images: classes (stacked: triples) the classifier gives at least one sample", {"toy": _COVERAGE, "image": _CLASSES}),
    Metric("high_quality_pct", "higher", "% of samples within 3 std of their nearest mode", {"toy": _COVERAGE}),
    Metric("reverse_kl", "lower", "KL(p_gen(mode) || uniform), p over all samples by nearest mode (2-D) or label "
           "(images), 0 log 0 = 0", {"toy": _COVERAGE, "image": _CLASSES}),
    Metric("reverse_kl_hq", "lower", "the same KL over the high-quality samples only (PacGAN's 2-D logger); null when "
           "no sample is high quality", {"toy": _COVERAGE}),
    Metric("critic_gap", None, "E[D(real)] - E[D(fake)] on the evaluation's samples: a W1 estimate only for a "
           "Lipschitz critic (wgan, wgan_gp)", {"toy": _GAP, "image": _GAP}),
    Metric("wasserstein1", "lower", "exact empirical W1 between the first eval.w_samples generated and data points "
           "(exact optimal transport)", {"toy": _W}),
    Metric("wasserstein2", "lower", "exact empirical W2, the same points", {"toy": _W}),
    Metric("mmd", "lower", "unbiased Gaussian-kernel MMD² between the same points, at the median heuristic's "
           "bandwidth on a fixed data sample (one kernel for every run on the dataset)", {"toy": _MMD}),
    Metric("mmd_multiscale", "lower", "the same MMD², mean over 1/4, 1/2, 1, 2 and 4 x that bandwidth", {"toy": _MMD}),
    Metric("jacobian_sigma_min", None, "mean smallest singular value of dG/dz over the first codes (near 0: G "
           "squeezes z locally)", {"toy": _JACOBIAN, "image": _JACOBIAN}),
    Metric("eval_seconds", None, "the evaluation's wall time", {"image": by_evaluator(None)}),
    Metric("modes_above_share", "higher", "modes holding at least 10 % of the uniform share of samples",
           {"image": _CLASSES}),
    Metric("modes_captured_real", None, "modes_captured of the real reference sample: the ceiling", {"image": _CLASSES}),
    Metric("modes_corrected", "higher", "modes holding at least 30 % of the uniform share, counted after the "
           "classifier's confusion is deconvolved (EM, docs/images.md)", {"image": _CORRECTED}),
    Metric("reverse_kl_corrected", "lower", "reverse KL of the deconvolved histogram", {"image": _CORRECTED}),
    Metric("modes_corrected_low", None, "the corrected count's low end: modes above 50 % of the uniform share, 5 "
           "sigma above the leak with C's sampling error counted twice (docs/images.md)", {"image": _BOUNDS}),
    Metric("modes_corrected_high", None, "the corrected count's high end: every mode whose mass is not 2 sigma "
           "below the 30 % floor (docs/images.md)", {"image": _BOUNDS}),
    Metric("matched_blur", None, "blur sigma (px) of the degraded real images whose confusion corrects the counts: "
           "the samples' look, by their power spectrum (docs/images.md)", {"image": _MATCHED}),
    Metric("matched_noise", None, "noise std of the degraded real images whose confusion corrects the counts",
           {"image": _MATCHED}),
    Metric("modes_corrected_real", None, "modes_corrected of the real reference sample: the ceiling",
           {"image": _CORRECTED}),
    Metric("domain_mmd", "lower", "Gaussian-kernel MMD² on the mode classifier's features", {"image": _MMD}),
    Metric("domain_mmd_multiscale", "lower", "the same, mean over 1/4..4 x the median bandwidth", {"image": _MMD}),
    Metric("domain_fid", "lower", "FID on the mode classifier's features (not Inception's)", {"image": _FID}),
    Metric("kid", "lower", "kernel inception distance on the classifier's features (unbiased MMD², cubic kernel)",
           {"image": _KID}),
    Metric("kid_std", None, "KID's standard deviation over subsets", {"image": _KID}),
    Metric("precision", "higher", "improved precision (k = 3) on the classifier's features", {"image": _PRDC}),
    Metric("recall", "higher", "improved recall (k = 3)", {"image": _PRDC}),
    Metric("density", "higher", "density (k = 5)", {"image": _PRDC}),
    Metric("coverage", "higher", "coverage (k = 5)", {"image": _PRDC}),
    Metric("swd", "lower", "sliced W1 on the classifier's features", {"image": _SWD}),
    Metric("swd_pixels", "lower", "sliced W1 on raw pixels (data without a mode classifier)", {"image": _SWD}),
    Metric("fid", "lower", "Inception FID (pytorch-fid's network and preprocessing)", {"image": _FID}),
    Metric("inception_score", "higher", "Inception Score over 10 splits", {"image": _IS}),
    Metric("inception_score_std", None, "the Inception Score's standard deviation over the splits", {"image": _IS}),
    Metric("inception_mmd", "lower", "Gaussian-kernel MMD² on the Inception pool3 features", {"image": _MMD}),
    Metric("inception_mmd_multiscale", "lower", "the same, mean over 1/4..4 x the median bandwidth", {"image": _MMD}),
    Metric("inception_kid", "lower", "kernel inception distance on the Inception pool3 features (unbiased MMD², "
           "cubic kernel; the features FID reads, no second pass)", {"image": _KID}),
    Metric("inception_kid_std", None, "inception_kid's standard deviation over subsets", {"image": _KID}),
    Metric("inception_precision", "higher", "improved precision (k = 3) on the Inception pool3 features", {"image": _PRDC}),
    Metric("inception_recall", "higher", "improved recall (k = 3) on the Inception pool3 features", {"image": _PRDC}),
    Metric("inception_density", "higher", "density (k = 5) on the Inception pool3 features", {"image": _PRDC}),
    Metric("inception_coverage", "higher", "coverage (k = 5) on the Inception pool3 features", {"image": _PRDC}),
)}


def register(metric: Metric) -> Metric:
    """Add a metric to the registry (a metric of one's own, before the run starts)."""
    REGISTRY[metric.name] = metric
    return metric


def sample_metrics(protocol: str, fake, real, data) -> dict:
    """The registered on-samples metrics of `protocol`, each function called once (a function may
    give several registered names), merged."""
    out: dict = {}
    for computed in dict.fromkeys(m.computed[protocol] for m in REGISTRY.values()
                                  if protocol in m.computed and m.computed[protocol].on_samples):
        out.update(computed.function(fake, real, data))
    return out


def protocol_metrics(protocol: str) -> tuple[str, ...]:
    """The registered metrics an evaluator of `protocol` ("toy" or "image") may report, in order."""
    return tuple(name for name, m in REGISTRY.items() if protocol in m.protocols)


# What a 2-D evaluation reports (ganlab/evaluation/toy.py), in the order tables show them.
TOY_METRICS = protocol_metrics("toy")

# Each metric's better direction, for the report's verdicts.
BETTER = {name: m.better for name, m in REGISTRY.items() if m.better is not None}

# The distributions every run is measured against (summary.json `references`): a G that
# learned nothing, a blob that knows only where the data is (2-D only), and the data (the ceiling).
# Images with a mode classifier add real images degraded as generated ones are: full coverage, blurry or noisy.
REFERENCES = {"untrained": "untrained G", "gaussian": "Gaussian fit", "data": "real data",
              "real_blurred": "real data, blurred", "real_noised": "real data, noised"}
