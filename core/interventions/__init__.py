"""The local backend of the model handle: every hook on the model lives in this package (and in ``core.backends``
for nnsight). Importing it registers the "local" backend, so a loaded ``ModelHandle`` answers every operation.

Analyses never call the functions of these modules: they call the handle's operations (``handle.record``,
``handle.run_variants``, …). What they take from here is the vocabulary of interventions on heads and MLPs:

- ``Component`` (a head ``L3H1`` or an MLP ``MLP3``), ``heads(handle)``, ``mlps(handle)``;
- ``Activations`` (what every component writes: heads [layer, batch, pos, head, head_dim], MLPs
  [layer, batch, pos, d_model]) and ``replacement(kind, corrupt, n_prompts, seed)``: the values ablated components
  take (``ABLATIONS``: mean, zero, resample; ``check_ablation`` for settings that name one);
- ``CleanRun`` (``handle.record_run``), ``Attribution`` (``handle.attribution``), ``Gradients``
  (``handle.gradients``), ``SweepNumbers`` (``handle.ablation_sweep``).

Every prompt of a batch given to the component interventions must have the same token length (``UserError``
otherwise); the final residual is the last decoder layer's output at the last position, before the final norm.
"""

from core.interventions.access import Gradients
from core.interventions.components import (
    ABLATIONS, Activations, Component, check_ablation, heads, mlps, replacement, zero_activations,
)
from core.interventions.local import LocalBackend
from core.interventions.patching import Attribution
from core.interventions.recorded import CleanRun
from core.interventions.sweep import SweepNumbers
from core.models.handle import Batch, register_backend

register_backend("local", LocalBackend)

__all__ = [
    "ABLATIONS", "Activations", "Attribution", "Batch", "CleanRun", "Component", "Gradients", "LocalBackend",
    "SweepNumbers", "check_ablation", "heads", "mlps", "replacement", "zero_activations",
]
