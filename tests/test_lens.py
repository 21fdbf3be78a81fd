"""The logit lens against the models' own outputs, on every adapter and on the real default model."""

import math

import numpy as np
import pytest
import torch

from core.errors import UserError
from core.lens import energy_of, run_lens
from core.tokens import word_token_set
from tests import tiny

PROMPTS = ["The capital of France is", "1 2 3 4", "Monday Tuesday Wednesday Thursday Friday"]


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_last_layer_reproduces_model_distribution(family):
    handle = tiny.handle(family)
    result = run_lens(handle, PROMPTS, positions="all", top_k=5)
    batch = handle.encode(PROMPTS)
    probs = handle.logits(batch).softmax(-1)  # [prompt, padded pos, vocab]
    for p, length in enumerate(batch.lengths):
        pad = batch.input_ids.shape[1] - length
        model_top = probs[p, pad:].topk(5, dim=-1)
        lens_slots = result.slot_mask[p].sum()
        assert lens_slots == length
        np.testing.assert_array_equal(result.top_ids[-1, p, :length], model_top.indices.numpy())
        np.testing.assert_allclose(result.top_probs[-1, p, :length], model_top.values.numpy(), atol=1e-4)
    assert np.abs(result.kl_to_final_bits[-1]).max() == 0.0  # exactly, on every CPU
    # The model's own entropy, computed here from its logits, in bits.
    last = probs[0, -1]
    entropy = float(-(last * last.log()).sum() / math.log(2))
    assert result.entropy_bits[-1, 0, -1] == pytest.approx(entropy, abs=1e-3)


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2", "gpt_neox"])
def test_batched_equals_one_prompt_at_a_time(family):
    handle = tiny.handle(family)
    batched = run_lens(handle, PROMPTS, positions=[0, -1], top_k=3, batch_size=3)
    for p, prompt in enumerate(PROMPTS):
        alone = run_lens(handle, prompt, positions=[0, -1], top_k=3)
        np.testing.assert_allclose(batched.top_probs[:, p], alone.top_probs[:, 0], atol=1e-4)
        np.testing.assert_array_equal(batched.top_ids[:, p, :, 0], alone.top_ids[:, 0, :, 0])
        np.testing.assert_allclose(batched.entropy_bits[:, p], alone.entropy_bits[:, 0], atol=1e-3)
        np.testing.assert_allclose(batched.kl_to_final_bits[:, p], alone.kl_to_final_bits[:, 0], atol=1e-3)


def test_layer_zero_decodes_the_embeddings_and_middle_layers_differ():
    handle = tiny.handle("llama")
    batch = handle.encode(PROMPTS[:1])
    residual = handle.residuals(batch)
    embeds = handle.adapter.embed(handle.model)(batch.input_ids)
    torch.testing.assert_close(residual[0], embeds)
    assert residual.shape == (handle.n_layers + 1, 1, batch.lengths[0], handle.d_model)
    assert not torch.allclose(residual[1], residual[2])


def test_targets_token_sets_and_ranks_agree_with_the_distribution():
    handle = tiny.handle("llama")
    tok = handle.tokenizer
    word_set = word_token_set(tok, "Paris")
    first = run_lens(handle, PROMPTS[0], top_k=3)
    top1 = int(first.top_ids[2, 0, 0, 0])
    result = run_lens(
        handle, PROMPTS[0], top_k=3, targets=[[top1, 5]], token_sets=[[word_set.ids, {top1, 5}]],
    )
    batch = handle.encode(PROMPTS[:1])
    probs = handle.decode(handle.residuals(batch)[:, :, -1]).softmax(-1)[:, 0]  # [layer, vocab]
    assert (result.target_ranks[2, 0, 0, 0]) == 1
    for layer in range(handle.n_layers + 1):
        p = probs[layer]
        assert result.target_probs[layer, 0, 0, 1] == pytest.approx(float(p[5]), abs=1e-6)
        assert result.target_ranks[layer, 0, 0, 1] == 1 + int((p > p[5]).sum())
        assert result.set_probs[layer, 0, 0, 0] == pytest.approx(float(p[list(word_set.ids)].sum()), abs=1e-5)
        assert result.set_probs[layer, 0, 0, 1] == pytest.approx(float(p[top1] + p[5]), abs=1e-5)


def test_energy_matches_brute_force_definition():
    handle = tiny.handle("gemma3")  # Gemma's norm scales by (1 + weight): the adapter must say so
    with torch.no_grad():
        handle.adapter.final_norm(handle.model).weight.normal_(0, 0.5)
    h = torch.randn(4, handle.d_model)
    gamma = 1 + handle.adapter.final_norm(handle.model).weight.float()
    u = handle.adapter.unembed(handle.model).weight.float() * gamma
    u = u[u.norm(dim=-1) > 0]
    u = u / u.norm(dim=-1, keepdim=True)
    hn = h / h.norm(dim=-1, keepdim=True)
    brute = ((u @ hn.T) ** 2).mean(0).sqrt() / ((u @ u.T) ** 2).mean().sqrt()
    # No cache to clear: the Gram matrix is cached per model object (weakly), never per reusable id().
    torch.testing.assert_close(energy_of(handle, h), brute, atol=1e-5, rtol=1e-4)


def test_bad_requests_are_user_errors():
    handle = tiny.handle("llama")
    with pytest.raises(UserError, match="empty"):
        run_lens(handle, "   ")
    with pytest.raises(UserError, match="outside the prompt"):
        run_lens(handle, "1 2", positions=[40])
    with pytest.raises(UserError, match="top-k"):
        run_lens(handle, "1 2", top_k=0)
    with pytest.raises(UserError, match="outside the vocabulary"):
        run_lens(handle, "1 2", targets=[[10**9]])
    with pytest.raises(UserError, match="longer than the model's context"):
        run_lens(handle, "1 " * 400)


def test_real_default_model_lens(gemma):
    prompt = "The Eiffel Tower is in the city of"
    result = run_lens(gemma, prompt, positions="all", top_k=10)
    assert result.n_layers == 18 and result.top_ids.shape == (19, 1, len(result.tokens[0]), 10)
    assert result.tokens[0][0] == "<bos>"
    batch = gemma.encode([prompt])
    probs = gemma.logits(batch).softmax(-1)[0]
    np.testing.assert_allclose(result.top_probs[-1, 0], probs.topk(10, dim=-1).values.numpy(), atol=1e-4)
    assert result.top_tokens[-1][0][-1][0] == " Paris"
    entropy = result.entropy_bits[:, 0, -1]
    assert 0 <= entropy.min() and entropy.max() <= math.log2(gemma.vocab_size) + 1e-3
    # " Paris" surfaces late (layer 14 of 18 in our runs) and then stays on top to the output.
    top1 = [result.top_tokens[layer][0][-1][0] for layer in result.layers]
    first = top1.index(" Paris")
    assert 10 <= first < 18 and set(top1[first:]) == {" Paris"}


def test_real_tokenizer_facts(gemma):
    tok = gemma.tokenizer
    pieces = tok.convert_ids_to_tokens(tok(" 4", add_special_tokens=False)["input_ids"])
    assert pieces == ["▁", "4"]
    assert len(tok("५", add_special_tokens=False)["input_ids"]) == 1  # Devanagari digit: one token
    # REFERENCES.md expects Gemma 3 to byte-encode Tamil digits; this GGUF's vocabulary has ௫ as one token.
    assert tok.convert_ids_to_tokens(tok("௫", add_special_tokens=False)["input_ids"]) == ["௫"]
    assert tok.convert_ids_to_tokens(tok("மலர்", add_special_tokens=False)["input_ids"]) == ["ம", "லர்"]


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])  # gemma2 soft-caps its logits: the general path
def test_entropy_and_kl_of_every_layer_equal_the_full_distributions(family):
    handle = tiny.handle(family)
    result = run_lens(handle, PROMPTS, positions="all", top_k=3)
    batch = handle.encode(PROMPTS)
    logp = torch.log_softmax(handle.decode(handle.residuals(batch)).double(), -1)  # [layer, prompt, pos, V]
    for p, length in enumerate(batch.lengths):
        lp = logp[:, p, batch.input_ids.shape[1] - length:]
        kl = (lp[-1:].exp() * (lp[-1:] - lp)).sum(-1) / math.log(2)
        entropy = -(lp.exp() * lp).sum(-1) / math.log(2)
        np.testing.assert_allclose(result.kl_to_final_bits[:, p, :length], kl.numpy(), atol=1e-4)
        np.testing.assert_allclose(result.entropy_bits[:, p, :length], entropy.numpy(), atol=1e-4)


@pytest.mark.parametrize("family", ["llama", "gpt2"])  # gpt2: a bias-free tied unembedding; llama: untied
def test_the_scan_by_onednn_equals_the_scan_by_torch_mm(family, monkeypatch):
    """The fused scan multiplies by oneDNN where the CPU build has it (1.3-1.8x MKL on an AMD EPYC): every
    metric must agree with the plain ``torch.mm`` scan to float32 rounding, and the last layer stay exact."""
    import core.lens.scan

    if not core.lens.scan._ONEDNN:
        pytest.skip("this torch build has no oneDNN matmul")
    handle = tiny.handle(family)
    calls = []
    real = core.lens.scan._onednn_mm
    monkeypatch.setattr(core.lens.scan, "_onednn_mm", lambda *a: calls.append(1) or real(*a))
    fast = run_lens(handle, PROMPTS, positions="all", top_k=5)
    assert calls, "the scan did not use oneDNN"
    monkeypatch.setattr(core.lens.scan, "_ONEDNN", False)
    plain = run_lens(handle, PROMPTS, positions="all", top_k=5)
    np.testing.assert_array_equal(fast.top_ids[-1], plain.top_ids[-1])
    np.testing.assert_allclose(fast.top_probs, plain.top_probs, atol=1e-6)
    np.testing.assert_allclose(fast.entropy_bits, plain.entropy_bits, atol=1e-5)
    np.testing.assert_allclose(fast.kl_to_final_bits, plain.kl_to_final_bits, atol=1e-5)
    assert np.abs(fast.kl_to_final_bits[-1]).max() == 0.0
