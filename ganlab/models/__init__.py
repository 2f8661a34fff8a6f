"""Generators and discriminators. A G maps (n, latent_dim) noise to data; a D maps data to (n,) scores."""
