"""MLP neurons as key–value memories (Geva et al. 2021, "Transformer Feed-Forward Layers Are Key-Value Memories").

A neuron is one input unit of an MLP's output projection: its activation (the "key" matching the input)
scales one column of the projection (its "value" vector) added to the residual stream. At one position
(the last subject token), the neurons whose contribution |activation| · ‖value‖ is largest in each layer
are listed with the tokens their value vector, signed by the activation, promotes through the final
norm and the unembedding, as the logit lens reads the residual (after Gemma's post-MLP norm scale).
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch
from torch import nn

from core.analyses.lookup.answers import make_batch
from core.errors import UserError
from core.models.handle import ModelHandle
from core.tokens import token_str

OUT_PROJECTIONS = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "fc_out", "out_proj", "w2")


def out_projection(mlp: nn.Module) -> nn.Module:
    """The MLP's output projection (hidden units -> d_model)."""
    for name in OUT_PROJECTIONS:
        module = getattr(mlp, name, None)
        if isinstance(module, nn.Module) and hasattr(module, "weight"):
            return module
    raise UserError(f"cannot find the output projection of {type(mlp).__name__} (looked for {', '.join(OUT_PROJECTIONS)}): "
                    "its neurons cannot be listed")


def value_vectors(projection: nn.Module) -> torch.Tensor:
    """Float[Tensor, "neuron d_model"]: what each hidden unit writes (GPT-2's Conv1D stores [in, out])."""
    weight = projection.weight.detach().float()
    return weight if type(projection).__name__ == "Conv1D" else weight.T


def _scale(norm: nn.Module | None) -> torch.Tensor | float:
    """An RMS/LayerNorm's elementwise scale (Gemma stores scale - 1)."""
    weight = getattr(norm, "weight", None)
    if weight is None:
        return 1.0
    weight = weight.detach().float()
    return 1.0 + weight if type(norm).__name__.startswith("Gemma") else weight


def top_neurons(handle: ModelHandle, ids: Sequence[int], position: int, per_layer: int = 5,
                top_tokens: int = 5) -> pd.DataFrame:
    """Columns: layer, neuron, activation, contribution (|activation| · ‖value‖), promotes (the top tokens,
    joined by ' · '), sorted by layer then contribution."""
    if not 0 <= position < len(ids):
        raise UserError(f"position {position} is outside the prompt's {len(ids)} tokens")
    blocks = handle.adapter.layers(handle.model)
    projections = [out_projection(handle.adapter.mlp(block)) for block in blocks]
    captured: list[torch.Tensor | None] = [None] * len(blocks)

    def keep(layer):
        def hook(module, args):
            captured[layer] = args[0][0, -len(ids) + position].detach().float().cpu()
        return hook

    batch = make_batch(handle, [ids])
    handle.run_body_hooked(batch, lambda: [p.register_forward_pre_hook(keep(i)) for i, p in enumerate(projections)])
    picked = []  # (layer, neuron, activation, contribution, direction as the residual receives it)
    with torch.inference_mode():
        for layer, (projection, activation) in enumerate(zip(projections, captured)):
            values = value_vectors(projection).cpu()  # [neuron, d_model]
            contribution = activation.abs() * values.norm(dim=-1)
            branch = handle.adapter.mlp_branch(blocks[layer])
            post = _scale(branch) if branch is not handle.adapter.mlp(blocks[layer]) else 1.0
            for neuron in contribution.topk(min(per_layer, contribution.numel())).indices.tolist():
                direction = values[neuron] * activation[neuron].sign() * post
                picked.append((layer, neuron, float(activation[neuron]), float(contribution[neuron]), direction))
        promoted = []
        if picked:  # one decode for every layer's neurons: the unembedding is read once
            logits = handle.decode(torch.stack([d for *_, d in picked]))  # through the logit lens
            promoted = logits.topk(top_tokens, dim=-1).indices.cpu().tolist()
    rows = [{"layer": layer, "neuron": neuron, "activation": act, "contribution": contribution,
             "promotes": " · ".join(token_str(handle.tokenizer, t) for t in ids_)}
            for (layer, neuron, act, contribution, _), ids_ in zip(picked, promoted)]
    return pd.DataFrame(rows, columns=["layer", "neuron", "activation", "contribution", "promotes"])
