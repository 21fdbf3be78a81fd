"""The local backend's plain passes: residuals at chosen positions, decoding, chosen tokens' logits, the model's logits."""

from __future__ import annotations

import torch

from core.interventions.hooks import first_tensor, model_inputs, output_tensor, removing, run_body
from core.models.handle import Batch, ModelHandle


def residuals(handle: ModelHandle, batch: Batch, index: torch.Tensor | None = None, sublayer: bool = False) -> torch.Tensor:
    """``ModelHandle.residuals``: hooks on the decoder layers, one pass, no autograd."""
    layers = handle.adapter.layers(handle.model)
    per_block = 2 if sublayer else 1
    captured: list[torch.Tensor | None] = [None] * (per_block * len(layers) + 1)
    block_inputs: list[torch.Tensor | None] = [None] * len(layers)
    scale = handle.weights.residual_scale

    def keep(hidden: torch.Tensor) -> torch.Tensor:
        if index is None:
            return hidden.detach()
        gather = index.to(hidden.device).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        return hidden.detach().gather(1, gather)

    def before(i):
        def hook(module, args, kwargs):
            hidden = first_tensor(args, kwargs)[0]
            if i == 0:
                captured[0] = keep(hidden)
            if sublayer:
                block_inputs[i] = hidden.detach()
        return hook

    def after(i):
        def hook(module, args, output):
            captured[per_block * (i + 1)] = keep(output_tensor(output))
        return hook

    def after_attention(i):
        def hook(module, args, output):
            branch = output_tensor(output)
            if scale != 1.0:
                branch = branch * scale
            captured[2 * i + 1] = keep(block_inputs[i] + branch.to(block_inputs[i].device))
        return hook

    with handle.lock, removing([]) as hooks:
        for i, layer in enumerate(layers):
            if i == 0 or sublayer:
                hooks.append(layer.register_forward_pre_hook(before(i), with_kwargs=True))
            hooks.append(layer.register_forward_hook(after(i)))
            if sublayer:
                hooks.append(handle.adapter.attn_branch(layer).register_forward_hook(after_attention(i)))
        with torch.inference_mode():
            run_body(handle, batch)
    device = captured[-1].device
    return torch.stack([c.to(device) for c in captured])


def decode(handle: ModelHandle, residual: torch.Tensor, differentiable: bool = False, softcap: bool = True) -> torch.Tensor:
    """``ModelHandle.decode``: final norm + unembedding (+ logit scale, + soft cap), float32."""
    norm = handle.adapter.final_norm(handle.model)
    unembed = handle.adapter.unembed(handle.model)
    if residual.shape[-1] != handle.d_model:
        raise ValueError(f"expected residual vectors of size d_model={handle.d_model}, got shape {tuple(residual.shape)}")
    with torch.inference_mode(not differentiable):
        weight = getattr(unembed, "weight", None)
        x = residual.to(norm.weight.device if hasattr(norm, "weight") else residual.device)
        logits = unembed(norm(x).to(weight.dtype if weight is not None and weight.is_floating_point() else x.dtype))
        logits = logits.float()
        scale = handle.weights.logit_scale
        if scale != 1.0:
            logits = logits * scale
        cap = handle.adapter.softcap(handle.model)
        if cap and softcap:
            logits = torch.tanh(logits / cap) * cap
    return logits


def token_logits(handle: ModelHandle, residual: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``ModelHandle.token_logits``: final norm, only the k unembedding rows, logit scale, soft cap; differentiable."""
    norm = handle.adapter.final_norm(handle.model)
    unembed = handle.adapter.unembed(handle.model)
    weight = getattr(unembed, "weight", None)
    device = weight.device if weight is not None else residual.device
    x = norm(residual.to(device))
    ids = ids.to(device)
    if weight is not None and weight.is_floating_point():
        rows = weight[ids]
        x = x.to(weight.dtype)
        logits = (x @ rows.T if ids.ndim == 1 else torch.einsum("nd,nkd->nk", x, rows)).float()
        bias = getattr(unembed, "bias", None)
        if bias is not None:
            logits = logits + bias[ids].float()
    else:  # quantized unembedding: the whole row of logits, then pick
        full = unembed(x).float()
        logits = full[:, ids] if ids.ndim == 1 else full.gather(1, ids)
    scale = handle.weights.logit_scale
    if scale != 1.0:
        logits = logits * scale
    cap = handle.adapter.softcap(handle.model)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def logits(handle: ModelHandle, batch: Batch) -> torch.Tensor:
    """``ModelHandle.logits``: the model's own forward pass."""
    with handle.lock, torch.inference_mode():
        return handle.adapter.run_logits(handle.model, **model_inputs(handle, batch)).float()
