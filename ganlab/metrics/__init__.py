"""Metrics: small functions of samples that return flat dicts of numbers.

- modes.py: mode coverage on Gaussian mixtures (torch, runs on the training device);
- frechet.py, kid.py, prdc.py: feature-space metrics for images (FID's Fréchet distance, KID,
  precision/recall and density/coverage) on the features ganlab/image_evaluation.py extracts;
- jacobian.py: products with G's Jacobian dG/dz, and its smallest singular value;
- wasserstein.py: exact empirical W1/W2 (numpy/scipy only, so the background evaluator can import
  it without torch).

Each metric's better direction (for the report's verdicts) is in BETTER below: one table, next to the
metrics it describes. A metric missing from it (the D gap, σ_min of dG/dz, a remedy's diagnostic)
has no better side: a verdict on it says "higher" or "lower".
"""

# What a 2-D evaluation reports (ganlab/evaluation.py), in the order tables show them.
TOY_METRICS = ("modes_captured", "high_quality_pct", "reverse_kl", "reverse_kl_hq", "critic_gap", "wasserstein1",
               "wasserstein2", "jacobian_sigma_min")

# The distributions every run is measured against (summary.json `references`, DESIGN 3): a G that
# learned nothing, a blob that knows only where the data is (2-D only), and the data (the ceiling).
REFERENCES = {"untrained": "untrained G", "gaussian": "Gaussian fit", "data": "real data"}

BETTER = {
    # 2-D mixtures (VEEGAN / PacGAN protocol) and classifier modes on images
    "modes_captured": "higher", "modes_above_share": "higher", "high_quality_pct": "higher",
    "reverse_kl": "lower", "reverse_kl_hq": "lower",
    # corrected for the classifier's confusion (metrics/confusion.py); the `_real` ceilings have no side
    "modes_corrected": "higher", "reverse_kl_corrected": "lower",
    # distances to the data
    "wasserstein1": "lower", "wasserstein2": "lower", "swd": "lower", "swd_pixels": "lower",
    "fid": "lower", "domain_fid": "lower", "kid": "lower",
    # image quality and diversity
    "inception_score": "higher", "precision": "higher", "recall": "higher", "density": "higher", "coverage": "higher",
}
