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

`REGISTRY` below names every number an evaluation reports: which protocol reports it, its better
direction (for the report's verdicts; None: a diagnostic without one, a verdict on it says
"higher" or "lower"), the function that computes it and what it means. The evaluators' metric
columns, `ganlab report` and the verdicts read it. The table lives in this module, which imports
nothing heavy, so that the report reads it without torch.

A new metric of the samples is one function plus its entry here, with `on_samples=True`:
`function(fake, real, data) -> {name: number}` (tensors of one evaluation's generated and real
samples, on the training device, and the dataset), called by every evaluator of its protocols after
its own metrics (`sample_metrics`). `function` names it as `module.function` under ganlab.metrics,
or by a full module path (a metric of one's own, registered with `register`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    better: str | None            # "higher", "lower", or None (no better side)
    protocols: tuple[str, ...]    # the evaluators that report it: "toy" (2-D mixtures), "image"
    function: str                 # where it is computed: module.function under ganlab.metrics (or the evaluator)
    meaning: str
    on_samples: bool = False      # True: the evaluators call function(fake, real, data) for it (see above)


_TOY, _IMAGE, _BOTH = ("toy",), ("image",), ("toy", "image")

# In the order tables and TensorBoard's HParams show them.
REGISTRY: dict[str, Metric] = {m.name: m for m in (
    Metric("modes_captured", "higher", _BOTH, "modes.mode_coverage | classes.class_metrics",
           "2-D: modes with a high-quality sample; images: classes (triples) the classifier finds"),
    Metric("high_quality_pct", "higher", _TOY, "modes.mode_coverage", "% of samples within 3 std of a mode"),
    Metric("reverse_kl", "lower", _BOTH, "modes.mode_coverage | classes.class_metrics",
           "KL(p_gen(mode) || uniform), all samples by nearest mode (2-D) or label (images)"),
    Metric("reverse_kl_hq", "lower", _TOY, "modes.mode_coverage", "the same KL over the high-quality samples only"),
    Metric("critic_gap", None, _BOTH, "evaluator", "E[D(real)] - E[D(fake)]; a W1 estimate only for a Lipschitz critic"),
    Metric("wasserstein1", "lower", _TOY, "wasserstein.empirical_wasserstein", "exact empirical W1 to the data"),
    Metric("wasserstein2", "lower", _TOY, "wasserstein.empirical_wasserstein", "exact empirical W2 to the data"),
    Metric("mmd", "lower", _TOY, "mmd.mmd_metrics", "Gaussian-kernel MMD² (unbiased), median-heuristic bandwidth"),
    Metric("mmd_multiscale", "lower", _TOY, "mmd.mmd_metrics", "the same MMD², mean over 1/4..4 x the median bandwidth"),
    Metric("jacobian_sigma_min", None, _BOTH, "jacobian.smallest_singular_value",
           "mean smallest singular value of dG/dz (near 0: G squeezes z locally)"),
    Metric("eval_seconds", None, _IMAGE, "evaluator", "the evaluation's wall time"),
    Metric("modes_above_share", "higher", _IMAGE, "classes.class_metrics",
           "modes holding at least 10 % of the uniform share of samples"),
    Metric("modes_captured_real", None, _IMAGE, "classes.class_metrics", "modes_captured of real data: the ceiling"),
    Metric("modes_corrected", "higher", _IMAGE, "confusion.corrected_modes",
           "modes, the classifier's confusion deconvolved (EM)"),
    Metric("reverse_kl_corrected", "lower", _IMAGE, "confusion.corrected_modes", "reverse KL of the deconvolved histogram"),
    Metric("modes_corrected_real", None, _IMAGE, "confusion.corrected_modes", "modes_corrected of real data: the ceiling"),
    Metric("domain_mmd", "lower", _IMAGE, "mmd.mmd_metrics", "Gaussian-kernel MMD² on the classifier's features"),
    Metric("domain_mmd_multiscale", "lower", _IMAGE, "mmd.mmd_metrics", "the same, mean over 1/4..4 x the median bandwidth"),
    Metric("domain_fid", "lower", _IMAGE, "frechet.frechet_distance", "FID on the mode classifier's features"),
    Metric("kid", "lower", _IMAGE, "kid.kernel_inception_distance", "kernel inception distance (unbiased MMD², cubic kernel)"),
    Metric("kid_std", None, _IMAGE, "kid.kernel_inception_distance", "KID's standard deviation over subsets"),
    Metric("precision", "higher", _IMAGE, "prdc.prdc", "improved precision (k = 3)"),
    Metric("recall", "higher", _IMAGE, "prdc.prdc", "improved recall (k = 3)"),
    Metric("density", "higher", _IMAGE, "prdc.prdc", "density (k = 5)"),
    Metric("coverage", "higher", _IMAGE, "prdc.prdc", "coverage (k = 5)"),
    Metric("swd", "lower", _IMAGE, "sliced.sliced_wasserstein", "sliced W1 on the classifier's features"),
    Metric("swd_pixels", "lower", _IMAGE, "sliced.sliced_wasserstein", "sliced W1 on raw pixels"),
    Metric("fid", "lower", _IMAGE, "frechet.frechet_distance", "Inception FID (pytorch-fid preprocessing)"),
    Metric("inception_score", "higher", _IMAGE, "inception_score.inception_score", "IS over 10 splits"),
    Metric("inception_score_std", None, _IMAGE, "inception_score.inception_score", "IS's standard deviation"),
    Metric("inception_mmd", "lower", _IMAGE, "mmd.mmd_metrics", "Gaussian-kernel MMD² on the Inception pool3 features"),
    Metric("inception_mmd_multiscale", "lower", _IMAGE, "mmd.mmd_metrics",
           "the same, mean over 1/4..4 x the median bandwidth"),
)}


def register(metric: Metric) -> Metric:
    """Add a metric to the registry (a metric of one's own, before the run starts)."""
    REGISTRY[metric.name] = metric
    return metric


def resolve(function: str):
    """The callable a registry entry names: `module.function` under ganlab.metrics, else a full path."""
    import importlib

    module, name = function.rsplit(".", 1)
    try:
        found = importlib.import_module(f"ganlab.metrics.{module}")
    except ModuleNotFoundError:
        found = importlib.import_module(module)
    return getattr(found, name)


def sample_metrics(protocol: str, fake, real, data) -> dict:
    """The registered on-samples metrics of `protocol`, each function called once (a function may
    give several registered names), merged."""
    out: dict = {}
    for function in dict.fromkeys(m.function for m in REGISTRY.values() if m.on_samples and protocol in m.protocols):
        out.update(resolve(function)(fake, real, data))
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
