"""Metrics: small functions of samples that return flat dicts of numbers.

- modes.py: mode coverage on Gaussian mixtures (torch, runs on the training device);
- wasserstein.py: exact empirical W1/W2 (numpy/scipy only, so the background evaluator can import
  it without torch).
"""
