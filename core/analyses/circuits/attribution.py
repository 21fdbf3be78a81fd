"""Attribution graphs (Ameisen et al. 2025, circuit-tracer) through per-layer transcoders, by exact linear algebra.

The replacement model: every MLP replaced by its transcoder (features at their clean activations, plus an error node
per (layer, position) holding what the transcoder misses), attention patterns and every norm's scale frozen at the
clean run (per position: the attention's and the MLP's pre-norms, Gemma's post-attention norm, the final norm). Then
the residual stream is linear in the nodes (token embeddings, features, errors): with R_ℓ the residual entering block
ℓ and M_ℓ = R_ℓ + Attn_ℓ(R_ℓ),

    Attn_ℓ(R)[t] = post_t ⊙ Σ_h Σ_s A_h[t, s] · ((pre_s ⊙ R[s]) W_V^h) W_O^h,
    R_ℓ+1 = M_ℓ + Σ_features a·W_dec + b_dec + error (+ (mlp_pre ⊙ M_ℓ) W_skip for skip transcoders).

An edge's weight is a source's direct effect on a target: the source's written vector (a·W_dec, the error, the
embedding) dotted with the gradient of the target through those frozen linear paths only (circuit-tracer's
backward pass per node, computed here as its adjoint, Attnᵀ, batched over targets). Targets: each active feature's
pre-activation (read at M_ℓ through the frozen MLP pre-norm and W_enc) and the top logits, demeaned over the
vocabulary and read through the frozen final norm. Features at the first position are left out when it is BOS
(circuit-tracer zeroes the first position); the error node there keeps what they wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.analyses.circuits.graph import cumulative_cut, influence, normalise_rows
from core.analyses.circuits.transcoders import Transcoders
from core.errors import UserError
from core.models.handle import Batch, ModelHandle
from core.models.sites import Site
from core.progress import Progress, quiet


@dataclass
class Frozen:
    """The clean run of one prompt (T positions) that the replacement model is frozen at; float32 on the CPU.

    ``embeddings`` [T, d]; ``patterns`` [L, H, T, T]; ``attn_pre``, ``mlp_pre`` [L, T, d] and ``attn_post`` (None or
    [L, T, d]) the frozen norms' per-position scales; ``final`` [T, d]; ``w_v`` [L, kv, d, hd] and ``w_o``
    [L, H, hd, d]; ``mlp_in``, ``mlp_out`` [L, T, d]; ``residuals`` [L+1, T, d] as the model computed them."""

    embeddings: torch.Tensor
    patterns: torch.Tensor
    attn_pre: torch.Tensor
    attn_post: torch.Tensor | None
    mlp_pre: torch.Tensor
    final: torch.Tensor
    w_v: torch.Tensor
    w_o: torch.Tensor
    mlp_in: torch.Tensor
    mlp_out: torch.Tensor
    residuals: torch.Tensor

    @property
    def shape(self) -> tuple[int, int, int]:
        L, H, T, _ = self.patterns.shape
        return L, H, T


def freeze(handle: ModelHandle, batch: Batch) -> Frozen:
    """One recorded pass of prompt 0 of ``batch`` (unpadded), every norm frozen at every position."""
    n = handle.n_layers
    sites = [Site(kind, i) for i in range(n) for kind in ("resid_pre", "pattern", "mlp_in", "mlp_out")]
    seen = handle.record(batch, sites, norms_at=(0, None))
    norms = seen.norms
    if any(p is None for p in norms.attn_pre + norms.mlp_pre) or norms.final.centred:
        raise UserError(f"{handle.spec}: the replacement model needs RMS pre-norms in front of every attention and MLP")

    def stack(kind):
        return torch.stack([seen[Site(kind, i)][0].float().cpu() for i in range(n)])

    def scales(frozen):
        return torch.stack([f.scale.float() for f in frozen])

    posts = norms.attn_post
    return Frozen(
        embeddings=seen[Site("resid_pre", 0)][0].float().cpu(), patterns=stack("pattern"),
        attn_pre=scales(norms.attn_pre), attn_post=None if posts[0] is None else scales(posts),
        mlp_pre=scales(norms.mlp_pre), final=norms.final.scale.float(),
        w_v=torch.stack([handle.weights.value_proj(i).cpu() for i in range(n)]),
        w_o=torch.stack([handle.weights.out_proj(i).cpu() for i in range(n)]),
        mlp_in=stack("mlp_in"), mlp_out=stack("mlp_out"),
        residuals=torch.cat([stack("resid_pre"), seen.final[0].float().cpu()[None]]),
    )


def attention(frozen: Frozen, layer: int, residual: torch.Tensor) -> torch.Tensor:
    """Attn_ℓ of residuals [..., T, d] with the pattern and norms frozen (no biases: Llama and Gemma have none)."""
    T = residual.shape[-2]
    H, KV = frozen.w_o.shape[1], frozen.w_v.shape[1]
    v = torch.einsum("...sd,kdj->...skj", residual * frozen.attn_pre[layer, :T], frozen.w_v[layer])
    v = v.repeat_interleave(H // KV, dim=-2)  # [..., S, H, hd]
    z = torch.einsum("hts,...shj->...thj", frozen.patterns[layer, :, :T, :T], v)
    out = torch.einsum("...thj,hjd->...td", z, frozen.w_o[layer])
    return out if frozen.attn_post is None else out * frozen.attn_post[layer, :T]


def attention_transpose(frozen: Frozen, layer: int, grad: torch.Tensor) -> torch.Tensor:
    """The adjoint of ``attention``: ∂(⟨grad, Attn_ℓ(R)⟩)/∂R for gradients [n, T, d] -> [n, T, d]."""
    n, T, d = grad.shape
    H, hd, KV = frozen.w_o.shape[1], frozen.w_o.shape[2], frozen.w_v.shape[1]
    u = grad if frozen.attn_post is None else grad * frozen.attn_post[layer, :T]
    w = (u.reshape(n * T, d) @ frozen.w_o[layer].reshape(H * hd, d).T).reshape(n, T, H, hd)
    y = torch.einsum("hts,nthj->nshj", frozen.patterns[layer, :, :T, :T], w)  # [n, S, H, hd]
    y = y.reshape(n, T, KV, H // KV, hd).sum(3).reshape(n * T, KV * hd)
    back = y @ frozen.w_v[layer].permute(0, 2, 1).reshape(KV * hd, d)
    return back.reshape(n, T, d) * frozen.attn_pre[layer, :T]


@dataclass
class Nodes:
    """The replacement model's nodes in circuit-tracer's order: features, errors (layer-major), tokens, logits.

    ``features`` [n_f, 3] (layer, position, index), sorted; ``activations`` [n_f]; ``errors`` [L, T, d];
    ``logit_ids``, ``logit_weights`` (the influence weights: probabilities, or 1 for a named target) and
    ``logit_probs`` [n_l]; ``logit_vectors`` [n_l, d]: demeaned unembedding rows read through the frozen final norm."""

    features: torch.Tensor
    activations: torch.Tensor
    errors: torch.Tensor
    logit_ids: torch.Tensor
    logit_weights: torch.Tensor
    logit_probs: torch.Tensor
    logit_vectors: torch.Tensor

    def sizes(self, T: int) -> tuple[int, int, int, int]:
        """(features, errors, tokens, logits)."""
        return len(self.features), self.errors.shape[0] * T, T, len(self.logit_ids)


def transcode(frozen: Frozen, transcoders: Transcoders, skip_first: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every block's features on the clean run: (active [n_f, 3], activations [n_f], errors [L, T, d])."""
    L, _, T = frozen.shape
    found, values, errors = [], [], torch.zeros(L, T, frozen.mlp_in.shape[-1])
    for layer, tc in enumerate(transcoders.layers):
        acts = tc.encode(frozen.mlp_in[layer]).cpu()
        if skip_first:
            acts[0] = 0
        errors[layer] = frozen.mlp_out[layer] - tc.decode(acts, frozen.mlp_in[layer]).cpu()
        where = acts.nonzero()
        found.append(torch.cat([torch.full((len(where), 1), layer), where], 1))
        values.append(acts[where[:, 0], where[:, 1]])
    return torch.cat(found), torch.cat(values), errors


def replacement_residuals(frozen: Frozen, transcoders: Transcoders, nodes: Nodes) -> torch.Tensor:
    """The frozen replacement model run forward from the nodes' values -> residuals [L+1, T, d]; at the clean values
    it reproduces the model's own residuals (what the tests check). Changing a node's value here and reading a target
    moves it by exactly that node's edge weight."""
    L, _, T = frozen.shape
    R = frozen.embeddings.clone()
    out = [R]
    for layer, tc in enumerate(transcoders.layers):
        M = R + attention(frozen, layer, R)
        acts = torch.zeros(T, tc.width)
        here = nodes.features[:, 0] == layer
        acts[nodes.features[here, 1], nodes.features[here, 2]] = nodes.activations[here]
        written = acts @ tc.W_dec.cpu() + tc.b_dec.cpu() + nodes.errors[layer]
        if tc.W_skip is not None:
            written = written + (M * frozen.mlp_pre[layer]) @ tc.W_skip.cpu()
        R = M + written
        out.append(R)
    return torch.stack(out)


def adjacency(frozen: Frozen, transcoders: Transcoders, nodes: Nodes, progress: Progress = quiet) -> torch.Tensor:
    """Direct effects [node, node] (rows: targets, columns: sources), in the order of ``Nodes``."""
    L, _, T = frozen.shape
    n_f, n_e, n_t, n_l = nodes.sizes(T)
    N = n_f + n_e + n_t + n_l
    A = torch.zeros(N, N)
    layer_of, pos_of, index_of = nodes.features.unbind(1)
    decoders = {}  # (layer, position) -> (columns, written vectors [k, d])
    for layer, tc in enumerate(transcoders.layers):
        for t in range(T):
            cols = torch.nonzero((layer_of == layer) & (pos_of == t)).flatten()
            if len(cols):
                decoders[layer, t] = (cols, nodes.activations[cols, None] * tc.W_dec.cpu()[index_of[cols]])

    def read(rows: torch.Tensor, G: torch.Tensor, layer: int) -> None:
        """Edges into ``rows`` from what block ``layer`` wrote (or the embeddings, layer -1); G = ∂target/∂R there."""
        t = G.shape[1]
        if layer < 0:
            A[rows, n_f + L * T: n_f + L * T + t] = (G * frozen.embeddings[:t]).sum(-1)
            return
        A[rows, n_f + layer * T: n_f + layer * T + t] = (G * nodes.errors[layer, :t]).sum(-1)
        for s in range(t):
            if (layer, s) in decoders:
                cols, vectors = decoders[layer, s]
                A[rows[:, None], cols[None, :]] = G[:, s] @ vectors.T

    for t in range(T):
        progress(t / T, f"direct effects at position {t + 1} of {T}")
        mine = torch.nonzero(pos_of == t).flatten().flip(0)  # sorted by layer, descending
        logits = torch.arange(n_f + n_e + n_t, N) if t == T - 1 else torch.zeros(0, dtype=torch.long)
        rows = torch.cat([logits, mine])
        row_layer = torch.cat([torch.full((len(logits),), L), layer_of[mine]])
        G = torch.zeros(len(rows), t + 1, frozen.final.shape[-1])
        if len(logits):
            G[: len(logits), t] = nodes.logit_vectors * frozen.final[t]
            read(rows[: len(logits)], G[: len(logits)], L - 1)
        for layer in range(L - 1, -1, -1):
            above = int((row_layer > layer).sum())
            skip = transcoders.layers[layer].W_skip
            if skip is not None and above:  # the skip path of block ``layer``'s transcoder, M -> R_ℓ+1
                G[:above] += (G[:above] @ skip.cpu().T) * frozen.mlp_pre[layer, : t + 1]
            starting = torch.nonzero(row_layer == layer).flatten()
            if len(starting):
                tc = transcoders.layers[layer]
                G[starting, t] = tc.W_enc.cpu()[:, index_of[rows[starting]]].T * frozen.mlp_pre[layer, t]
            active = int((row_layer >= layer).sum())
            if not active:
                continue
            G[:active] += attention_transpose(frozen, layer, G[:active])
            read(rows[:active], G[:active], layer - 1)
    return A


def logit_targets(handle: ModelHandle, frozen: Frozen, target_id: int | None, max_logits: int = 10,
                  cumulative: float = 0.95) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, influence weights, probabilities, demeaned unembedding rows [k, d]) of the logit nodes: the most probable
    tokens until their probability reaches ``cumulative`` (at most ``max_logits``; circuit-tracer's salient logits), or
    the one ``target_id`` the user named (weight 1)."""
    probs = torch.softmax(handle.decode(frozen.residuals[-1, -1:])[0].float(), -1).cpu()
    if target_id is None:
        top = probs.topk(max_logits)
        keep = int(torch.searchsorted(top.values.cumsum(0), torch.tensor(cumulative))) + 1
        ids = top.indices[: min(keep, max_logits)]
        weights = probs[ids]
    else:
        ids = torch.tensor([target_id])
        weights = torch.ones(1)
    unembedding = handle.weights.unembedding().float().cpu()
    rows = (unembedding[ids] - unembedding.mean(0)) * handle.weights.logit_scale
    return ids, weights, probs[ids], rows


@dataclass
class Pruned:
    node_mask: torch.Tensor  # [N] bool
    edge_mask: torch.Tensor  # [N, N] bool
    influence: torch.Tensor  # [N], each node's influence on the unpruned graph (a share of Σ logit weights)


def prune(A: torch.Tensor, logit_weights: torch.Tensor, n_features: int, n_tokens: int, n_logits: int,
          node_threshold: float, edge_threshold: float) -> Pruned:
    """circuit-tracer's ``prune_graph``: keep the most influential nodes holding ``node_threshold`` of all influence
    (tokens and logits always), then the edges holding ``edge_threshold`` of the influence-weighted edge mass; drop
    features and errors left without outgoing edges and features left without incoming ones, until nothing changes."""
    N = A.shape[0]
    w = torch.zeros(N)
    w[N - n_logits:] = logit_weights
    node_influence = influence(normalise_rows(A), w)
    keep = node_influence >= cumulative_cut(node_influence, node_threshold)
    keep[N - n_logits - n_tokens:] = True
    pruned = A * keep[:, None] * keep[None, :]
    normalised = normalise_rows(pruned)
    scores = normalised * (influence(normalised, w) + w)[:, None]
    del normalised
    nonzero = scores[scores > 0]
    edges = scores >= cumulative_cut(nonzero, edge_threshold) if len(nonzero) else scores > 0
    edges &= scores > 0
    inner = N - n_logits - n_tokens
    while True:
        before = keep.clone()
        keep[:inner] &= edges[:, :inner].any(0)
        keep[:n_features] &= edges[:n_features].any(1)
        edges &= keep[:, None] & keep[None, :]
        if torch.equal(before, keep):
            break
    return Pruned(keep, edges, node_influence / logit_weights.sum().clamp_min(1e-30))
