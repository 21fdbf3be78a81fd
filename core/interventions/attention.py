"""Looking at single heads: attention patterns, and what a head alone writes (its OV circuit)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

from core.errors import UserError
from core.interventions.components import Component, zero_activations
from core.interventions.hooks import Stop, first_tensor, output_tensor, removing, replacing, run_until_stop
from core.models.handle import Batch, ModelHandle


@contextmanager
def eager_attention(handle: ModelHandle, needed: bool = True) -> Iterator[None]:
    """Fused attention kernels do not return weights: the model runs eager attention inside the block (under the
    handle's lock) and is switched back after; its loading is untouched."""
    model = handle.model
    config = getattr(model, "config", None)
    original = getattr(config, "_attn_implementation", None)
    switch = needed and original not in (None, "eager") and hasattr(model, "set_attn_implementation")
    with handle.lock:
        if switch:
            model.set_attn_implementation("eager")
        try:
            yield
        finally:
            if switch:
                model.set_attn_implementation(original)


def attention_pattern(handle: ModelHandle, batch: Batch, layer: int) -> torch.Tensor:
    """Attention weights of every head of ``layer`` on ``batch``: Float[Tensor, "batch head query key"]
    on the CPU (each row sums to 1 over the keys; causal, so zero above the diagonal).

    The model runs eager attention for this one pass (``eager_attention``), which stops after ``layer``.
    ``UserError`` for a layer the model lacks or an architecture that does not return weights.
    """
    if not 0 <= layer < handle.n_layers:
        raise UserError(f"layer {layer} does not exist: choose 0..{handle.n_layers - 1}")
    module = handle.adapter.attention(handle.adapter.layers(handle.model)[layer])
    captured: dict = {}

    def hook(mod, args, output):
        captured["weights"] = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        raise Stop

    with handle.lock, torch.inference_mode(), eager_attention(handle):
        with removing([module.register_forward_hook(hook)]):
            run_until_stop(handle, batch)
    weights = captured.get("weights")
    if weights is None:
        raise UserError(f"{handle.architecture} does not return attention weights, so its patterns cannot be shown")
    return weights.detach().float().cpu()


def after_first_mlp(handle: ModelHandle, token_ids: Sequence[int]) -> torch.Tensor:
    """Each token alone through layer 0 with its attention heads zero-ablated: the embedding plus what the
    first MLP adds ("effective embedding" in successor-head work). Float[Tensor, "token d_model"]."""
    ids = torch.tensor(list(token_ids), dtype=torch.long).unsqueeze(1)
    batch = Batch(ids, torch.ones_like(ids), [1] * len(ids))
    layer0 = handle.adapter.layers(handle.model)[0]
    captured: dict = {}

    def hook(module, args, output):
        captured["h"] = output_tensor(output)[:, 0].detach()
        raise Stop

    every_head = [[Component(0, h) for h in range(handle.n_heads)]]
    with handle.lock, torch.inference_mode(), replacing(handle, zero_activations(handle), len(ids), every_head):
        with removing([layer0.register_forward_hook(hook)]):
            run_until_stop(handle, batch)
    return captured["h"]


def head_outputs(handle: ModelHandle, residual: torch.Tensor, layers: Sequence[int] | None = None) -> torch.Tensor:
    """What each head alone writes into the residual stream when its layer's input is ``residual``,
    Float[Tensor, "n d_model"], at a lone position.

    Alone, a query attends only to itself (weight 1), so the head applies its OV circuit: value projection
    of the layer's input norm, its slice of the output projection, and whatever the block applies after
    it (Gemma 2/3's post-attention norm). Measured through the model itself: in copy h every other head
    and the MLP are zero-ablated, and a last copy with every head ablated is subtracted (it holds the
    projection's bias). Returns Float[Tensor, "layer head n d_model"] for ``layers`` (default all); one pass.
    """
    layers = list(range(handle.n_layers)) if layers is None else list(layers)
    blocks = handle.adapter.layers(handle.model)
    n, n_heads = residual.shape[0], handle.n_heads
    copies = n_heads + 1
    ids = torch.full((copies * n, 1), handle.pad_token_id, dtype=torch.long)
    batch = Batch(ids, torch.ones_like(ids), [1] * (copies * n))
    variants = [[Component(l, g) for l in layers for g in range(n_heads) if g != keep] + [Component(l) for l in layers]
                for keep in range(copies)]  # copy n_heads keeps no head
    written: dict[int, torch.Tensor] = {}
    last = max(layers)
    tiled = residual.repeat(copies, 1).unsqueeze(1)  # [copies*n, 1, d_model]

    def set_input(module, args, kwargs):
        x, rebuild = first_tensor(args, kwargs)
        return rebuild(tiled.to(x.device, x.dtype))

    def keep_output(layer):
        def hook(module, args, output):
            out = output_tensor(output)[:, 0].detach().reshape(copies, n, -1)
            written[layer] = out[:n_heads] - out[n_heads:]
            if layer == last:
                raise Stop

        return hook

    with handle.lock, torch.inference_mode(), replacing(handle, zero_activations(handle), n, variants):
        with removing([]) as hooks:
            for layer in layers:
                hooks.append(blocks[layer].register_forward_pre_hook(set_input, with_kwargs=True))
                hooks.append(blocks[layer].register_forward_hook(keep_output(layer)))
            run_until_stop(handle, batch)
    return torch.stack([written[layer].to(written[layers[0]].device) for layer in layers])
