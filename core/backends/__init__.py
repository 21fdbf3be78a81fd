"""Backends other than this process's hooks: the model behind nnsight traces, here or on NDIF.

- ``nnsight_backend``: ``NNsightBackend`` (the handle operations it implements), ``through_nnsight``,
  ``ndif_handle``, ``check_ndif``;
- ``reductions``: the lens reduced inside a trace (``lens_reductions``, ``reduced_lens``);
- ``sweep``: the head sweep's ablations inside traces, only logit differences coming back.

This package sits above the lens and the interventions (it builds ``LensResult``s and ``SweepNumbers``) and
below the analyses, which never import it: they call the handle, whose backend is one of these.
"""

from core.backends.nnsight_backend import (
    BACKENDS, NDIF_ANALYSES, NNsightBackend, check_ndif, ndif_handle, nnsight_backend, through_nnsight,
)
from core.backends.reductions import LensReductions, lens_reductions, reduced_lens

__all__ = ["BACKENDS", "NDIF_ANALYSES", "LensReductions", "NNsightBackend", "check_ndif", "lens_reductions",
           "ndif_handle", "nnsight_backend", "reduced_lens", "through_nnsight"]
