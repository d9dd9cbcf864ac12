"""One-shot, offline analysis of a model, a state_dict or a checkpoint file."""

from __future__ import annotations

import warnings
from typing import Any

from .pipeline.settings import Settings
from .pipeline.target import load_target
from .table.results import Results

__all__ = ["analyze", "load_target"]


def analyze(obj: Any, *, settings: Settings | None = None, **options: Any) -> Results:
    """Analyze every weight matrix of a model once (step 0).

    Args:
        obj: an ``nn.Module`` (DataParallel/DDP wrappers are unwrapped), a state_dict, or a path to a
            checkpoint (``.pt/.pth/.bin/.ckpt`` loaded with ``weights_only=True``, or ``.safetensors``).
        settings: a ready :class:`~spectra.pipeline.Settings` (keyword options override it).
        **options: any :class:`~spectra.pipeline.Settings` option. The common ones:

            * ``analyzers``: names or :class:`~spectra.Analyzer` instances (default ``("esd", "tail")``;
              analyzers that need an update, like ``"alignment"``, do not run offline);
            * ``layers``: a name glob/regex, module type(s) or a predicate (see :mod:`spectra.layers`);
            * ``fit``: the ``tail`` analyzer's method (``"csn"``, ``"ww"``, ``"hill"``);
            * ``analyzer_options``: options per analyzer, e.g. ``{"esd": {"spectrum": True}}``;
            * ``conv_slices`` (``"pooled"``/``"separate"``), ``normalize``, ``esd_method``;
            * ``on_error`` (``"warn"``, ``"raise"``, ``"ignore"``), ``run``, ``tags``, ``log_dir``;
            * ``progress`` (a tqdm bar; ``None``: on a terminal for many layers), ``blas_threads``;
            * ``plugins``, ``plugin_manager``;
            * ``distributed`` (``"auto"``, ``"shard"``, ``"rank0"``: every rank calls ``analyze``).

    Returns:
        :class:`~spectra.Results` with ``step = 0``; ``results.layers`` lists every parameter, with the skip
        reason for those not analyzed. The model is never modified.

    Raises:
        TypeError / ValueError: a bad option (the message names it and what is allowed) or target.
    """
    from .pipeline.pipeline import Pipeline

    settings = Settings.build("analyze", settings, **options)
    pipeline = Pipeline(settings, load_target(obj), source="analyze")
    try:
        pipeline.check_consistent(step=0, what="spectra.analyze settings")
        if not pipeline.entries:
            warnings.warn("spectra.analyze: nothing to analyze (see results.layers for why each parameter was "
                          "skipped)", RuntimeWarning, stacklevel=2)
            return Results(layers=pipeline.layer_rows, attrs=pipeline.attrs)
        weight_only = [a for a in pipeline.analyzers if set(a.needs) <= {"weight"}]
        records = pipeline.run(0, weight_only)
    finally:
        pipeline.close()
    return Results(records, layers=pipeline.layer_rows, attrs=pipeline.attrs)
