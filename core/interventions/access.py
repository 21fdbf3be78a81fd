"""The local backend's named-site operations: record, run with edits, gradients at sites, frozen norms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from core.errors import UserError
from core.interventions.attention import eager_attention
from core.interventions.hooks import Stop, first_tensor, removing, run_body
from core.interventions.sites import (
    add_edit_hooks, add_final_hook, add_read_hooks, add_resid_mid_hooks, add_stop_hook,
)
from core.models.handle import Batch, ModelHandle
from core.models.norms import FrozenNorms, freeze_norm
from core.models.sites import Edit, Recording, Site, check_sites


def _hooks_for(handle: ModelHandle, sites: Sequence[Site], edits: Sequence[Edit], store: dict, hooks: list, *,
               index: torch.Tensor | None = None, keep_graph: bool = False) -> None:
    check_sites(list(sites), handle.n_layers)
    add_edit_hooks(handle, edits, hooks)
    plain = [s for s in sites if s.kind != "resid_mid"]
    add_read_hooks(handle, plain, store, hooks, index=index, keep_graph=keep_graph)
    mids = [s for s in sites if s.kind == "resid_mid"]
    if mids:
        if keep_graph:
            raise UserError("gradients at resid_mid are not offered: take them at resid_pre or attn_out")
        add_resid_mid_hooks(handle, mids, store, hooks, index)


def _recording(store: dict, sites: Sequence[Site]) -> Recording:
    out = Recording({site: store[site] for site in sites})
    out.final = store.get("final")
    return out


def record(handle: ModelHandle, batch: Batch, sites: Sequence[Site], index: torch.Tensor | None = None,
           edits: Sequence[Edit] = (), norms_at: tuple[int, int] | None = None) -> Recording:
    """``ModelHandle.record``: one pass, stopped after the last layer a site or an edit needs (run to the end when
    the norms are frozen too: ``norms_at`` = (row, padded position) -> ``Recording.norms``)."""
    sites = list(dict.fromkeys(sites))
    if not sites and norms_at is None:
        raise UserError("nothing to record: name at least one site")
    last = handle.n_layers - 1 if norms_at is not None else max(s.layer for s in sites)
    store: dict = {}
    patterns = any(s.kind == "pattern" for s in sites)
    with handle.lock, torch.inference_mode(), eager_attention(handle, patterns), removing([]) as hooks:
        _hooks_for(handle, sites, edits, store, hooks, index=index)
        if last == handle.n_layers - 1:
            add_final_hook(handle, store, hooks)
        else:
            add_stop_hook(handle, last, hooks)
        posts = _post_norm_hooks(handle, norms_at, store, hooks) if norms_at is not None else None
        try:
            run_body(handle, batch)
        except Stop:
            pass
    out = _recording(store, sites)
    if norms_at is not None:
        out.norms = _frozen(handle, posts, store, norms_at)
    return out


def run_with_edits(handle: ModelHandle, batch: Batch, edits: Sequence[Edit], read: Sequence[Site] = ()) -> Recording:
    """``ModelHandle.run_with_edits``: a full pass with the edits, recording ``read`` and the final residual."""
    read = list(dict.fromkeys(read))
    store: dict = {}
    patterns = any(s.kind == "pattern" for s in read)
    with handle.lock, torch.inference_mode(), eager_attention(handle, patterns), removing([]) as hooks:
        _hooks_for(handle, read, edits, store, hooks)
        add_final_hook(handle, store, hooks)
        run_body(handle, batch)
    return _recording(store, read)


@dataclass
class Gradients:
    """``metric``: Float[Tensor, "batch"], the metric per prompt; ``values[site]`` / ``grads[site]``: the site's
    activation and ∂ Σ metric / ∂ activation, same shape (``core.models.sites``), detached."""

    metric: torch.Tensor
    values: dict
    grads: dict


def gradients(handle: ModelHandle, batch: Batch, sites: Sequence[Site], metric: Callable[[torch.Tensor], torch.Tensor],
              edits: Sequence[Edit] = ()) -> Gradients:
    """``ModelHandle.gradients``: one forward pass with autograd from the embeddings on, one backward pass."""
    sites = list(dict.fromkeys(sites))
    store: dict = {}
    embed = handle.adapter.embed(handle.model)

    def track_from_embeddings(module, args, output):  # frozen or quantized weights: the embeddings become the leaf
        return output.detach().requires_grad_(True)

    with handle.lock, torch.inference_mode(False), torch.enable_grad(), removing([]) as hooks:
        hooks.append(embed.register_forward_hook(track_from_embeddings))
        _hooks_for(handle, sites, edits, store, hooks, keep_graph=True)
        add_final_hook(handle, store, hooks, keep_graph=True)
        run_body(handle, batch)
        per_prompt = metric(store["final"]).float()
        raw = [store[("raw", s)] for s in sites]
        grads = torch.autograd.grad(per_prompt.sum(), raw, allow_unused=True) if raw else []
    from core.interventions.sites import place

    values, out = {}, {}
    for site, g, r in zip(sites, grads, raw):
        values[site] = store[site].detach()
        # The site's value is view(raw): reshaped (z, v) or times the residual multiplier (attn_out, mlp_out). The
        # gradient with respect to it is reshaped the same way but divided by the multiplier (chain rule).
        grad = None if g is None else place(handle, site).view(g.detach())
        if grad is not None and site.kind in ("attn_out", "mlp_out") and handle.weights.residual_scale != 1.0:
            grad = grad / handle.weights.residual_scale ** 2
        out[site] = torch.zeros_like(values[site]) if grad is None else grad
    return Gradients(per_prompt.detach(), values, out)


def _post_norm_hooks(handle: ModelHandle, at: tuple[int, int | None], store: dict, hooks: list) -> dict:
    """Hooks keeping each block norm's input at ``at`` = (row, padded position; None: every position); -> the norm
    modules by kind (post-norms "attn", "mlp"; pre-norms "attn_pre", "mlp_pre")."""
    row, position = at
    n = handle.n_layers
    posts = {"attn": [handle.weights.attn_post_norm(i) for i in range(n)],
             "mlp": [handle.weights.mlp_post_norm(i) for i in range(n)],
             "attn_pre": [handle.weights.attn_pre_norm(i) for i in range(n)],
             "mlp_pre": [handle.weights.mlp_pre_norm(i) for i in range(n)]}

    def keep(key):
        def hook(module, args, kwargs):
            x = first_tensor(args, kwargs)[0]
            store[key] = (x[row] if position is None else x[row, position]).detach().clone()
        return hook

    for kind, modules in posts.items():
        for i, module in enumerate(modules):
            if module is not None:
                hooks.append(module.register_forward_pre_hook(keep(("post_in", kind, i)), with_kwargs=True))
    return posts


def _frozen(handle: ModelHandle, posts: dict, store: dict, at: tuple[int, int]) -> FrozenNorms:
    row, position = at
    final = (store["final"][row] if position is None else store["final"][row, position]).detach().clone()

    def frozen(kind):  # a pre-norm found by name but not called in this pass (no input kept) stays None
        return [None if m is None or (kind.endswith("_pre") and ("post_in", kind, i) not in store)
                else freeze_norm(handle.adapter, m, store["post_in", kind, i].cpu()) for i, m in enumerate(posts[kind])]

    return FrozenNorms(final=freeze_norm(handle.adapter, handle.adapter.final_norm(handle.model), final.cpu()),
                       attn_post=frozen("attn"), mlp_post=frozen("mlp"), attn_pre=frozen("attn_pre"),
                       mlp_pre=frozen("mlp_pre"))


def frozen_norms(handle: ModelHandle, batch: Batch, position: int, row: int = 0) -> FrozenNorms:
    """``ModelHandle.frozen_norms``: the final norm and every post-norm frozen at prompt ``row``, padded ``position``."""
    return record(handle, batch, [], norms_at=(row, position)).norms
