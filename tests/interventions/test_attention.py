"""Single heads: attention patterns, OV circuits (head_outputs) and the embedding after the first MLP."""

import torch

from core import interventions as iv
from tests import tiny
from tests.interventions.batches import equal_length_batch


def test_attention_pattern_is_causal_and_sums_to_one(handle):
    batch = equal_length_batch(handle, n=2, length=5)
    before = handle.model.config._attn_implementation
    pattern = handle.attention_pattern(batch, 1)
    assert pattern.shape == (2, handle.n_heads, 5, 5)
    assert torch.allclose(pattern.sum(-1), torch.ones(2, handle.n_heads, 5), atol=1e-5)
    assert torch.all(pattern.triu(1) == 0)
    assert handle.model.config._attn_implementation == before


def test_attention_pattern_of_a_sdpa_model_switches_back():
    handle = tiny.handle("llama")
    handle.model.set_attn_implementation("sdpa")
    batch = equal_length_batch(handle, n=2, length=5)
    run = handle.record_run(batch)
    pattern = handle.attention_pattern(batch, 0)
    assert handle.model.config._attn_implementation == "sdpa"
    assert pattern.shape == (2, 4, 5, 5)
    # The weights reproduce the head's output: pattern @ V, read at the output projection's input.
    assert torch.allclose(pattern.sum(-1), torch.ones(2, 4, 5), atol=1e-5)
    assert torch.allclose(handle.record_run(batch).final, run.final, atol=1e-6)


def test_head_outputs_are_the_ov_circuit():
    """Llama: head h of layer l writes W_O[:, h] · W_V[h] · RMSNorm_l(x) for a lone token (GQA: kv head h // 2)."""
    handle = tiny.handle("llama")
    x = torch.randn(3, handle.d_model, generator=torch.Generator().manual_seed(2))
    out = handle.head_ov(x)
    assert out.shape == (handle.n_layers, handle.n_heads, 3, handle.d_model)
    block = handle.adapter.layers(handle.model)[1]
    attn, hd = block.self_attn, handle.head_dim
    with torch.no_grad():
        v = attn.v_proj(block.input_layernorm(x))  # [3, kv_heads*hd]
        for head in range(handle.n_heads):
            kv = head // (handle.n_heads // handle.model.config.num_key_value_heads)
            expected = v[:, kv * hd:(kv + 1) * hd] @ attn.o_proj.weight[:, head * hd:(head + 1) * hd].T
            assert torch.allclose(out[1, head], expected, atol=1e-4)


def test_head_outputs_include_gemma3s_post_attention_norm():
    handle = tiny.handle("gemma3", style="sentencepiece")
    x = torch.randn(3, handle.d_model, generator=torch.Generator().manual_seed(4))
    out = handle.head_ov(x, layers=[2])
    assert out.shape == (1, handle.n_heads, 3, handle.d_model)
    block = handle.adapter.layers(handle.model)[2]
    attn, hd = block.self_attn, handle.head_dim
    with torch.no_grad():
        v = attn.v_proj(block.input_layernorm(x))
        kv = 3 // (handle.n_heads // handle.model.config.num_key_value_heads)
        o = v[:, kv * hd:(kv + 1) * hd] @ attn.o_proj.weight[:, 3 * hd:4 * hd].T
        assert torch.allclose(out[0, 3], block.post_attention_layernorm(o), atol=1e-4)


def test_after_first_mlp_is_embedding_plus_mlp0():
    handle = tiny.handle("llama")
    ids = [5, 9, 40]
    got = handle.after_first_mlp(ids)
    block = handle.adapter.layers(handle.model)[0]
    with torch.no_grad():
        e = handle.adapter.embed(handle.model)(torch.tensor(ids))
        expected = e + block.mlp(block.post_attention_layernorm(e))
    assert torch.allclose(got, expected, atol=1e-4)
