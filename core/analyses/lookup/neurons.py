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

from core.analyses.lookup.answers import make_batch
from core.errors import UserError
from core.models.handle import ModelHandle
from core.models.sites import Site
from core.tokens import token_str

def top_neurons(handle: ModelHandle, ids: Sequence[int], position: int, per_layer: int = 5,
                top_tokens: int = 5) -> pd.DataFrame:
    """Columns: layer, neuron, activation, contribution (|activation| · ‖value‖), promotes (the top tokens,
    joined by ' · '), sorted by layer then contribution."""
    if not 0 <= position < len(ids):
        raise UserError(f"position {position} is outside the prompt's {len(ids)} tokens")
    batch = make_batch(handle, [ids])
    sites = [Site("neurons", layer) for layer in range(handle.n_layers)]
    index = torch.tensor([[batch.input_ids.shape[1] - len(ids) + position]])
    recorded = handle.record(batch, sites, index=index)
    picked = []  # (layer, neuron, activation, contribution, direction as the residual receives it)
    with torch.inference_mode():
        for layer, site in enumerate(sites):
            activation = recorded[site][0, 0].float().cpu()
            values = handle.weights.neuron_out(layer).cpu()  # [neuron, d_model]
            contribution = activation.abs() * values.norm(dim=-1)
            post = handle.weights.mlp_post_gamma(layer)  # Gemma 2/3 scale what the MLP writes
            post = 1.0 if post is None else post
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
