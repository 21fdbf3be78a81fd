"""What a model computes on a prompt: one layer's attention patterns and a 2-D PCA of the residual stream,
as DataFrames ready for charts. Both read the model through its ``ModelHandle`` (the Train page wraps
its TinyLM with ``core.models.loading.wrap_model``), with the hooks every analysis shares."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from core.analyses.train.tokenization import encode, token_labels
from core.errors import UserError
from core.models.handle import Batch, ModelHandle


def _prompt_ids(tokenizer, text: str, limit: int | None) -> list[int]:
    ids = encode(tokenizer, text)
    if not ids:
        raise UserError("the prompt is empty; type some text")
    return ids[-limit:] if limit else ids


def _batch(ids: list[int]) -> Batch:
    """One unpadded prompt."""
    input_ids = torch.tensor([ids])
    return Batch(input_ids, torch.ones_like(input_ids), [len(ids)])


def attention_frame(handle: ModelHandle, prompt: str, layer: int) -> pd.DataFrame:
    """One row per (head, query position, key position <= query) of block ``layer`` (0-based).

    Columns: layer, head, query_pos, key_pos, query_token, key_token, weight (softmax attention
    probability; each query's weights sum to 1). Prompts longer than the context keep their last
    context_length tokens.
    """
    ids = _prompt_ids(handle.tokenizer, prompt, handle.context_length)
    labels = [f"{i}:{t}" for i, t in enumerate(token_labels(handle.tokenizer, ids))]
    # pattern: [head, query, key]
    pattern = handle.attention_pattern(_batch(ids), layer)[0]
    head, query, key = torch.meshgrid(*(torch.arange(n) for n in pattern.shape), indexing="ij")
    causal = key <= query
    frame = pd.DataFrame(
        {
            "layer": layer,
            "head": head[causal].numpy(),
            "query_pos": query[causal].numpy(),
            "key_pos": key[causal].numpy(),
            "weight": pattern[causal].numpy(),
        }
    )
    frame["query_token"] = [labels[i] for i in frame["query_pos"]]
    frame["key_token"] = [labels[i] for i in frame["key_pos"]]
    return frame


@dataclass
class ResidualPCA:
    """The residual stream after one block, projected on its top two principal components.

    points columns: position (token index in the text), token, next_token, pc1, pc2.
    explained_variance_ratio: share of the variance each of the two components carries.
    """

    layer: int
    points: pd.DataFrame
    explained_variance_ratio: tuple[float, float]


def residual_pca(handle: ModelHandle, text: str, layer: int, max_tokens: int = 512) -> ResidualPCA:
    """PCA of the residual after block `layer` (0 = the embeddings) over the first `max_tokens`
    tokens of `text`, read in context-length chunks."""
    if not 0 <= layer <= handle.n_layers:
        raise UserError(f"layer must be between 0 (embeddings) and {handle.n_layers}, got {layer}")
    ids = encode(handle.tokenizer, text)[: max_tokens + 1]
    if len(ids) < 4:
        raise UserError("give at least a few words of text for the PCA")
    inputs, next_ids = ids[:-1], ids[1:]
    context = handle.context_length or len(inputs)
    residuals = [
        handle.residuals(_batch(inputs[start : start + context]))[layer, 0]
        for start in range(0, len(inputs), context)
    ]
    # activations: [token, d_model], centred before the SVD
    activations = torch.cat(residuals).double()
    centred = activations - activations.mean(dim=0)
    _, singular_values, right = torch.linalg.svd(centred, full_matrices=False)
    projected = centred @ right[:2].T
    variance = singular_values.square()
    ratio = (variance[:2] / variance.sum()).tolist()
    points = pd.DataFrame(
        {
            "position": range(len(inputs)),
            "token": token_labels(handle.tokenizer, inputs),
            "next_token": token_labels(handle.tokenizer, next_ids),
            "pc1": projected[:, 0].float().numpy(),
            "pc2": projected[:, 1].float().numpy(),
        }
    )
    return ResidualPCA(layer, points, (ratio[0], ratio[1] if len(ratio) > 1 else 0.0))
