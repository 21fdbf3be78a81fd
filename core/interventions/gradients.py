"""Per-token gradients of every linear layer, streamed to the caller (the local backend's ``linear_gradients``).

For one predicted token the gradient of its loss with respect to a linear layer's weight is Σ_s δ_s x_sᵀ over
its context's positions: the layer's input ``x`` and the loss's gradient ``δ`` w.r.t. its output are all a
caller needs (the quanta sketch never forms the product). Autograd is asked only for the gradient w.r.t. the
embedding output, so it skips the weight-gradient products; quantized layers, which have no weight gradient,
still pass ``δ`` (their backward is differentiable).
"""

from __future__ import annotations

from typing import Callable

import torch

from core.errors import UserError
from core.interventions.hooks import output_tensor, removing, run_body
from core.models.handle import Batch, ModelHandle


def linear_gradients(handle: ModelHandle, batch: Batch, part: str,
                     loss: Callable[[torch.Tensor], torch.Tensor],
                     on_input: Callable[[str, torch.Tensor], None],
                     on_grad: Callable[[str, torch.Tensor], None]) -> torch.Tensor:
    """``ModelHandle.linear_gradients``: ``on_input(name, x)`` for each linear layer of ``part`` during the forward
    pass (``x`` is the tensor itself: layers reading one input get the same object), ``on_grad(name, δ)`` during the
    backward pass; ``loss(final)`` maps the last block's output [batch, pos, d_model] to [batch]. -> losses [batch]."""
    modules = handle.weights.linear_modules(part)
    if not modules:
        raise UserError(f"the model has no linear layers in its {part} parameters to take gradients of")
    captured: dict = {}
    dropped: list[str] = []

    def on_forward(name: str):
        def hook(module, args, output):
            if not output.requires_grad:
                return
            on_input(name, args[0])

            def on_backward(grad):
                if grad is None:  # a kernel without a backward pass dropped it: said after the pass
                    dropped.append(name)
                    return
                on_grad(name, grad)

            output.register_hook(on_backward)
        return hook

    def on_embed(module, args, output):
        if not output.requires_grad:  # frozen or quantized weights: make the residual stream a leaf
            output = output.detach().requires_grad_(True)
        captured["embedding"] = output
        return output

    def on_last(module, args, output):
        captured["residual"] = output_tensor(output)

    with handle.lock, removing([]) as hooks:  # hooks are global to the shared model: registered under the lock
        hooks.append(handle.adapter.embed(handle.model).register_forward_hook(on_embed))
        hooks.append(handle.adapter.layers(handle.model)[-1].register_forward_hook(on_last))
        hooks += [module.register_forward_hook(on_forward(name)) for name, module in modules.items()]
        with torch.inference_mode(False), torch.enable_grad():
            run_body(handle, batch)
            losses = loss(captured["residual"])
            torch.autograd.grad(losses.sum(), captured["embedding"])
    if dropped:
        raise UserError(f"per-token gradients cannot flow through {dropped[0]} ({type(modules[dropped[0]]).__name__}) "
                        "in this build: load the model without quantization (or in 8-bit) to find quanta")
    return losses.detach()
