"""Remedies against mode collapse: one module each, all subclasses of `Remedy` (remedies/base.py)."""

from ganlab.remedies.base import Remedy

__all__ = ["Remedy"]
