"""Lens strategies: the tuned-lens format, the identity start, translators applied to every layer but the last,
training that lowers the KL, sub-layer rows, and tracked tokens."""

import json
import math

import numpy as np
import pytest
import torch

from core.errors import UserError
from core.lens import run_lens, sublayer_sites
from core.lenses import LogitLens, TunedLens, lens_for, load_tuned_lens
from core.analyses.tuned_lens.training import TrainingOptions, evaluate, train
from tests import tiny

TEXTS = ["The cat sat on the mat and the dog sat on the log. " * 6, "One two three four five six seven eight. " * 8,
         "Paris is the capital of France and Rome is the capital of Italy. " * 5]


def random_lens(handle, scale=0.05, seed=0):
    generator = torch.Generator().manual_seed(seed)
    lens = TunedLens.identity(handle)
    lens.weight = torch.randn(lens.weight.shape, generator=generator) * scale
    lens.bias = torch.randn(lens.bias.shape, generator=generator) * scale
    return lens


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])
def test_the_tuned_lens_changes_every_layer_but_the_last_which_stays_the_model(family):
    handle = tiny.handle(family)
    logit = run_lens(handle, "hello there world", positions="all", top_k=3)
    tuned = run_lens(handle, "hello there world", positions="all", top_k=3, lens=random_lens(handle))
    assert tuned.lens == "tuned" and logit.lens == "logit"
    np.testing.assert_array_equal(tuned.top_probs[-1], logit.top_probs[-1])
    assert np.abs(tuned.kl_to_final_bits[-1]).max() == 0.0
    assert all(not np.allclose(tuned.top_probs[l], logit.top_probs[l]) for l in range(handle.n_layers))
    identity = run_lens(handle, "hello there world", positions="all", top_k=3, lens=TunedLens.identity(handle))
    np.testing.assert_allclose(identity.top_probs, logit.top_probs, atol=1e-6)


def test_translators_are_applied_as_h_plus_Wh_plus_b():
    handle = tiny.handle("llama")
    lens = random_lens(handle)
    h = torch.randn(handle.n_layers + 1, 2, 5, handle.d_model)
    out = lens.transform(h)
    for layer in range(handle.n_layers):
        expected = h[layer] + h[layer] @ lens.weight[layer].T + lens.bias[layer]
        torch.testing.assert_close(out[layer], expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(out[-1], h[-1])


def test_the_folder_is_the_tuned_lens_package_format_and_round_trips(tmp_path):
    handle = tiny.handle("llama")
    lens = random_lens(handle)
    folder = lens.save(tmp_path / "lens")
    config = json.loads((folder / "config.json").read_text())
    assert config["lens_type"] == "linear_tuned_lens" and config["num_hidden_layers"] == handle.n_layers
    assert config["d_model"] == handle.d_model and config["bias"] is True and len(config["unembed_hash"]) == 64
    # params.pt is the state dict of a ModuleList of Linear(d, d): tuned-lens loads it with strict=True.
    translators = torch.nn.ModuleList([torch.nn.Linear(handle.d_model, handle.d_model) for _ in range(handle.n_layers)])
    translators.load_state_dict(torch.load(folder / "params.pt", weights_only=True), strict=True)
    torch.testing.assert_close(translators[1].weight.detach(), lens.weight[1])
    again = load_tuned_lens(folder, handle)
    assert torch.equal(again.weight, lens.weight) and torch.equal(again.bias, lens.bias)


def test_a_lens_for_another_model_or_a_missing_folder_is_one_clear_error(tmp_path):
    llama, other = tiny.handle("llama"), tiny.handle("llama", seed=7)
    folder = random_lens(llama).save(tmp_path / "lens")
    with pytest.raises(UserError, match="trained for .*unembedding differs"):
        load_tuned_lens(folder, other)
    with pytest.raises(UserError, match="not found"):
        load_tuned_lens(tmp_path / "nowhere", llama)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load_tuned_lens(tmp_path / "empty", llama)
    gpt2 = tiny.handle("gpt2")
    with pytest.raises(UserError, match="trained for"):
        load_tuned_lens(folder, gpt2) if gpt2.n_layers != llama.n_layers or gpt2.d_model != llama.d_model else \
            load_tuned_lens(folder, other)
    with pytest.raises(UserError, match="no tuned lens for"):
        lens_for(tiny.handle("qwen2"), "tuned")
    assert isinstance(lens_for(llama, "logit"), LogitLens)


def test_training_lowers_the_kl_to_the_final_layer_on_held_out_text():
    handle = tiny.handle("llama", seed=2)
    lens, info = train(handle, TEXTS, TrainingOptions(train_tokens=600, seq_len=32, steps=40, batch_tokens=128,
                                                      top_final=8, max_vocab=512, lr=3e-3))
    assert info["train_tokens"] >= 256 and info["vocab_subset"] <= 512
    held_out = ["the dog sat on the cat", "three four five six"]
    kl = evaluate(handle, held_out, {"logit": LogitLens(), "tuned": lens})
    assert kl["tuned"][-1] == kl["logit"][-1] == 0.0
    improved = [t < l for t, l in zip(kl["tuned"][1:-1], kl["logit"][1:-1])]
    assert sum(improved) >= len(improved) - 1, kl
    assert sum(kl["tuned"][:-1]) < 0.8 * sum(kl["logit"][:-1]), kl


@pytest.mark.parametrize("family", ["llama", "gpt2"])  # gpt2: an unembedding with a bias term
def test_training_one_layer_at_a_time_is_the_joint_optimisation_of_all_translators(family):
    """The trainer holds one translator (and its Adam state) at a time; the objective is the mean KL over
    layers and tokens of all translators at once. Here that joint objective is optimised directly, with every
    translator and one Adam over them all: the translators must come out the same."""
    from core.analyses.tuned_lens.training import _decode_subset, _least_squares, _picks, _prepare

    handle = tiny.handle(family, seed=2)
    options = TrainingOptions(train_tokens=400, seq_len=32, steps=12, batch_tokens=64, top_final=8, max_vocab=256,
                              lr=3e-3)
    lens, info = train(handle, TEXTS, options)

    torch.manual_seed(options.seed)
    data = _prepare(handle, TEXTS, options, lambda *_: None)
    h, n = data.h, data.h.shape[0] - 1
    start = [_least_squares(h[layer], h[-1], options.ridge) for layer in range(n)]
    w = torch.nn.Parameter(torch.stack([s[0] for s in start]))
    b = torch.nn.Parameter(torch.stack([s[1] for s in start]))
    optimizer = torch.optim.Adam([w, b], lr=options.lr)
    for pick in _picks(h.shape[1], options):
        x = h[:n, pick]
        logp = torch.log_softmax(_decode_subset(handle, x + torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2)),
                                                data.rows, data.row_bias), -1)
        target = data.final_logp[pick]
        loss = (target.exp() * (target - logp)).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    moved = (w.detach() - torch.stack([s[0] for s in start])).abs().max()
    assert moved > 1e-3  # the steps changed the translators, so the comparison below means something
    torch.testing.assert_close(lens.weight, w.detach(), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(lens.bias, b.detach(), atol=2e-5, rtol=1e-4)
    assert info["final_loss_bits"] == pytest.approx(float(loss.detach()) / math.log(2), abs=1e-4)  # rounded to 4 places


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2", "gpt_neox"])
def test_sublayer_rows_are_the_residual_after_attention_and_after_the_mlp(family):
    handle = tiny.handle(family)
    layers = handle.adapter.layers(handle.model)
    seen = {}
    # The input of each block's MLP branch (its pre-norm) is the residual after that block's attention.
    def pre_mlp(layer):
        if hasattr(layer, "pre_feedforward_layernorm"):
            return layer.pre_feedforward_layernorm
        if hasattr(layer, "post_attention_layernorm") and family != "gpt_neox":
            return layer.post_attention_layernorm
        return getattr(layer, "ln_2", None)
    hooks = []
    for i, layer in enumerate(layers):
        module = pre_mlp(layer)
        if module is not None:
            hooks.append(module.register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(i, args[0].detach())))
    batch = handle.encode(["one two three", "four"])
    try:
        rows = handle.residuals(batch, sublayer=True)
    finally:
        for h in hooks:
            h.remove()
    plain = handle.residuals(batch)
    assert rows.shape[0] == 2 * handle.n_layers + 1
    assert torch.equal(rows[0], plain[0]) and torch.equal(rows[-1], plain[-1])
    for i in range(handle.n_layers):
        assert torch.equal(rows[2 * i + 2], plain[i + 1])
        if i in seen:  # sequential blocks: exactly what the MLP branch read
            assert torch.equal(rows[2 * i + 1], seen[i])
    result = run_lens(handle, "one two three", positions="all", top_k=2, sublayer=True)
    assert result.sites == sublayer_sites(handle.n_layers) and result.sites[-1] == (handle.n_layers, "mlp")
    assert result.layers_json()[1]["site"] == "attn" and result.kl_to_final_bits[-1].max() == 0.0
    with pytest.raises(UserError, match="whole layers"):
        run_lens(handle, "one two", sublayer=True, lens=TunedLens.identity(handle))


def test_translation_and_arithmetic_read_through_the_chosen_lens(tmp_path, monkeypatch):
    """Every lens-based analysis offers the tuned lens behind the same call: its middle layers change, its
    last layer stays the model's; without a trained lens it is one clear error."""
    from core.analyses import arithmetic, translation
    from core.analyses.translation.wordlist import parse_words

    monkeypatch.setenv("LAYERSCOPE_HOME", str(tmp_path))
    handle = tiny.handle("llama")
    words = parse_words("en,fr,zh\nwater,eau,水\nfire,feu,火\nsun,soleil,日\nfive,cinq,五\n", "words.csv")
    plain = translation.Settings(source="fr", target="zh", latent="en", shots=1, words=words)
    with pytest.raises(UserError, match="no tuned lens"):
        translation.run(handle, translation.Settings(**{**plain.__dict__, "lens": "tuned"}))
    from core.lenses import default_lens_dir

    random_lens(handle, scale=0.2).save(default_lens_dir(handle))
    logit = translation.run(handle, plain)
    tuned = translation.run(handle, translation.Settings(**{**plain.__dict__, "lens": "tuned"}))
    np.testing.assert_allclose(tuned.lang_probs[-1], logit.lang_probs[-1], atol=1e-6)
    assert not np.allclose(tuned.lang_probs[1:-1], logit.lang_probs[1:-1])
    a = arithmetic.Settings(n=3, shots=1, systems=("arabic",), lens_numerals="arabic")
    a_logit = arithmetic.run(handle, a)
    a_tuned = arithmetic.run(handle, arithmetic.Settings(**{**a.__dict__, "lens": "tuned"}))
    assert a_tuned.to_json()["accuracy"] == a_logit.to_json()["accuracy"]  # greedy answers never use a lens
    assert a_tuned.to_json() != a_logit.to_json()  # the layer profile does
