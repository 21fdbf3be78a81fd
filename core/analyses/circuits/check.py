"""Check a graph by intervention: ablate the pinned nodes (or patch them from a corrupted prompt of the same token
length) with the handle's edits, and set the model's new prediction and logit difference beside the graph's.

What is done to each node: a head's output at its position (``z``, its unit) and an MLP's (``mlp_out``) are zeroed or
replaced by the corrupted run's; a residual (``resid_post``) or an embedding (``resid_pre`` of block 0) likewise; a
transcoder feature's contribution a·W_dec is removed from its block's ``mlp_out`` (patched: (a' − a)·W_dec, a' its
activation on the corrupted prompt); an error node's vector likewise. Logits are not intervened on.

The graph's prediction is the same intervention in the frozen model the graph was computed in (attention patterns
and norm scales frozen at the clean run): for an attribution graph the replacement model, whose other features are
recomputed by their transcoders and whose error nodes stay; for a routes graph the model with every MLP output
frozen too, so that the prediction is the linear effect along the attention and residual paths the routes draw.
The logit difference is logit(target) − logit(the clean runner-up), before any soft cap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.analyses.circuits import attribution as at
from core.analyses.base import Settings as BaseSettings
from core.analyses.circuits.analysis import Result, Settings, run, transcoders_for
from core.errors import UserError
from core.models.handle import ModelHandle
from core.models.sites import Edit, Site
from core.progress import Progress, part, quiet
from core.tokens import token_str

MODES = ("ablate", "patch")
INTERVENABLE = ("embed", "residual", "head", "mlp", "feature", "error")


@dataclass
class Check:
    mode: str
    nodes: list[str]  # the nodes intervened on
    skipped: list[str]  # pinned nodes that cannot be (logits)
    target: str
    versus: str  # the clean runner-up
    clean_logit_diff: float
    new_logit_diff: float  # the model's, after the intervention
    predicted_logit_diff: float  # the graph's frozen model's, after the same intervention
    clean_top: list[tuple[str, float]]
    new_top: list[tuple[str, float]]

    def to_json(self) -> dict:
        return {"mode": self.mode, "nodes": self.nodes, "skipped": self.skipped, "target": self.target,
                "versus": self.versus, "clean_logit_diff": self.clean_logit_diff, "new_logit_diff": self.new_logit_diff,
                "predicted_logit_diff": self.predicted_logit_diff,
                "clean_top": [list(t) for t in self.clean_top], "new_top": [list(t) for t in self.new_top]}


@dataclass(frozen=True)
class CheckSettings(BaseSettings):
    """A check of the graph ``graph`` draws: the pinned ``nodes``, ablated (``corrupt`` None) or patched from
    ``corrupt``."""

    graph: Settings = Settings()
    nodes: tuple[str, ...] = ()
    corrupt: str | None = None

    def validate(self) -> None:
        self.graph.validate()
        if not self.nodes:
            raise UserError("pin at least one node to intervene on (a head, MLP, feature, error, residual or token)")
        if self.corrupt is not None and not self.corrupt.strip():
            raise UserError("the corrupted prompt is empty: type one of the same token length, or ablate instead")


def run_check(handle: ModelHandle, settings: CheckSettings, progress: Progress | None = None,
              result: Result | None = None) -> Check:
    """``check`` as an analysis run: the graph is ``result`` when given (it must be ``settings.graph``'s), else drawn."""
    settings.validate()
    progress = progress or quiet
    if result is None or result.settings != settings.graph:
        result = run(handle, settings.graph, part(progress, 0.0, 0.7))
    progress(0.7, "the model and the graph's frozen model, intervened on")
    return check(handle, result, list(settings.nodes), settings.corrupt)


def check(handle: ModelHandle, result: Result, node_ids: list[str], corrupt: str | None = None) -> Check:
    """Ablate (``corrupt`` None) or patch the nodes ``node_ids`` of ``result.graph``, in the model and in the graph's
    frozen model."""
    graph = result.graph
    known = {n.id: n for n in graph.nodes}
    unknown = [i for i in node_ids if i not in known]
    if unknown:
        raise UserError(f"{unknown[0]} is not a node of this graph: pin nodes the graph shows")
    pinned = [known[i] for i in node_ids if known[i].kind in INTERVENABLE]
    if not pinned:
        raise UserError("pin at least one node to intervene on (a head, MLP, feature, error, residual or token)")
    batch = handle.encode([graph.prompt])
    other = None
    if corrupt is not None:
        other = handle.encode([corrupt])
        if other.lengths[0] != batch.lengths[0]:
            raise UserError(f"the corrupted prompt is {other.lengths[0]} tokens and the prompt {batch.lengths[0]}: "
                            "patching compares positions one to one, so give one of the same token length")
    transcoders = transcoders_for(handle, result.settings) if graph.kind == "attribution" else None
    frozen = at.freeze(handle, batch)
    there = at.freeze(handle, other) if other is not None else None
    z_sites = sorted({Site("z", n.layer) for n in pinned if n.kind == "head"})
    zs = (handle.record(batch, z_sites), handle.record(other, z_sites) if other is not None else None) if z_sites else (None, None)
    changes = [_change(n, frozen, there, transcoders, zs) for n in pinned]
    logits = handle.decode(frozen.residuals[-1, -1:], softcap=False)[0].float()
    target = graph.target_id
    masked = logits.clone()
    masked[target] = -float("inf")
    versus = int(masked.argmax())
    edits = [Edit(site, "add" if add else "replace", value=value[None, None] if site.kind != "z" else value[None, None, None],
                  positions=(position,), units=(unit,) if unit is not None else None)
             for site, position, unit, value, add in (c.edit for c in changes)]
    new = handle.decode(handle.run_with_edits(batch, edits).final[0, -1:], softcap=False)[0].float()
    predicted = _frozen_logits(frozen, changes, transcoders, handle)
    return Check("ablate" if corrupt is None else "patch", [n.id for n in pinned],
                 [i for i in node_ids if known[i].kind not in INTERVENABLE], graph.target,
                 token_str(handle.tokenizer, versus), float(logits[target] - logits[versus]),
                 float(new[target] - new[versus]), float(predicted[target] - predicted[versus]),
                 _top(handle, logits), _top(handle, new))


def _top(handle: ModelHandle, logits: torch.Tensor, k: int = 3) -> list[tuple[str, float]]:
    cap = handle.weights.softcap
    probs = torch.softmax(cap * torch.tanh(logits / cap) if cap else logits, -1)
    top = probs.topk(k)
    return [(token_str(handle.tokenizer, int(i)), round(float(p), 4)) for p, i in zip(top.values, top.indices)]


@dataclass
class _Change:
    """One node's intervention: ``edit`` = (site, padded position, unit, value, add?) for the model, and what the
    frozen model does: ``kind``, ``layer``, ``position``, ``unit`` and the new ``value`` (or the added vector)."""

    kind: str
    layer: int
    position: int
    unit: int | None
    value: torch.Tensor
    edit: tuple


def _change(n, frozen: at.Frozen, there: at.Frozen | None, transcoders, zs) -> _Change:
    t, layer = n.position, n.layer
    if n.kind == "head":
        clean, corrupt = zs
        value = torch.zeros(frozen.w_o.shape[2]) if corrupt is None else corrupt[Site("z", layer)][0, t, n.head].float().cpu()
        return _Change("head", layer, t, n.head, value, (Site("z", layer), t, n.head, value, False))
    if n.kind == "mlp":
        value = torch.zeros_like(frozen.mlp_out[layer, t]) if there is None else there.mlp_out[layer, t]
        return _Change("mlp", layer, t, None, value, (Site("mlp_out", layer), t, None, value, False))
    if n.kind in ("embed", "residual"):
        value = torch.zeros_like(frozen.residuals[layer, t]) if there is None else there.residuals[layer, t]
        site = Site("resid_pre", 0) if layer == 0 else Site("resid_post", layer - 1)
        return _Change("residual", layer, t, None, value, (site, t, None, value, False))
    tc = transcoders.layers[layer]
    if n.kind == "feature":
        corrupt = 0.0 if there is None else float(tc.encode(there.mlp_in[layer, t])[n.feature])
        delta = (corrupt - n.activation) * tc.W_dec[n.feature].cpu()
        return _Change("feature", layer, t, n.feature, torch.tensor(corrupt), (Site("mlp_out", layer), t, None, delta, True))
    error = frozen.mlp_out[layer, t] - tc(frozen.mlp_in[layer, t]).cpu()
    new = torch.zeros_like(error) if there is None else there.mlp_out[layer, t] - tc(there.mlp_in[layer, t]).cpu()
    return _Change("error", layer, t, None, new, (Site("mlp_out", layer), t, None, new - error, True))


def _frozen_logits(frozen: at.Frozen, changes: list[_Change], transcoders, handle: ModelHandle) -> torch.Tensor:
    """The graph's frozen model run with ``changes``: the logits at the last position (before any soft cap)."""
    L, H, T = frozen.shape
    KV = frozen.w_v.shape[1]
    R = frozen.embeddings.clone()
    for layer in range(L + 1):
        for c in changes:
            if c.kind == "residual" and c.layer == layer:
                R[c.position] = c.value
        if layer == L:
            break
        v = torch.einsum("sd,kdj->skj", R * frozen.attn_pre[layer], frozen.w_v[layer]).repeat_interleave(H // KV, 1)
        z = torch.einsum("hts,shj->thj", frozen.patterns[layer], v)
        for c in changes:
            if c.kind == "head" and c.layer == layer:
                z[c.position, c.unit] = c.value
        attn = torch.einsum("thj,hjd->td", z, frozen.w_o[layer])
        M = R + (attn if frozen.attn_post is None else attn * frozen.attn_post[layer])
        if transcoders is None:
            written = frozen.mlp_out[layer].clone()
            for c in changes:
                if c.kind == "mlp" and c.layer == layer:
                    written[c.position] = c.value
        else:
            tc = transcoders.layers[layer]
            x = M * frozen.mlp_pre[layer]
            acts = tc.encode(x).cpu()
            errors = frozen.mlp_out[layer] - tc(frozen.mlp_in[layer]).cpu()
            for c in changes:
                if c.layer != layer:
                    continue
                if c.kind == "feature":
                    acts[c.position, c.unit] = c.value
                elif c.kind == "error":
                    errors[c.position] = c.value
            written = tc.decode(acts, x).cpu() + errors
        R = M + written
    read = R[-1] * frozen.final[-1] * handle.weights.logit_scale  # through the final norm frozen at its clean scale
    unembedding = handle.weights.unembedding()
    logits = (read.to(unembedding.device, unembedding.dtype) @ unembedding.T).float().cpu()
    bias = handle.weights.unembedding_bias()
    return logits if bias is None else logits + bias.float().cpu() * handle.weights.logit_scale
