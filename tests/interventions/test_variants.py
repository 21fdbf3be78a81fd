"""Head/MLP ablation hooks and batched resumed ablations (core.interventions.variants) on tiny random models."""

import pytest
import torch

from core import interventions as iv
from core.errors import UserError
from tests import tiny
from tests.interventions.batches import equal_length_batch


def test_ablating_a_head_with_its_own_clean_output_changes_nothing(handle):
    batch = equal_length_batch(handle)
    run = handle.record_run(batch)
    every = iv.heads(handle) + iv.mlps(handle)
    patched = handle.forward_with(batch, run.activations, every)
    assert torch.allclose(patched, run.final, atol=1e-5)
    batched = handle.run_variants(run, run.activations, [[c] for c in every])
    assert torch.allclose(batched, run.final.expand_as(batched), atol=1e-5)
    # and a different value does change it (the hook is live)
    zeros = run.activations.zeros()
    assert not torch.allclose(handle.forward_with(batch, zeros, [iv.Component(0, 1)]), run.final, atol=1e-3)


@pytest.mark.parametrize("layer", [0, 2])
def test_zero_ablating_every_head_of_a_layer_equals_removing_the_attention_block(handle, layer):
    """Zero heads leave only the output projection's bias (none in Llama/NeoX-without-bias): compare with
    the attention module's output replaced by that bias, through an independent hook on the attention module."""
    batch = equal_length_batch(handle)
    run = handle.record_run(batch)
    zero_heads = handle.forward_with(batch, run.activations.zeros(),
                                 [iv.Component(layer, h) for h in range(handle.n_heads)])
    block = handle.adapter.layers(handle.model)[layer]
    proj = handle.adapter.attn_out_proj(block)
    bias = getattr(proj, "bias", None)

    def remove(module, args, output):
        out = output[0]
        replaced = torch.zeros_like(out) if bias is None else bias.detach().expand_as(out).clone()
        return (replaced, *output[1:])

    hook = handle.adapter.attention(block).register_forward_hook(remove)
    try:
        with torch.inference_mode():
            removed = handle.forward_with(batch, run.activations, [])
    finally:
        hook.remove()
    assert torch.allclose(zero_heads, removed, atol=1e-5)
    assert not torch.allclose(zero_heads, run.final, atol=1e-3)


def test_gpt2_zero_heads_without_bias_is_exactly_no_attention_block():
    handle = tiny.handle("gpt2", style="gpt2")
    block = handle.adapter.layers(handle.model)[1]
    with torch.no_grad():
        handle.adapter.attn_out_proj(block).bias.zero_()
    batch = equal_length_batch(handle)
    run = handle.record_run(batch)
    zero_heads = handle.forward_with(batch, run.activations.zeros(), [iv.Component(1, h) for h in range(4)])
    hook = handle.adapter.attention(block).register_forward_hook(lambda m, a, o: (torch.zeros_like(o[0]), *o[1:]))
    try:
        removed = handle.forward_with(batch, run.activations, [])
    finally:
        hook.remove()
    assert torch.allclose(zero_heads, removed, atol=1e-5)


def test_batched_resumed_ablations_equal_one_full_pass_each(handle):
    batch = equal_length_batch(handle, n=3, length=5)
    corrupt = equal_length_batch(handle, n=3, length=5, seed=1)
    run = handle.record_run(batch)
    values = iv.replacement("mean", handle.capture(corrupt), 3)
    variants = [[iv.Component(2, 3)], [iv.Component(0, 0)], [iv.Component(1)], [],
                [iv.Component(1, 2), iv.Component(2), iv.Component(0, 3)]]
    batched = handle.run_variants(run, values, variants, max_tokens=2 * 3 * 5)  # forces several passes
    for variant, result in zip(variants, batched):
        assert torch.allclose(result, handle.forward_with(batch, values, variant), atol=1e-5)


def test_unequal_lengths_and_bad_components_are_user_errors():
    handle = tiny.handle("llama")
    batch = handle.encode(["one two three", "one"])
    with pytest.raises(UserError, match="same number of tokens"):
        handle.record_run(batch)
    run = handle.record_run(equal_length_batch(handle))
    with pytest.raises(UserError, match="does not exist"):
        handle.run_variants(run, run.activations, [[iv.Component(7, 0)]])
    other = handle.capture(equal_length_batch(handle, length=4))
    with pytest.raises(UserError, match="same token length"):
        handle.run_variants(run, other, [[iv.Component(0, 0)]])
