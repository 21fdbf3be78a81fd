"""Where a model's forward passes run: here (the default ``ModelHandle``), through nnsight traces, or on NDIF.

- ``nnsight_backend``: ``NNsightHandle``, ``through_nnsight``, ``ndif_handle``, ``check_ndif``;
- ``reductions``: the lens reduced inside a trace (``lens_reductions``, ``reduced_lens``, ``run_lens_on``);
- ``sweep``: the head sweep's ablations inside traces, only logit differences coming back.
"""

from core.models.backends.nnsight_backend import (
    BACKENDS, NDIF_ANALYSES, NNsightHandle, check_ndif, ndif_handle, reductions_only, through_nnsight,
)
from core.models.backends.reductions import LensReductions, lens_reductions, reduced_lens, run_lens_on

__all__ = ["BACKENDS", "NDIF_ANALYSES", "LensReductions", "NNsightHandle", "check_ndif", "lens_reductions", "ndif_handle",
           "reduced_lens", "reductions_only", "run_lens_on", "through_nnsight"]
