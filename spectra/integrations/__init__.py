"""Callbacks for the trainers researchers use; each needs only ``callbacks=[SpectraCallback(...)]``.

* :mod:`spectra.integrations.lightning`: ``SpectraCallback`` for PyTorch Lightning (``lightning`` or
  ``pytorch_lightning``).
* :mod:`spectra.integrations.transformers`: ``SpectraCallback`` for the Hugging Face ``Trainer``.

Both are drivers built on :class:`~spectra.pipeline.Settings` and :class:`~spectra.pipeline.Pipeline`
(:mod:`spectra.integrations._driver`). Importing this package imports neither framework; importing one of the
modules without its framework installed raises an ``ImportError`` naming the extra
(``pip install "spectra[integrations]"``).
"""

__all__ = ["lightning", "transformers"]
