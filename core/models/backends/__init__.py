"""Where a model's forward passes run: here (the default ``ModelHandle``), through nnsight traces, or on NDIF."""

from core.models.backends.nnsight_backend import BACKENDS, LensReductions, NNsightHandle, check_ndif, lens_reductions, through_nnsight

__all__ = ["BACKENDS", "LensReductions", "NNsightHandle", "check_ndif", "lens_reductions", "through_nnsight"]
