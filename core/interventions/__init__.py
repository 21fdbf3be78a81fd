"""Head and MLP interventions: ablation, activation patching, attribution patching. Every hook lives here.

``from core import interventions as iv`` gives the whole toolkit:

- ``Component`` (a head ``L3H1`` or an MLP ``MLP3``), ``heads(handle)``, ``mlps(handle)``;
- ``Activations`` (what every component writes: heads [layer, batch, pos, head, head_dim], MLPs
  [layer, batch, pos, d_model]) and ``replacement(kind, corrupt, n_prompts, seed)``: the values
  ablated components take (``ABLATIONS``: mean, zero, resample;
  ``check_ablation`` for settings that name one);
- clean passes: ``capture(handle, batch) -> Activations``; ``record(handle, batch) -> CleanRun``
  (also every layer's call, so ablated copies can resume from any layer);
- ablations: ``run_variants(handle, run, values, variants) -> [variant, batch, d_model]`` (many per
  batched pass), ``forward_with(handle, batch, values, components) -> [batch, d_model]`` (one plain pass);
- ``attribution(handle, batch, values, metric) -> Attribution``: every component's estimated effect
  from one forward and one backward pass;
- single heads: ``attention_pattern(handle, batch, layer) -> [batch, head, query, key]``,
  ``after_first_mlp(handle, token_ids) -> [token, d_model]``, ``head_outputs(handle, residual, layers)
  -> [layer, head, n, d_model]`` (OV circuits);
- ``replacing`` / ``capturing``: the hook contexts the above are built from, for new interventions.

Every prompt of a batch given here must have the same token length (``UserError`` otherwise); the
final residual is the last decoder layer's output at the last position, before the final norm.
"""

from core.interventions.attention import after_first_mlp, attention_pattern, head_outputs
from core.interventions.components import (
    ABLATIONS, Activations, Component, check_ablation, heads, mlps, replacement, zero_activations,
)
from core.interventions.hooks import capturing, replacing
from core.interventions.patching import Attribution, attribution
from core.interventions.recorded import CleanRun, capture, record
from core.interventions.variants import forward_with, run_variants
from core.models.handle import Batch

__all__ = [
    "ABLATIONS", "Activations", "Attribution", "Batch", "CleanRun", "Component", "after_first_mlp", "attention_pattern",
    "attribution", "capture", "capturing", "check_ablation", "forward_with", "head_outputs", "heads", "mlps", "record", "replacement",
    "replacing", "run_variants", "zero_activations",
]
