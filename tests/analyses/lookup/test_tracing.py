"""Causal tracing mechanics on tiny random models: restorations batched and resumed as plain passes would give."""

import numpy as np
import pytest
import torch

from core.analyses.lookup.answers import answer_probs, make_batch
from core.analyses.lookup.tracing import Restoration, _passes, corrupt, restore, trace, window_of

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT = "The capital of France is Paris. The capital of Germany is"


def setup(handle, noise=3.0):
    ids = handle.tokenizer(PROMPT)["input_ids"]
    subject = (2, 5)
    with torch.inference_mode():
        answer = int(handle.logits(make_batch(handle, [ids]))[0, -1].argmax())
    return ids, subject, answer, corrupt(handle, ids, subject, answer, noise=noise, seed=1)


def test_restoring_every_position_of_a_residual_layer_gives_the_clean_p(family):
    ids, subject, answer, run = setup(family)
    assert abs(run.p_clean - run.p_corrupt) > 1e-4  # the noise bites
    every = tuple(range(len(ids)))
    restored = restore(family, run, [Restoration("residual", (layer,), every) for layer in range(family.n_layers)])
    assert np.allclose(restored, run.p_clean, rtol=1e-4, atol=1e-7)
    # the subject's positions alone suffice at layer 0 (the rest is not noised); one of them does not
    assert restore(family, run, [Restoration("residual", (0,), tuple(range(*subject)))])[0] == pytest.approx(run.p_clean, rel=1e-4)
    assert restore(family, run, [Restoration("residual", (0,), (subject[0],))])[0] != pytest.approx(run.p_clean, rel=1e-3)


def test_no_noise_gives_zero_effect_everywhere(family):
    ids, subject, answer, _ = setup(family)
    t = trace(family, ids, subject, answer, noise=0.0, seed=1, window=2)
    assert t.p_corrupt == pytest.approx(t.p_clean, abs=1e-7)
    for kind, effect in t.effects.items():
        assert np.abs(effect).max() < 1e-5, kind


def test_batched_restorations_equal_one_at_a_time(family):
    ids, subject, answer, run = setup(family)
    n, layers = len(ids), family.n_layers
    restorations = [Restoration("residual", (l,), (p,)) for l in range(layers) for p in (2, 4, n - 1)]
    restorations += [Restoration(kind, window_of(l, 2, layers), (p,)) for kind in ("mlp", "attention")
                     for l in range(layers) for p in (3, n - 1)]
    restorations += [Restoration("mlp", (0, 2), (2, 3, 4))]
    batched = restore(family, run, restorations, max_tokens=5 * n, min_tokens=0)  # several passes per start layer
    merged = restore(family, run, restorations, min_tokens=10**6)  # one pass from layer 0 for every row
    alone = np.array([restore(family, run, [r])[0] for r in restorations])
    assert np.allclose(batched, alone, rtol=1e-5, atol=1e-8) and np.allclose(merged, alone, rtol=1e-5, atol=1e-8)
    assert len(set(np.round(batched, 6))) > len(restorations) // 3  # they differ from each other


def test_resumed_restoration_equals_a_plain_forward_pass(family):
    """The reference: one ordinary forward pass with its own hooks (noise at block 0, the clean state
    written into block l's input at one position), no recorded calls, no resuming."""
    ids, subject, answer, run = setup(family)
    batch = make_batch(family, [ids])
    clean = family.residuals(batch)[:, 0]  # [layer, pos, d_model]: block inputs, then the output
    generator = torch.Generator().manual_seed(1)
    delta = torch.randn(subject[1] - subject[0], family.d_model, generator=generator) * run.noise_std
    blocks = family.adapter.layers(family.model)

    def noisy(module, args, kwargs):
        hidden = (args[0] if args else kwargs["hidden_states"]).clone()
        hidden[:, subject[0]:subject[1]] += delta
        return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

    for layer, position in [(0, 3), (1, 4), (family.n_layers - 1, len(ids) - 1), (2, len(ids) - 1)]:
        def restore_hook(module, args, kwargs, position=position, layer=layer):
            hidden = (args[0] if args else kwargs["hidden_states"]).clone()
            hidden[:, position] = clean[layer, position]
            return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

        hooks = [blocks[0].register_forward_pre_hook(noisy, with_kwargs=True),
                 blocks[layer].register_forward_pre_hook(restore_hook, with_kwargs=True)]
        try:
            with torch.inference_mode():
                logits = family.logits(batch)[0, -1]
        finally:
            for h in hooks:
                h.remove()
        expected = float(torch.softmax(logits, -1)[answer])
        got = restore(family, run, [Restoration("residual", (layer,), (position,))])[0]
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-8), (layer, position)


def test_trace_layout(family):
    ids, subject, answer, _ = setup(family)
    t = trace(family, ids, subject, answer, noise=3.0, seed=1)
    n, layers = len(ids), family.n_layers
    assert t.effects["residual"].shape == (layers + 1, n)
    assert t.effects["mlp"].shape == t.effects["attention"].shape == (layers, n)
    for effect in t.effects.values():
        assert not effect[:, : subject[0]].any()  # before the subject nothing changed
    assert not t.effects["residual"][0, subject[1]:].any()  # embeddings after the subject are not noised
    output = t.effects["residual"][layers]
    assert output[-1] == pytest.approx(t.p_clean - t.p_corrupt) and not output[:-1].any()
    frame = t.frame()
    assert len(frame) == (3 * layers + 1) * n and set(frame["kind"]) == {"residual", "mlp", "attention"}
    assert t.peak()["indirect_effect"] == pytest.approx(t.effects["residual"].max())


def test_passes_close_at_a_layer_boundary_once_big_enough():
    starts = [0, 0, 1, 1, 1, 2, 5, 5]
    assert _passes(starts, 10, max_tokens=1000, min_tokens=0) == [[0, 1], [2, 3, 4], [5], [6, 7]]
    assert _passes(starts, 10, max_tokens=1000, min_tokens=30) == [[0, 1, 2, 3, 4], [5, 6, 7]]
    assert _passes(starts, 10, max_tokens=20, min_tokens=10**6) == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_window_of_is_centred_and_clipped():
    assert window_of(5, 3, 18) == (4, 5, 6)
    assert window_of(0, 3, 18) == (0, 1, 2)
    assert window_of(17, 4, 18) == (14, 15, 16, 17)
    assert window_of(7, 1, 18) == (7,)


def test_answer_probs_match_the_models_softmax(llama):
    batch = make_batch(llama, [llama.tokenizer(PROMPT)["input_ids"]])
    final = llama.residuals(batch)[-1, :, -1]
    with torch.inference_mode():
        expected = torch.softmax(llama.logits(batch)[0, -1], -1)
    ids = torch.tensor([5, 17])
    p, top = answer_probs(llama, final.expand(2, -1), ids)
    assert torch.allclose(p, expected[ids], rtol=1e-5) and (top == expected.argmax()).all()
