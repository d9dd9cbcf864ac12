"""Analyzers: thin classes over :mod:`spectra.functional`, registered as plugins."""

from .base import Analyzer, Measurement

__all__ = ["Analyzer", "Measurement"]
