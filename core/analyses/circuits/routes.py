"""Information-flow routes (Ferrando & Voita 2024, Meta's LLM Transparency Tool): which residuals, heads and MLPs the
prediction is made of, from ONE forward pass and linear algebra.

Each residual update is a sum of parts. After block ℓ's attention, at position t,

    resid_mid[t] = resid_pre[t] + Σ_h Σ_s post_t ⊙ (A_h[t, s] · v_h[s] W_O^h)

(Gemma's post-attention norm frozen at its scale at t, ``post_t``; A_h the head's pattern; v_h[s] its value vector
at source s), and after the MLP, resid_post[t] = resid_mid[t] + mlp_out[t]. A part's contribution to the sum y is
max(‖y‖₁ − ‖y − part‖₁, ε), normalised over the parts (Ferrando & Voita's measure). Parts below the threshold are
dropped and the rest renormalised (the largest part of a sum is always kept), as the LLM Transparency Tool does.

Nodes: the residual at every (layer, position) (layer 0: the embeddings), every head and every MLP at the position
it writes to. The (head, source) parts become edges residual(ℓ, s) → head(ℓ, h, t) weighted by the part's share of
the head's total contribution C_h; the mid residual is folded into its readers: head → residual(ℓ+1) weighs
c_mid·C_h, residual(ℓ) → residual(ℓ+1) c_mid·c_resid, head → MLP C_h, residual → MLP c_resid, MLP → residual
c_mlp. So every node's incoming weights sum to 1, and a path's product of weights is exactly the flat
contributions of Ferrando & Voita's graph. The graph is grown top-down from the target's last residual: a node is
kept when some path of kept parts reaches it, and its influence is the share of the prediction that flows through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.analyses.circuits.graph import Edge, Node
from core.errors import UserError
from core.models.handle import Batch, ModelHandle
from core.models.sites import Site

EPS = 1e-5  # the LLM Transparency Tool's floor for a part's contribution
# Sequential pre-norm blocks with a separate value projection: what the routes (and the replacement model) assume.
SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "gemma3", "smollm3")


def check_supported(handle: ModelHandle, what: str) -> None:
    """One line refusing families whose blocks are not sequential pre-norm blocks with a value projection."""
    if handle.architecture not in SUPPORTED:
        raise UserError(f"{what} supports the Gemma and Llama-like families ({', '.join(SUPPORTED)}); "
                        f"{handle.spec} is '{handle.architecture}'")


@dataclass
class Contributions:
    """Ferrando & Voita's contributions of one prompt at every layer (T positions, H heads, L layers).

    ``heads`` [L, H, T, T]: part (head h, source s)'s share of resid_mid[t] (0 for s > t); ``resid_attn`` [L, T]: the
    incoming residual's share of resid_mid; ``mlp`` / ``resid_mlp`` [L, T]: the MLP's and resid_mid's shares of
    resid_post. Each position's shares of one sum add up to 1. ``patterns`` [L, H, T, T]; ``residuals``
    [L+1, T, d_model] (row 0: embeddings); ``head_norms`` [L, H, T] and ``mlp_norms`` [L, T]: the L2 norms of what each
    head and MLP added.
    """

    heads: torch.Tensor
    resid_attn: torch.Tensor
    mlp: torch.Tensor
    resid_mlp: torch.Tensor
    patterns: torch.Tensor
    residuals: torch.Tensor
    head_norms: torch.Tensor
    mlp_norms: torch.Tensor

    def thresholded(self, threshold: float) -> "Contributions":
        """Parts below ``threshold`` dropped, the rest of each sum renormalised (its largest part always kept)."""
        heads, resid_attn = _keep(self.heads, self.resid_attn, threshold)
        mlp, resid_mlp = _keep(self.mlp.unsqueeze(-1), self.resid_mlp, threshold)
        return Contributions(heads, resid_attn, mlp[..., 0], resid_mlp, self.patterns, self.residuals,
                             self.head_norms, self.mlp_norms)


def _keep(parts: torch.Tensor, residual: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``parts`` [L, (H,) T, (T)] of sums whose other part is ``residual`` [L, T]: threshold and renormalise."""
    h_first = parts.ndim == 4  # [L, H, T, S]: the sum's parts lie along H and S
    flat = parts.permute(0, 2, 1, 3).flatten(2) if h_first else parts  # [L, T, parts]
    every = torch.cat([flat, residual.unsqueeze(-1)], -1)
    largest = every == every.amax(-1, keepdim=True)
    kept = every * ((every >= threshold) | largest)
    kept = kept / kept.sum(-1, keepdim=True).clamp_min(1e-30)
    blocks, rest = kept[..., :-1], kept[..., -1]
    if h_first:
        blocks = blocks.unflatten(2, (parts.shape[1], parts.shape[3])).permute(0, 2, 1, 3)
    return blocks, rest


def _shares(whole: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """max(‖whole‖₁ − ‖whole − part‖₁, EPS) for parts [..., T, d] of wholes [T, d] -> [..., T]."""
    return (whole.abs().sum(-1) - (whole - parts).abs().sum(-1)).clamp_min(EPS)


def head_writes(v: torch.Tensor, w_o: torch.Tensor) -> torch.Tensor:
    """What each head writes for each source's value vector, before its pattern weighs it: v_h[s] W_O^h,
    Float[Tensor, "head s d_model"] from value vectors ``v`` [S, kv, hd] and the heads' W_O [H, hd, d]."""
    heads = w_o.shape[0]
    kv = torch.arange(heads) // (heads // v.shape[1])
    return torch.einsum("shj,hjd->hsd", v[:, kv], w_o)


def parts_at(written: torch.Tensor, pattern: torch.Tensor, post: torch.Tensor | None, t: int) -> torch.Tensor:
    """What each head writes at position t from each source s <= t: Float[Tensor, "head s d_model"], from
    ``head_writes``, the heads' ``pattern`` [H, T, S] and the post-attention norm's frozen per-position scales
    ``post`` [T, d] (None without one). Summed over heads and sources: the attention's output at t (without the
    output projection's bias)."""
    parts = pattern[:, t, : t + 1, None] * written[:, : t + 1]
    return parts if post is None else parts * post[t]


def attention_parts(v: torch.Tensor, pattern: torch.Tensor, w_o: torch.Tensor, post: torch.Tensor | None) -> torch.Tensor:
    """``parts_at`` for every position: Float[Tensor, "head t s d_model"], zero for s > t."""
    written = head_writes(v, w_o)
    H, T, d = pattern.shape[0], pattern.shape[1], w_o.shape[-1]
    out = torch.zeros(H, T, T, d)
    for t in range(T):
        out[:, t, : t + 1] = parts_at(written, pattern, post, t)
    return out


def contributions(handle: ModelHandle, batch: Batch) -> Contributions:
    """One recorded pass of prompt 0 of ``batch`` (unpadded) and the contributions at every layer."""
    check_supported(handle, "the routes graph")
    n, heads = handle.n_layers, handle.n_heads
    sites = [Site(kind, layer) for layer in range(n) for kind in ("resid_pre", "v", "pattern", "attn_out", "mlp_out")]
    seen = handle.record(batch, sites, norms_at=(0, None))
    norms = seen.norms
    T = batch.lengths[0]
    c_heads = torch.zeros(n, heads, T, T)
    c_resid_attn, c_mlp, c_resid_mlp = torch.zeros(n, T), torch.zeros(n, T), torch.zeros(n, T)
    head_norms, mlp_norms = torch.zeros(n, heads, T), torch.zeros(n, T)
    residuals = torch.zeros(n + 1, T, handle.d_model)
    patterns = torch.stack([seen[Site("pattern", layer)][0].float().cpu() for layer in range(n)])  # [L, H, T, S]
    with torch.inference_mode():
        for layer in range(n):
            x = seen[Site("resid_pre", layer)][0].float().cpu()  # [T, d]
            mid = x + seen[Site("attn_out", layer)][0].float().cpu()
            mlp_out = seen[Site("mlp_out", layer)][0].float().cpu()
            written = head_writes(seen[Site("v", layer)][0].float().cpu(), handle.weights.out_proj(layer).cpu())
            post = norms.attn_post[layer]
            post = None if post is None else post.scale.float()
            size = mid.abs().sum(-1)
            for t in range(T):  # one position at a time: only the sources it reads (half the work, no [H,T,T,d])
                parts = parts_at(written, patterns[layer], post, t)  # [H, t+1, d]
                distance = torch.cdist(mid[t][None], parts.reshape(-1, parts.shape[-1]), p=1).reshape(heads, t + 1)
                c_heads[layer, :, t, : t + 1] = (size[t] - distance).clamp_min(EPS)
                head_norms[layer, :, t] = parts.sum(1).norm(dim=-1)
            c_x = _shares(mid, x)
            total = c_x + c_heads[layer].sum((0, 2))
            c_heads[layer] /= total.unsqueeze(-1)
            c_resid_attn[layer] = c_x / total
            post_mlp = mid + mlp_out
            m, r = _shares(post_mlp, mlp_out), _shares(post_mlp, mid)
            c_mlp[layer], c_resid_mlp[layer] = m / (m + r), r / (m + r)
            mlp_norms[layer] = mlp_out.norm(dim=-1)
            residuals[layer] = x
        residuals[n] = seen.final[0].float().cpu()
    return Contributions(c_heads, c_resid_attn, c_mlp, c_resid_mlp, patterns, residuals, head_norms, mlp_norms)


@dataclass
class Influence:
    """Share of the target that flows through each node: ``residuals`` [L+1, T], ``heads`` [L, H, T], ``mlps`` [L, T]."""

    residuals: torch.Tensor
    heads: torch.Tensor
    mlps: torch.Tensor


def influence(c: Contributions, position: int) -> Influence:
    """Top-down from the residual at the last layer and ``position`` (influence 1), through the (thresholded) weights."""
    L, H, T, _ = c.heads.shape
    residuals, heads, mlps = torch.zeros(L + 1, T), torch.zeros(L, H, T), torch.zeros(L, T)
    residuals[L, position] = 1.0
    for layer in range(L - 1, -1, -1):
        mlps[layer] = residuals[layer + 1] * c.mlp[layer]
        mid = residuals[layer + 1] * c.resid_mlp[layer] + mlps[layer]  # what reaches the folded mid residual
        heads[layer] = mid.unsqueeze(0) * c.heads[layer].sum(-1)
        residuals[layer] = mid * c.resid_attn[layer] + torch.einsum("t,hts->s", mid, c.heads[layer])
    return Influence(residuals, heads, mlps)


def node_id(kind: str, layer: int, position: int, head: int | None = None) -> str:
    """Our node ids: ``E@3`` (embedding), ``R5@3`` (residual after block 5), ``L12H0@3``, ``MLP4@3``."""
    if kind == "embed":
        return f"E@{position}"
    if kind == "residual":
        return f"R{layer}@{position}"
    if kind == "head":
        return f"L{layer}H{head}@{position}"
    return f"MLP{layer}@{position}"


def routes(c: Contributions, position: int, tokens: list[str], token_ids: list[int]) -> tuple[list[Node], list[Edge], Influence]:
    """The nodes reached from the residual at the last layer and ``position`` through ``c``'s weights (thresholded
    beforehand), and their edges; node influence as ``influence``."""
    L = c.heads.shape[0]
    inf = influence(c, position)
    # numpy views: reading single numbers from torch tensors costs microseconds each, and a graph has thousands
    res_inf, head_inf, mlp_inf = inf.residuals.numpy(), inf.heads.numpy(), inf.mlps.numpy()
    shares, resid_attn, resid_mlp, mlp = c.heads.numpy(), c.resid_attn.numpy(), c.resid_mlp.numpy(), c.mlp.numpy()
    res_norms, head_norms, mlp_norms = c.residuals.norm(dim=-1).numpy(), c.head_norms.numpy(), c.mlp_norms.numpy()
    totals = shares.sum(-1)  # [L, H, T]: each head's share of its sum, C_h
    nodes: list[Node] = []
    edges: list[Edge] = []

    def res_id(layer, t):
        return node_id("embed" if layer == 0 else "residual", layer, t)

    for layer in range(L + 1):
        for t in np.flatnonzero(res_inf[layer] > 0).tolist():
            embed = layer == 0
            nodes.append(Node(res_id(layer, t), "embed" if embed else "residual", layer, t,
                              influence=float(res_inf[layer, t]), activation=float(res_norms[layer, t]),
                              label=tokens[t] if embed else f"residual after block {layer - 1}",
                              token_id=token_ids[t] if embed else None))
    for layer in range(L):
        for h, t in zip(*np.nonzero(head_inf[layer] > 0)):
            h, t = int(h), int(t)
            me, total = node_id("head", layer, t, h), float(totals[layer, h, t])
            nodes.append(Node(me, "head", layer, t, head=h, influence=float(head_inf[layer, h, t]),
                              activation=float(head_norms[layer, h, t]), label=f"L{layer}H{h}"))
            row = shares[layer, h, t]
            edges += [Edge(res_id(layer, s), me, float(row[s]) / total) for s in np.flatnonzero(row > 0).tolist()]
            if res_inf[layer + 1, t] > 0:
                edges.append(Edge(me, res_id(layer + 1, t), float(resid_mlp[layer, t]) * total))
            if mlp_inf[layer, t] > 0:
                edges.append(Edge(me, node_id("mlp", layer, t), total))
        for t in np.flatnonzero(mlp_inf[layer] > 0).tolist():
            me = node_id("mlp", layer, t)
            nodes.append(Node(me, "mlp", layer, t, influence=float(mlp_inf[layer, t]),
                              activation=float(mlp_norms[layer, t]), label=f"MLP{layer}"))
            edges.append(Edge(me, res_id(layer + 1, t), float(mlp[layer, t])))
            if resid_attn[layer, t] > 0:
                edges.append(Edge(res_id(layer, t), me, float(resid_attn[layer, t])))
        for t in np.flatnonzero(res_inf[layer + 1] > 0).tolist():
            weight = float(resid_mlp[layer, t] * resid_attn[layer, t])
            if weight > 0:
                edges.append(Edge(res_id(layer, t), res_id(layer + 1, t), weight))
    return nodes, edges, inf
