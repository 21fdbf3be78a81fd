"""Clean passes: every component's activations (``capture``), and a pass recorded so it can resume (``record``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from core.interventions.components import Activations
from core.interventions.hooks import capturing, first_tensor, removing, run_body, same_length, stacked
from core.interventions.sites import add_edit_hooks
from core.models.handle import Batch, ModelHandle
from core.models.sites import Edit


@dataclass
class CleanRun:
    """One recorded forward pass over equally long prompts.

    ``calls[l]`` is what decoder layer l was called with (positional args, hidden states first, and
    keyword args: masks, rotary embeddings), so a pass can resume from any layer; ``activations`` are
    every component's (see ``Activations``); ``final`` is Float[Tensor, "batch d_model"], the last
    layer's output at the last position (before the final norm).
    """

    n_prompts: int
    n_positions: int
    calls: list[tuple[tuple, dict]]
    activations: Activations
    final: torch.Tensor

    @property
    def inputs(self) -> list[torch.Tensor]:
        """The residual stream entering each block, Float[Tensor, "batch pos d_model"] per layer."""
        return [first_tensor(args, kwargs)[0] for args, kwargs in self.calls]


def record(handle: ModelHandle, batch: Batch, edits: Sequence[Edit] = ()) -> CleanRun:
    """Run the prompts once (all the same token length), keeping every layer's call, every component's
    activations and the final residual; ``edits`` apply during the pass (the recorded calls see them)."""
    same_length(batch)
    layers = handle.adapter.layers(handle.model)
    calls: list = [None] * len(layers)

    def call_hook(layer):
        def hook(module, args, kwargs):
            calls[layer] = (args, dict(kwargs))

        return hook

    with handle.lock:  # hooks are global to the shared model: register them under the lock too
        edit_hooks: list = []
        add_edit_hooks(handle, edits, edit_hooks)  # first: the recorded calls see the edited inputs
        with removing(edit_hooks + [layer.register_forward_pre_hook(call_hook(i), with_kwargs=True)
                                    for i, layer in enumerate(layers)]):
            with torch.inference_mode(), capturing(handle) as store:
                run_body(handle, batch)
    return CleanRun(
        n_prompts=len(batch.lengths),
        n_positions=batch.input_ids.shape[1],
        calls=calls,
        activations=stacked(handle, store),
        final=store["final"][:, -1],
    )


def capture(handle: ModelHandle, batch: Batch) -> Activations:
    """Every component's activations on these prompts (all the same token length; one forward pass)."""
    same_length(batch)
    with handle.lock, torch.inference_mode(), capturing(handle) as store:
        run_body(handle, batch)
    return stacked(handle, store)
