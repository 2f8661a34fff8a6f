"""Metrics: small functions of samples that return flat dicts of numbers.

- modes.py: mode coverage on Gaussian mixtures (torch, runs on the training device);
- frechet.py, kid.py, prdc.py: feature-space metrics for images (FID's Fréchet distance, KID,
  precision/recall and density/coverage), not yet wired to a feature extractor (issue 6);
- jacobian.py: products with G's Jacobian dG/dz, and its smallest singular value;
- wasserstein.py: exact empirical W1/W2 (numpy/scipy only, so the background evaluator can import
  it without torch).
"""
