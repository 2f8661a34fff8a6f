"""Datasets. Each samples on the training device: there is no DataLoader in the loop."""
