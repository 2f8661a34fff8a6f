"""Metrics: small functions of samples that return flat dicts of numbers.

- modes.py: mode coverage on Gaussian mixtures (torch, runs on the training device);
- jacobian.py: products with G's Jacobian dG/dz, and its smallest singular value;
- wasserstein.py: exact empirical W1/W2 (numpy/scipy only, so the background evaluator can import
  it without torch).
"""
