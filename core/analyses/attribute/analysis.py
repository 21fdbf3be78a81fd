"""Direct logit attribution: how much each head, each MLP and the embeddings add to one token's logit.

At one position the residual entering the final norm is a sum of parts (``decompose``). With the final
norm's scale frozen at its clean value the logit is linear in that residual, so each part's contribution
is its dot product with the token's unembedding row read back through the frozen norm, and the
contributions (plus the biases: LayerNorm β, unembedding bias, attention output biases) sum to the
token's logit before any soft cap. With ``versus`` the same holds for the logit difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from core.analyses.attribute.decompose import Decomposition, decompose
from core.analyses.base import Settings as BaseSettings
from core.errors import UserError
from core.models.handle import ModelHandle
from core.progress import Progress, quiet
from core.tokens import single_token, token_str

VERSION = "1"  # the store's analysis version: raise it when a change of code changes the numbers

KINDS = ("embed", "head", "mlp", "bias")


@dataclass(frozen=True)
class Settings(BaseSettings):
    """``target`` (and ``versus``, optional): one token each, typed as text (" Paris") or as an id ("#1234");
    ``position`` (-1 = last) is where the logit is read."""

    prompt: str = "The Eiffel Tower is in the city of"
    target: str = " Paris"
    versus: str | None = None
    position: int = -1

    def validate(self) -> None:
        if not self.prompt.strip():
            raise UserError("the prompt is empty: type some text to look at")
        if not self.target:
            raise UserError("the target token is empty: give one token, e.g. ' Paris'")
        if self.versus is not None and not self.versus:
            raise UserError("the versus token is empty: give one token, or leave it out")


@dataclass(frozen=True)
class Contribution:
    """One part's share of the logit (difference). ``layer``/``head`` are None where they do not apply."""

    name: str  # "embed", "L3H1", "MLP3", "L3 attention bias", "final norm bias", "unembedding bias"
    kind: str  # one of KINDS
    layer: int | None  # 0-based block index
    head: int | None
    value: float


@dataclass
class Result:
    """The attribution of ``total`` (target's pre-soft-cap logit, minus versus's) to ``components``."""

    model: str
    settings: Settings
    tokens: list[str]  # the prompt's tokens
    position: int  # 0-based
    target_id: int
    versus_id: int | None
    target: str  # the tokens' text
    versus: str | None
    total: float  # from the model's own final norm and unembedding, before the soft cap
    softcap: float | None
    n_layers: int
    n_heads: int
    components: list[Contribution]

    @property
    def gap(self) -> float:
        """``total`` minus the sum of the components: float32 rounding."""
        return self.total - sum(c.value for c in self.components)

    def to_json(self) -> dict:
        """The ``python -m core attribute`` contract."""
        return {
            "model": self.model,
            "target": self.target,
            "versus": self.versus,
            "target_id": self.target_id,
            "versus_id": self.versus_id,
            "tokens": self.tokens,
            "position": self.position,
            "total": self.total,
            "components": [
                {"name": c.name, "kind": c.kind, "layer": c.layer, "head": c.head, "value": c.value}
                for c in self.components
            ],
        }

    def frames(self) -> dict[str, pd.DataFrame]:
        """``components``: name, kind, layer, head, value (one row per part, layer/head empty where none);
        ``heads``: the heads' values as a grid, one row per layer (column ``layer``, then one per head);
        ``layers``: per layer, attention (sum of its heads), attention_bias, mlp."""
        components = pd.DataFrame(
            [(c.name, c.kind, c.layer, c.head, c.value) for c in self.components],
            columns=["name", "kind", "layer", "head", "value"],
        ).astype({"layer": "Int64", "head": "Int64"})
        heads = components[components["kind"] == "head"]
        grid = heads.pivot(index="layer", columns="head", values="value").reindex(range(self.n_layers))
        grid.columns = [int(h) for h in grid.columns]
        grid = grid.reset_index().astype({"layer": int})
        per_layer = pd.DataFrame({"layer": range(self.n_layers)})
        per_layer["attention"] = per_layer["layer"].map(heads.groupby("layer")["value"].sum()).fillna(0.0)
        biases = components[(components["kind"] == "bias") & components["layer"].notna()]
        per_layer["attention_bias"] = per_layer["layer"].map(biases.groupby("layer")["value"].sum()).fillna(0.0)
        mlps = components[components["kind"] == "mlp"]
        per_layer["mlp"] = per_layer["layer"].map(mlps.set_index("layer")["value"]).fillna(0.0)
        return {"components": components, "heads": grid, "layers": per_layer}

    def top(self, k: int = 5) -> list[Contribution]:
        """The ``k`` components of largest magnitude."""
        return sorted(self.components, key=lambda c: abs(c.value), reverse=True)[:k]


def _unembedding_row(handle: ModelHandle, token_id: int) -> tuple[torch.Tensor, float]:
    """The unembedding row of one token (float64, [d_model]) and its bias (0 without one), times any logit scale."""
    row = handle.weights.unembedding()[token_id].double().cpu()
    bias = handle.weights.unembedding_bias()
    bias = float(bias[token_id]) if bias is not None else 0.0
    scale = handle.weights.logit_scale
    return (row * scale, bias * scale) if scale != 1.0 else (row, bias)


def attribute(handle: ModelHandle, parts: Decomposition, target_id: int, versus_id: int | None
              ) -> tuple[list[Contribution], float]:
    """The contributions of ``parts`` to logit(target) − logit(versus) and that total, computed by the model."""
    frozen = parts.norms.final
    row, bias = _unembedding_row(handle, target_id)
    logits = handle.decode(parts.final[None], softcap=False)[0]  # the model's own logits, before the soft cap
    total = float(logits[target_id])
    if versus_id is not None:
        versus_row, versus_bias = _unembedding_row(handle, versus_id)
        row, bias, total = row - versus_row, bias - versus_bias, total - float(logits[versus_id])
    values = (parts.vectors @ frozen.reader(row)).tolist()
    components = [Contribution(*labels, value) for *labels, value in
                  zip(parts.names, parts.kinds, parts.layers, parts.heads, values)]
    if frozen.bias is not None:
        components.append(Contribution("final norm bias", "bias", None, None, float(frozen.bias @ row)))
    if handle.weights.unembedding_bias() is not None:
        components.append(Contribution("unembedding bias", "bias", None, None, bias))
    return components, total


def run(handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> Result:
    settings.validate()
    progress = progress or quiet
    tokenizer = handle.tokenizer
    target_id = single_token(tokenizer, settings.target, handle.vocab_size, what="target")
    versus_id = None
    if settings.versus is not None:
        versus_id = single_token(tokenizer, settings.versus, handle.vocab_size, what="versus")
        if versus_id == target_id:
            raise UserError(f"versus is the same token as the target ('{token_str(tokenizer, target_id)}'): "
                            "give another token, or leave versus out")
    batch = handle.encode([settings.prompt])
    index = batch.padded_index(0, settings.position)  # a UserError outside the prompt
    progress(0.0, "one forward pass")
    parts = decompose(handle, batch, index)
    components, total = attribute(handle, parts, target_id, versus_id)
    progress(1.0, "attributed")
    ids = batch.input_ids[0, batch.input_ids.shape[1] - batch.lengths[0]:].tolist()
    return Result(
        model=handle.spec,
        settings=settings,
        tokens=[token_str(tokenizer, t) for t in ids],
        position=settings.position % batch.lengths[0],
        target_id=target_id,
        versus_id=versus_id,
        target=token_str(tokenizer, target_id),
        versus=token_str(tokenizer, versus_id) if versus_id is not None else None,
        total=total,
        softcap=handle.weights.softcap,
        n_layers=handle.n_layers,
        n_heads=handle.n_heads,
        components=components,
    )
