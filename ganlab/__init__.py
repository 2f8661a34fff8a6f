"""ganlab: an experiment runner for studying GAN mode collapse and the remedies against it."""

__version__ = "0.1.0"
