"""ganlab: an experiment runner for studying GAN mode collapse and the remedies against it."""


def __getattr__(name: str):
    if name == "__version__":  # pyproject.toml's, its one source (ganlab/provenance.py)
        from ganlab.provenance import version

        return version()
    raise AttributeError(f"module 'ganlab' has no attribute {name!r}")
