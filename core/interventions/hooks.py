"""The hooks every intervention is made of: replace a component's output, record it, stop a pass early.

Components are reached only through ``handle.adapter``:

* a head's output is its slice ``[h*head_dim:(h+1)*head_dim]`` of the INPUT of the attention output
  projection (``adapter.attn_out_proj``: Llama/Gemma ``o_proj``, GPT-2's Conv1D ``c_proj``, GPT-NeoX's
  ``dense``), replaced by a forward pre-hook, so the projection (and its bias) still runs;
* an MLP's output is the output of ``adapter.mlp(layer)``, replaced by a forward hook.

A batch may hold k copies of the prompts, copy c replacing its own set of components (row
``c * n_prompts + p`` is prompt p in copy c): many ablations in one forward pass.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Collection, Iterator, Sequence

import torch

from core.errors import UserError
from core.interventions.components import Activations, Component, check_components
from core.models.handle import Batch, ModelHandle


def model_inputs(handle: ModelHandle, batch: Batch) -> dict:
    device = handle.input_device
    return dict(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                position_ids=batch.position_ids.to(device))


def run_body(handle: ModelHandle, batch: Batch):
    """Run the decoder stack (no unembedding) on a batch; hooks see every layer. Take ``handle.lock`` around it."""
    return handle.adapter.run_body(handle.model, **model_inputs(handle, batch))


class Stop(Exception):
    """Raised by a hook once it has what it needs, to skip the rest of the forward pass."""


def run_until_stop(handle: ModelHandle, batch: Batch) -> None:
    """One pass of the model body that a hook may end early by raising ``Stop``."""
    try:
        run_body(handle, batch)
    except Stop:
        pass


@contextmanager
def removing(hooks: list) -> Iterator[list]:
    """Remove every hook handle in ``hooks`` (also those appended inside the block) when the block ends."""
    try:
        yield hooks
    finally:
        for h in hooks:
            h.remove()


def first_tensor(args: tuple, kwargs: dict) -> tuple[torch.Tensor, Callable[[torch.Tensor], tuple[tuple, dict]]]:
    """A module's main input and a function rebuilding (args, kwargs) with it replaced."""
    if args:
        return args[0], lambda new: ((new, *args[1:]), kwargs)
    for key in ("hidden_states", "input", "x"):
        if key in kwargs:
            return kwargs[key], lambda new, key=key: (args, {**kwargs, key: new})
    raise RuntimeError(f"cannot find the input tensor among the module's arguments ({sorted(kwargs)})")


def output_tensor(output) -> torch.Tensor:
    """A module's main output (decoder layers and attention modules return tuples)."""
    return output[0] if isinstance(output, tuple) else output


def replace_output(output, new: torch.Tensor):
    return (new, *output[1:]) if isinstance(output, tuple) else new


def same_length(batch: Batch) -> None:
    """``UserError`` unless every prompt of ``batch`` has the same number of tokens."""
    if len(set(batch.lengths)) != 1:
        raise UserError(
            f"the prompts have different token lengths ({sorted(set(batch.lengths))}): ablation and patching "
            "compare positions one to one, so every prompt must have the same number of tokens"
        )


# -- replacing ----------------------------------------------------------------------------------------------


def _head_hook(values: torch.Tensor, mask: torch.Tensor, n_prompts: int, n_heads: int):
    """Pre-hook replacing, in copy c, the heads where ``mask[c]`` is True by ``values`` [1|batch, pos, head, head_dim]."""

    def hook(module, args, kwargs):
        x, rebuild = first_tensor(args, kwargs)
        rows, positions, width = x.shape
        copies = rows // n_prompts
        split = x.reshape(copies, n_prompts, positions, n_heads, width // n_heads)
        source = values.to(device=x.device, dtype=x.dtype).unsqueeze(0)
        new = torch.where(mask.to(x.device).view(copies, 1, 1, n_heads, 1), source, split)
        return rebuild(new.reshape(x.shape))

    return hook


def _mlp_hook(values: torch.Tensor, mask: torch.Tensor, n_prompts: int):
    """Forward hook replacing the MLP output of copy c where ``mask[c]`` is True by ``values`` [1|batch, pos, d_model]."""

    def hook(module, args, output):
        y = output_tensor(output)
        rows, positions, width = y.shape
        copies = rows // n_prompts
        split = y.reshape(copies, n_prompts, positions, width)
        source = values.to(device=y.device, dtype=y.dtype).unsqueeze(0)
        new = torch.where(mask.to(y.device).view(copies, 1, 1, 1), source, split)
        return replace_output(output, new.reshape(y.shape))

    return hook


def _masks(handle: ModelHandle, variants: Sequence[Collection[Component]]):
    """Per layer, which copy ablates which heads ([copies, head] bool) and whether it ablates the MLP ([copies])."""
    check_components(handle, variants)
    head_masks: dict[int, torch.Tensor] = {}
    mlp_masks: dict[int, torch.Tensor] = {}
    for copy, components in enumerate(variants):
        for c in components:
            if c.is_mlp:
                mlp_masks.setdefault(c.layer, torch.zeros(len(variants), dtype=torch.bool))[copy] = True
            else:
                head_masks.setdefault(c.layer, torch.zeros(len(variants), handle.n_heads, dtype=torch.bool))[copy, c.head] = True
    return head_masks, mlp_masks


@contextmanager
def replacing(
    handle: ModelHandle, values: Activations, n_prompts: int, variants: Sequence[Collection[Component]]
) -> Iterator[None]:
    """Hooks under which a batch of ``len(variants) * n_prompts`` rows replaces, in copy c, the
    components of ``variants[c]`` by ``values`` (batch axis 1 or ``n_prompts``). Take ``handle.lock``
    around it: hooks are global to the shared model."""
    layers = handle.adapter.layers(handle.model)
    head_masks, mlp_masks = _masks(handle, variants)
    with removing([]) as hooks:
        for layer, mask in head_masks.items():
            module = handle.adapter.attn_out_proj(layers[layer])
            hooks.append(module.register_forward_pre_hook(
                _head_hook(values.heads[layer], mask, n_prompts, handle.n_heads), with_kwargs=True))
        for layer, mask in mlp_masks.items():
            module = handle.adapter.mlp(layers[layer])
            hooks.append(module.register_forward_hook(_mlp_hook(values.mlps[layer], mask, n_prompts)))
        yield


# -- capturing ----------------------------------------------------------------------------------------------


@contextmanager
def capturing(handle: ModelHandle, keep_graph: bool = False) -> Iterator[dict]:
    """Hooks storing, for the pass run inside the block, every head input of the output projection
    (``store["heads"][l]``: [batch, pos, n_heads*head_dim]), every MLP output (``store["mlps"][l]``:
    [batch, pos, d_model]) and the last layer's output (``store["final"]``: [batch, pos, d_model]);
    detached unless ``keep_graph``."""
    layers = handle.adapter.layers(handle.model)
    store: dict = {"heads": [None] * len(layers), "mlps": [None] * len(layers), "final": None}

    def keep(t: torch.Tensor) -> torch.Tensor:
        return t if keep_graph else t.detach()

    def head_hook(layer):
        def hook(module, args, kwargs):
            store["heads"][layer] = keep(first_tensor(args, kwargs)[0])

        return hook

    in_place = handle.adapter.mlp_output_in_place  # Falcon adds attention into the MLP's output tensor in place

    def mlp_hook(layer):
        def hook(module, args, output):
            out = output_tensor(output)
            store["mlps"][layer] = keep(out)
            if in_place:  # Falcon adds the attention output into the MLP's output in place: let it add into a copy
                return replace_output(output, out.clone())

        return hook

    def final_hook(module, args, output):
        store["final"] = keep(output_tensor(output))

    with removing([]) as hooks:
        for i, layer in enumerate(layers):
            hooks.append(handle.adapter.attn_out_proj(layer).register_forward_pre_hook(head_hook(i), with_kwargs=True))
            hooks.append(handle.adapter.mlp(layer).register_forward_hook(mlp_hook(i)))
        hooks.append(layers[-1].register_forward_hook(final_hook))
        yield store


def stacked(handle: ModelHandle, store: dict) -> Activations:
    """A ``capturing`` store as ``Activations`` (heads split by head)."""
    heads_in = torch.stack([h.to(store["heads"][0].device) for h in store["heads"]])  # [layer, batch, pos, width]
    layers, batch, positions, width = heads_in.shape
    mlp_out = torch.stack([m.to(store["mlps"][0].device) for m in store["mlps"]])
    return Activations(heads_in.reshape(layers, batch, positions, handle.n_heads, width // handle.n_heads), mlp_out)
