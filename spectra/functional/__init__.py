"""Pure maths: spectra, power-law fits, Marchenko–Pastur helpers, norm metrics, alignment, decompositions,
tail tests (likelihood ratios, bootstrap), FARMS, the randomisation null and eigenvector localization.

No hooks, no I/O. Inputs are torch tensors or numpy arrays; outputs are numpy float64 arrays, floats or
frozen dataclasses. Submodules import lazily so ``import spectra`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

# ``esd`` is both a submodule and a function: import it eagerly so the function wins (numpy only, cheap)
from .esd import ESD_METHODS, esd, esd_pooled  # noqa: E402, F401

_EAGER = ("esd", "esd_pooled", "ESD_METHODS")
_EXPORTS = {
    "fit_power_law": "powerlaw",
    "TailFit": "powerlaw",
    "FIT_METHODS": "powerlaw",
    "hill_alpha": "powerlaw",
    "norm_metrics": "norms",
    "mp_edges": "mp",
    "mp_sigma2": "mp",
    "num_spikes": "mp",
    "count_outliers": "mp",
    "mp_softrank": "mp",
    "mp_fit": "mp",
    "MPFit": "mp",
    "top_svd": "alignment",
    "overlap_matrix": "alignment",
    "subspace_fraction": "alignment",
    "principal_angles": "alignment",
    "frobenius_cosine": "alignment",
    "stable_rank": "norms",
    "matrix_rank": "norms",
    "matrix_entropy": "norms",
    "tracy_widom_scale": "mp",
    "mp_median": "mp",
    "Decomposer": "decompose",
    "TorchDecomposer": "torch_decompose",
    "batched_eigvals": "torch_esd",
    "make_decomposer": "backend",
    "svd_from_factors": "lowrank",
    "gram_error_bound": "certify",
    "compare_distributions": "distributions",
    "TailComparison": "distributions",
    "loglikelihood_ratio": "distributions",
    "fit_exponential": "distributions",
    "fit_lognormal": "distributions",
    "fit_truncated_power_law": "distributions",
    "bootstrap_pvalue": "bootstrap",
    "bootstrap_samples": "bootstrap",
    "BootstrapPValue": "bootstrap",
    "farms_alpha": "farms",
    "farms_esd": "farms",
    "FarmsESD": "farms",
    "randomized_esd": "randomize",
    "shuffle_matrix": "randomize",
    "rand_distance": "randomize",
    "RandomizedESD": "randomize",
    "participation_ratio": "vectors",
    "localization_ratio": "vectors",
    "vector_localization": "vectors",
}

__all__ = sorted([*_EXPORTS, *_EAGER])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        mod = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(mod, name)
    raise AttributeError(f"module 'spectra.functional' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
