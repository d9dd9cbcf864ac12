"""spectra_twolayer: the bundled reproduction of "Crafting Heavy-Tails in Weight Matrix Spectrum without
Gradient Noise" (Kothapalli et al., 2024) — two-layer tanh networks trained with full-batch GD or Adam.

Run it with ``spectra reproduce`` or ``spectra.experiments.run("twolayer", preset="quick")``. The setting, metrics,
claims and presets are described in ``PAPER_NOTES.md`` next to this file; code and tests cite its sections as
"PAPER_NOTES.md §x". Every spectral metric comes from :class:`spectra.SpectraMonitor` and the library's analyzers;
the paper's non-spectral metrics are analyzers in :mod:`spectra_twolayer.metrics`. Every claim is judged on every
repeat (:mod:`spectra_twolayer.claims`).
"""

from __future__ import annotations

__all__ = ["run_twolayer", "TwoLayerReport"]


def __getattr__(name: str):
    if name in __all__:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'spectra_twolayer' has no attribute {name!r}")
