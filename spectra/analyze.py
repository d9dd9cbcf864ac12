"""One-shot, offline analysis of a model, a state_dict or a checkpoint file."""

from __future__ import annotations

import warnings
from typing import Any

from .pipeline.engine import runtime_needs
from .pipeline.settings import Settings
from .pipeline.target import load_target
from .table.results import Results

__all__ = ["analyze", "load_target"]


def analyze(obj: Any, *, settings: Settings | None = None, **options: Any) -> Results:
    """Analyze every weight matrix of a model once (step 0).

    Args:
        obj: an ``nn.Module`` (DataParallel/DDP/``torch.compile`` wrappers are unwrapped), a state_dict, or a
            path to a checkpoint (``.pt/.pth/.bin/.ckpt`` loaded with ``weights_only=True``, ``.safetensors``) or
            to a Hugging Face model directory, sharded or not (see :mod:`spectra.checkpoints`).
        settings: a ready :class:`~spectra.pipeline.Settings` (keyword options override it).
        **options: any :class:`~spectra.pipeline.Settings` option. The common ones:

            * ``analyzers``: names or :class:`~spectra.Analyzer` instances (default ``("esd", "tail")``, with
              ``base=`` ``("esd", "tail", "alignment")``; analyzers that need an update, like
              ``"alignment"``, run only with ``base=``; those whose update is optional, like ``"vectors"``
              with ``matrices=("weight", "update")``, run on the weights);
            * ``base``: a model, state_dict or checkpoint path to compare with: every layer also gets the
              rows of ΔW = W − W_base (``matrix="delta"``; ESD, tail, alignment with W_base's singular
              vectors; LoRA adapters merged, their ΔW taken as scaling·B·A), matched by name, with a
              ``skipped``/``failed`` row where the base lacks the layer or has another shape (see
              :mod:`spectra.pipeline.deltas`);
            * ``layers``: a name glob/regex, module type(s) or a predicate (see :mod:`spectra.layers`);
            * ``fit``: the ``tail`` analyzer's method (``"csn"``, ``"ww"``, ``"hill"``);
            * ``analyzer_options``: options per analyzer, e.g. ``{"esd": {"spectrum": True}}``;
            * ``conv_slices`` (``"pooled"``/``"separate"``), ``layer_rules`` (e.g. ``{"attention_heads": True}``
              for per-head attention views), ``normalize``, ``esd_method``;
            * ``on_error`` (``"warn"``, ``"raise"``, ``"ignore"``), ``run``, ``tags``, ``log_dir``;
            * ``progress`` (a tqdm bar; ``None``: on a terminal for many layers), ``blas_threads``;
            * ``plugins``, ``plugin_manager``;
            * ``distributed`` (``"auto"``, ``"shard"``, ``"rank0"``: every rank calls ``analyze``);
            * ``workers``: analyze the layer views in this many processes (``workers=1``, the default: in this
              process; a positive integer). The results are those of ``workers=1``, row for row (see
              :mod:`spectra.pipeline.pool`).

    Returns:
        :class:`~spectra.Results` with ``step = 0``; ``results.layers`` lists every parameter, with the skip
        reason for those not analyzed; with ``base=``, ``attrs["base"]`` describes the base (and
        ``attrs["lora"]`` the LoRA layers found). Neither the model nor the base is ever modified.

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
        # offline there is no update, unless a base stands in for W_{t-1}; a gradient is never required
        available = {"weight", "update"} if settings.base is not None else {"weight"}
        runnable = [a for a in pipeline.analyzers if runtime_needs(a) <= available]
        if settings.workers == 1:
            records = pipeline.run(0, runnable)
        else:
            from .pipeline.pool import run_with_workers

            records = run_with_workers(pipeline, 0, runnable, settings.workers)
    finally:
        pipeline.close()
    return Results(records, layers=pipeline.layer_rows, attrs=pipeline.attrs)
