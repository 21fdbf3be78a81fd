"""Attribution patching: a first-order estimate of every component's ablation effect from one forward and one backward pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from core.errors import UserError
from core.interventions.components import Activations
from core.interventions.hooks import capturing, run_body, same_length
from core.models.handle import Batch, ModelHandle


@dataclass
class Attribution:
    """First-order estimates of the change of a metric (mean over prompts) when each component takes its replacement value.

    ``heads``: Float[Tensor, "layer head"]; ``mlps``: Float[Tensor, "layer"]; ``metric``: Float[Tensor, "batch"]
    (the clean metric per prompt). Estimate = sum over prompts and positions of (value − clean) · ∂metric/∂activation
    (the metric being the mean over prompts).
    """

    metric: torch.Tensor
    heads: torch.Tensor
    mlps: torch.Tensor


def attribution(
    handle: ModelHandle,
    batch: Batch,
    values: Activations,
    metric: Callable[[torch.Tensor], torch.Tensor],
) -> Attribution:
    """Attribution patching from ONE forward and ONE backward pass on the clean prompts ``batch``.

    ``values`` are the replacement activations (batch axis 1 or ``len(batch.lengths)``, same positions);
    ``metric`` maps the last layer's output at the last position, Float[Tensor, "batch d_model"], to one
    number per prompt, Float[Tensor, "batch"] (differentiably). Gradients flow from the embeddings on;
    weights get none.
    """
    same_length(batch)
    if values.n_positions != batch.input_ids.shape[1]:
        raise UserError("the replacement activations and the prompts have different token lengths")
    embed = handle.adapter.embed(handle.model)

    def track_from_embeddings(module, args, output):
        return output.detach().requires_grad_(True)

    with handle.lock, torch.inference_mode(False), torch.enable_grad():
        hook = embed.register_forward_hook(track_from_embeddings)
        try:
            with capturing(handle, keep_graph=True) as store:
                run_body(handle, batch)
        finally:
            hook.remove()
        per_prompt = metric(store["final"][:, -1]).float()
        inputs = store["heads"] + store["mlps"]
        grads = torch.autograd.grad(per_prompt.mean(), inputs, allow_unused=True)
    n_layers, n_heads = handle.n_layers, handle.n_heads
    head_change = torch.zeros(n_layers, n_heads)
    mlp_change = torch.zeros(n_layers)
    with torch.no_grad():
        for layer in range(n_layers):
            a, g = store["heads"][layer].detach(), grads[layer]
            if g is not None:
                shape = (*a.shape[:2], n_heads, a.shape[-1] // n_heads)
                delta = values.heads[layer].to(a.device, a.dtype) - a.reshape(shape)
                head_change[layer] = (delta * g.reshape(shape)).float().sum(dim=(0, 1, 3)).cpu()
            a, g = store["mlps"][layer].detach(), grads[n_layers + layer]
            if g is not None:
                mlp_change[layer] = ((values.mlps[layer].to(a.device, a.dtype) - a) * g).float().sum().cpu()
    return Attribution(metric=per_prompt.detach().cpu(), heads=head_change, mlps=mlp_change)
