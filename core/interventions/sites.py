"""Where each ``Site`` lives in a model, and the hooks that read or edit it (the local backend).

A site is reached through the adapter only: the residual stream at a block's input (forward pre-hook) or
output (forward hook); what the attention / MLP adds at the output of the module the block adds it from
(``adapter.attn_branch`` / ``mlp_branch``: Gemma's post-norms), times the residual multiplier; the heads' ``z``
at the input of the attention output projection; the MLP's input and output at ``adapter.mlp``; the neurons at
the input of the MLP's output projection; attention weights from the attention module's second output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from core.errors import UserError
from core.interventions.hooks import Stop, first_tensor, output_tensor, replace_output
from core.models.handle import ModelHandle
from core.models.sites import Edit, Site, apply_edit


@dataclass(frozen=True)
class Place:
    """A site's module and hook kind: ``pre`` (its input) or ``post`` (its output); ``view``/``unview`` turn the
    hooked tensor into the site's tensor and back (splitting z by head, applying the residual multiplier)."""

    module: torch.nn.Module
    pre: bool
    view: Callable[[torch.Tensor], torch.Tensor]
    unview: Callable[[torch.Tensor], torch.Tensor]


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def place(handle: ModelHandle, site: Site) -> Place:
    """The module and hook that hold ``site`` (``UserError`` for a kind this model does not have)."""
    adapter, model = handle.adapter, handle.model
    block = adapter.layers(model)[site.layer]
    kind = site.kind
    if kind == "resid_pre":
        return Place(block, True, _same, _same)
    if kind == "resid_post":
        return Place(block, False, _same, _same)
    if kind in ("attn_out", "mlp_out"):
        module = adapter.attn_branch(block) if kind == "attn_out" else adapter.mlp_branch(block)
        scale = handle.weights.residual_scale
        if scale == 1.0:
            return Place(module, False, _same, _same)
        return Place(module, False, lambda t: t * scale, lambda t: t / scale)
    if kind == "z":
        n_heads = handle.n_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(*t.shape[:-1], n_heads, t.shape[-1] // n_heads)

        return Place(adapter.attn_out_proj(block), True, split, lambda t: t.flatten(-2))
    if kind == "mlp_in":
        return Place(adapter.mlp(block), True, _same, _same)
    if kind == "mlp":
        return Place(adapter.mlp(block), False, _same, _same)
    if kind == "neurons":
        return Place(handle.weights.mlp_out_proj(site.layer), True, _same, _same)
    if kind == "pattern":
        return Place(adapter.attention(block), False, _same, _same)
    if kind == "v":
        proj = getattr(adapter.attention(block), "v_proj", None)
        if not isinstance(proj, torch.nn.Module):
            raise UserError(f"{type(adapter.attention(block)).__name__} fuses its value projection with the queries and "
                            "keys: its value vectors (site v) cannot be read")
        head_dim = handle.head_dim

        def split_kv(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(*t.shape[:-1], t.shape[-1] // head_dim, head_dim)

        return Place(proj, False, split_kv, lambda t: t.flatten(-2))
    raise UserError(f"{kind} has no place in a block: see core.models.sites")


def _hook(place_: Place, change: Callable[[torch.Tensor], torch.Tensor | None]):
    """A pre- or forward hook calling ``change(site tensor)``; a returned tensor replaces the site's value."""
    if place_.pre:
        def pre(module, args, kwargs):
            x, rebuild = first_tensor(args, kwargs)
            new = change(place_.view(x))
            return None if new is None else rebuild(place_.unview(new).to(x.dtype))
        return pre

    def post(module, args, output):
        y = output_tensor(output)
        new = change(place_.view(y))
        return None if new is None else replace_output(output, place_.unview(new).to(y.dtype))
    return post


def register(hooks: list, place_: Place, fn) -> None:
    if place_.pre:
        hooks.append(place_.module.register_forward_pre_hook(fn, with_kwargs=True))
    else:
        hooks.append(place_.module.register_forward_hook(fn))


def add_edit_hooks(handle: ModelHandle, edits: Sequence[Edit], hooks: list) -> None:
    """Hooks applying ``edits`` (registered first, so reads of the same site see the edited value)."""
    for edit in edits:
        edit.check(handle.n_layers)
        register(hooks, place(handle, edit.site), _hook(place(handle, edit.site), lambda t, e=edit: apply_edit(e, t)))


def add_read_hooks(handle: ModelHandle, sites: Sequence[Site], store: dict, hooks: list, *,
                   index: torch.Tensor | None = None, keep_graph: bool = False) -> None:
    """Hooks storing each site's tensor in ``store[site]`` (gathered at ``index`` [batch, slot] when given).

    With ``keep_graph`` the hooked tensor itself is kept under ``store[("raw", site)]`` (gradients are taken
    with respect to it: a view made from it lies off the path to the output)."""
    in_place = handle.adapter.mlp_output_in_place
    for site in sites:
        if site.kind == "pattern":
            module = place(handle, site).module

            def keep_pattern(mod, args, output, site=site):
                weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
                if weights is None:
                    raise UserError(f"{handle.architecture} does not return attention weights, so its patterns cannot be read")
                store[site] = weights if keep_graph else weights.detach()
            hooks.append(module.register_forward_hook(keep_pattern))
            continue
        p = place(handle, site)

        clone = in_place and site.kind in ("mlp", "mlp_out")

        def keep(raw: torch.Tensor, site=site, p=p, clone=clone):
            t = p.view(raw)
            if keep_graph:
                store[("raw", site)] = raw  # the tensor on the path to the output
            value = t if keep_graph else t.detach()
            if index is not None:
                gather = index.to(value.device).reshape(*index.shape, *([1] * (value.ndim - 2)))
                value = value.gather(1, gather.expand(-1, -1, *value.shape[2:]))
            store[site] = value

        if p.pre:
            def pre(module, args, kwargs, keep=keep):
                keep(first_tensor(args, kwargs)[0])
            hooks.append(p.module.register_forward_pre_hook(pre, with_kwargs=True))
        else:
            def post(module, args, output, keep=keep, clone=clone):
                out = output_tensor(output)
                keep(out)
                if clone:  # Falcon adds the attention output into the MLP's output in place: let it add into a copy
                    return replace_output(output, out.clone())
            hooks.append(p.module.register_forward_hook(post))


def add_resid_mid_hooks(handle: ModelHandle, sites: Sequence[Site], store: dict, hooks: list,
                        index: torch.Tensor | None = None) -> None:
    """``resid_mid``: the block input plus what its attention adds (parallel blocks: the same sum)."""
    inputs: dict[int, torch.Tensor] = {}
    scale = handle.weights.residual_scale
    layers = handle.adapter.layers(handle.model)
    for site in sites:
        def keep_input(module, args, kwargs, layer=site.layer):
            inputs[layer] = first_tensor(args, kwargs)[0].detach()

        def keep_mid(module, args, output, site=site):
            branch = output_tensor(output).detach()
            mid = inputs[site.layer] + (branch * scale if scale != 1.0 else branch).to(inputs[site.layer].device)
            if index is not None:
                mid = mid.gather(1, index.to(mid.device).unsqueeze(-1).expand(-1, -1, mid.shape[-1]))
            store[site] = mid

        hooks.append(layers[site.layer].register_forward_pre_hook(keep_input, with_kwargs=True))
        hooks.append(handle.adapter.attn_branch(layers[site.layer]).register_forward_hook(keep_mid))


def add_stop_hook(handle: ModelHandle, layer: int, hooks: list) -> None:
    """Ends the pass once block ``layer`` has run (registered last: that block's reads come first)."""
    def stop(module, args, output):
        raise Stop
    hooks.append(handle.adapter.layers(handle.model)[layer].register_forward_hook(stop))


def add_final_hook(handle: ModelHandle, store: dict, hooks: list, keep_graph: bool = False) -> None:
    """``store["final"]``: the last block's output [batch, pos, d_model]."""
    def keep(module, args, output):
        y = output_tensor(output)
        store["final"] = y if keep_graph else y.detach()
    hooks.append(handle.adapter.layers(handle.model)[-1].register_forward_hook(keep))
