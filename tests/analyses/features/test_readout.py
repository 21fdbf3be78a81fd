"""The Features readout on a tiny random Llama: the site mapping, numbers equal to the dictionary applied by hand to
the residual the lens reads, layouts that agree, cards cached atomically, one-line refusals."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from core.analyses import features
from core.analyses.features import cards, explain
from core.analyses.features.wiring import excluded, model_site, wire
from core.errors import UserError
from core.features import load_dictionary, metrics, save_dictionary
from core.models.sites import Site
from core.tokens import token_str
from tests.analyses.features.conftest import random_dictionary

PROMPT = "The capital of France is Paris. 1 2 3"


def test_one_mapping_between_the_numberings():
    assert model_site("resid", 0, 18) == Site("resid_pre", 0)  # the embeddings
    assert model_site("resid", 13, 18) == Site("resid_post", 12)
    assert model_site("resid", 18, 18) == Site("resid_post", 17)
    assert model_site("mlp_out", 10, 18) == Site("mlp_out", 9)
    assert model_site("mlp_in", 1, 18) == Site("mlp_in", 0)
    assert model_site("attn_z", 4, 18) == Site("z", 3)
    for site, layer in (("resid", 19), ("resid", -1), ("mlp_out", 0), ("mlp_out", 19)):
        with pytest.raises(UserError, match="outside the model"):
            model_site(site, layer, 18)


def test_a_gemma_scope_resid_file_for_block_12_reads_resid_post_12(tmp_path):
    """Gemma Scope 2's own files (no block of ours): model.layers.12.output is the residual after block 12
    (0-based), the lens's row 13, the handle's Site("resid_post", 12); its transcoder at layer_12 reads block 12."""
    from safetensors.torch import save_file

    gemma = SimpleNamespace(n_layers=18, d_model=16, n_heads=4, head_dim=4, spec="gemma-3-270m")
    d = random_dictionary(16, activation="jumprelu")
    for name, point_in, point_out in (("resid_post/layer_12_width_16k_l0_small", "model.layers.12.output", None),
                                      ("transcoder/layer_12_width_16k_l0_small",
                                       "model.layers.12.pre_feedforward_layernorm.output",
                                       "model.layers.12.post_feedforward_layernorm.output")):
        folder = tmp_path / name
        folder.mkdir(parents=True)
        save_file({"w_enc": d.W_enc.contiguous(), "w_dec": d.W_dec, "b_enc": d.b_enc, "b_dec": d.b_dec, "threshold": d.threshold},
                  str(folder / "params.safetensors"))
        config = {"architecture": "jump_relu", "model_name": "google/gemma-3-270m-pt", "hf_hook_point_in": point_in,
                  "hf_hook_point_out": point_out or point_in, "width": 48}
        (folder / "config.json").write_text(json.dumps(config))
        wiring = wire(load_dictionary(folder, expect_model="gemma-3-270m", expect_d_model=16), gemma)
        if point_out is None:
            assert wiring.read == wiring.write == Site("resid_post", 12)
        else:
            assert (wiring.read, wiring.write) == (Site("mlp_in", 12), Site("mlp_out", 12))


def test_readout_is_the_dictionary_applied_to_the_lens_residual(llama, saved):
    result = features.run(llama, features.Settings(prompt=PROMPT, dictionaries=(str(saved),), top=3))
    out = result.to_json()
    assert set(out) == {"model", "tokens", "dictionaries", "layers"}
    assert out["dictionaries"] == [{"path": str(saved), "site": "resid", "layer": 2, "kind": "sae", "width": 48}]
    layer = out["layers"][0]
    assert set(layer) == {"layer", "site", "fvu", "positions"} and (layer["layer"], layer["site"]) == (2, "resid")
    batch = llama.encode([PROMPT])
    residual = llama.residuals(batch)[2, 0]  # the lens's row 2: after block 2 (1-based)
    d = load_dictionary(saved)
    acts = d.encode(residual)
    assert [p["token"] for p in layer["positions"]] == out["tokens"] and out["tokens"][0] == "<s>"
    assert layer["positions"][0]["features"] == []  # BOS: dictionaries are trained without it
    for p, position in enumerate(layer["positions"][1:], 1):
        assert set(position) == {"position", "token", "features"} and position["position"] == p
        top = acts[p].topk(3)
        assert [f["id"] for f in position["features"]] == top.indices.tolist()
        assert [f["activation"] for f in position["features"]] == pytest.approx(top.values.tolist(), rel=1e-4)
        for f in position["features"]:
            assert set(f) == {"id", "activation", "top_tokens"} and len(f["top_tokens"]) == 5
    keep = ~excluded(llama, batch)[0]
    assert keep.tolist() == [False] + [True] * (len(out["tokens"]) - 1)  # BOS out of the FVU
    assert layer["fvu"] == pytest.approx(metrics.fvu(residual[keep], d(residual)[keep]), rel=1e-4)
    # the top promoted tokens are the decoder direction read through the model's own final norm and unembedding
    f = layer["positions"][-1]["features"][0]
    ids = llama.decode(d.W_dec[f["id"]][None])[0, : len(llama.tokenizer)].topk(5).indices
    assert f["top_tokens"] == [token_str(llama.tokenizer, int(i)) for i in ids]


def test_saelens_and_sparsify_files_of_the_same_weights_read_the_same_features(llama, saved, tmp_path):
    d = load_dictionary(saved)
    reference = features.run(llama, features.Settings(PROMPT, (str(saved),))).to_json()["layers"]
    for layout in ("saelens", "sparsify"):
        other = save_dictionary(d, tmp_path / layout, layout)
        layers = features.run(llama, features.Settings(PROMPT, (str(other),))).to_json()["layers"]
        assert [[[f["id"] for f in p["features"]] for p in layer["positions"]] for layer in layers] == \
            [[[f["id"] for f in p["features"]] for p in layer["positions"]] for layer in reference]
        assert layers[0]["fvu"] == pytest.approx(reference[0]["fvu"], rel=1e-5)


def test_several_dictionaries_are_read_in_one_pass_ordered_by_layer(llama, saved, tmp_path):
    mlp = save_dictionary(random_dictionary(llama.d_model, site="mlp_out", layer=1, model="tiny-llama"), tmp_path / "m1")
    calls = []
    original = llama.record

    def counted(*args, **kwargs):
        calls.append(args[1])
        return original(*args, **kwargs)

    llama.record = counted
    try:
        out = features.run(llama, features.Settings(PROMPT, (str(saved), str(mlp)))).to_json()
    finally:
        del llama.record
    assert [(layer["site"], layer["layer"]) for layer in out["layers"]] == [("mlp_out", 1), ("resid", 2)]
    assert len(calls) == 1 and set(calls[0]) == {Site("mlp_out", 0), Site("resid_post", 1)}


def test_cards_are_computed_once_and_written_atomically(llama, saved, home):
    d = load_dictionary(saved)
    first = cards.top_tokens(llama, d, saved)
    path = cards.card_dir(llama, saved) / "tokens.safetensors"
    stamp = path.stat().st_mtime_ns
    again = cards.top_tokens(llama, d, saved)
    assert path.stat().st_mtime_ns == stamp and torch.equal(first["promoted_ids"], again["promoted_ids"])
    card = explain.run(llama, explain.Settings(str(saved), 3))
    assert [f.name for f in cards.card_dir(llama, saved).iterdir()] and \
        not [f for f in cards.card_dir(llama, saved).iterdir() if f.name.startswith(".")]  # no temporary left
    assert card.promoted[0][1] >= card.promoted[-1][1] and card.suppressed[0][1] <= card.suppressed[-1][1]
    acts = [c.activation for c in card.contexts]
    assert acts == sorted(acts, reverse=True) and 0 <= card.density <= 1
    assert sum(card.histogram) == pytest.approx(card.density * card.corpus_tokens, abs=0.5)


def _bad(tmp_path, name, **changes):
    folder = tmp_path / name
    return save_dictionary(random_dictionary(**{"d_in": 64, "model": "tiny-llama", **changes}), folder)


@pytest.mark.parametrize("make, message", [
    (lambda t: _bad(t, "other", model="gemma-3-270m"), "not 'tiny-llama'"),
    (lambda t: _bad(t, "wide", d_in=32), "d_model 32"),
    (lambda t: _bad(t, "deep", layer=9), "outside the model"),
])
def test_dictionaries_that_do_not_fit_are_refused_in_one_line(llama, tmp_path, home, make, message):
    folder = make(tmp_path)
    with pytest.raises(UserError, match=message) as error:
        features.run(llama, features.Settings(PROMPT, (str(folder),)))
    assert "\n" not in str(error.value)
    assert not (home / "feature_cards").exists()  # nothing written


def test_broken_files_are_refused_in_one_line(llama, tmp_path, home):
    from safetensors.torch import save_file

    d = random_dictionary(64, activation="jumprelu")
    folder = tmp_path / "nothreshold"
    folder.mkdir()
    save_file({"w_enc": d.W_enc.contiguous(), "w_dec": d.W_dec, "b_enc": d.b_enc, "b_dec": d.b_dec}, str(folder / "params.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architecture": "jump_relu", "hf_hook_point_in": "model.layers.1.output"}))
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "params.safetensors").write_bytes(b"this is not a safetensors file")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save({"W_enc": d.W_enc}, pickled / "sae.pt")
    for path, message in ((folder, "needs a threshold"), (garbage, "not a readable"), (pickled, "pickle")):
        with pytest.raises(UserError, match=message):
            features.run(llama, features.Settings(PROMPT, (str(path),)))
    with pytest.raises(UserError, match="no such folder"):
        features.Settings(PROMPT, (str(tmp_path / "missing"),)).validate()
    assert not (home / "feature_cards").exists()


def test_steering_add_and_clamp(llama, saved):
    base = dict(prompt=PROMPT, dictionary=str(saved), feature=5, new_tokens=6)
    still = features.steer(llama, features.SteerSettings(**base, mode="add", alpha=0.0))
    assert still.before == still.after and still.continuation_before == still.continuation_after
    pushed = features.steer(llama, features.SteerSettings(**base, mode="add", alpha=300.0))
    assert pushed.before != pushed.after
    out = pushed.to_json()
    assert set(out) >= {"feature", "mode", "alpha", "continuation_before", "continuation_after", "layers"}
    assert len(out["layers"]) == llama.n_layers + 1
    # clamping: the site becomes the reconstruction with the feature's activation set to α, plus the dictionary's
    # own error (x − x̂), at every position but BOS
    from core.analyses.features.analysis import load
    from core.analyses.features.steering import clamp_delta
    from core.models.sites import Edit

    loaded = load(llama, str(saved))
    batch = llama.encode([PROMPT])
    d = loaded.dictionary
    x = llama.record(batch, [loaded.wiring.read])[loaded.wiring.read][0]
    edit = Edit(loaded.wiring.write, "add", clamp_delta(llama, loaded, batch, 5, 40.0))
    edited = llama.run_with_edits(batch, [edit], read=[loaded.wiring.read])[loaded.wiring.read][0]
    acts = d.encode(x)
    clamped_acts = acts.clone()
    clamped_acts[:, 5] = 40.0
    expected = d.decode(clamped_acts) + (x - d.decode(acts))
    assert torch.allclose(edited[1:], expected[1:], atol=1e-4) and torch.equal(edited[0], x[0])
    clamped = features.steer(llama, features.SteerSettings(**base, mode="clamp", alpha=40.0))
    assert clamped.after != clamped.before


@pytest.mark.parametrize("changes, message", [
    (dict(alpha=float("nan")), "finite number"), (dict(alpha="abc"), "finite number"),
    (dict(mode="multiply"), "unknown steering mode"), (dict(feature=4800), "does not exist"),
])
def test_bad_steering_is_refused(llama, saved, changes, message):
    settings = features.SteerSettings(**{"prompt": PROMPT, "dictionary": str(saved), "feature": 1, **changes})
    with pytest.raises(UserError, match=message):
        features.steer(llama, settings)


def test_remote_backends_refuse_in_one_line(llama, saved):
    class NoRecord:
        name, operations, refusal = "ndif", frozenset({"reduced_lens"}), "NDIF brings back reduced statistics only"

    original = llama.backend
    llama.backend = NoRecord()
    try:
        with pytest.raises(UserError, match="reading features: NDIF"):
            features.run(llama, features.Settings(PROMPT, (str(saved),)))
    finally:
        llama.backend = original


def test_available_lists_dictionaries_trained_here(llama, home):
    from core.analyses.sae.analysis import dictionaries_home

    assert features.available(llama) == []
    folder = save_dictionary(random_dictionary(64, model="tiny-llama"), dictionaries_home(llama) / "resid-L2")
    assert features.available(llama) == [str(folder)] and Path(folder).name == "resid-L2"


def test_two_dictionaries_at_the_same_site_get_distinct_labels(llama, saved, tmp_path):
    twin = save_dictionary(random_dictionary(64, model="tiny-llama", seed=3), tmp_path / "twin")
    result = features.run(llama, features.Settings(PROMPT, (str(saved), str(twin))))
    assert [layer.loaded.label for layer in result.layers] == ["resid 2 · resid2", "resid 2 · twin"]
    assert set(result.frames()["features"]["dictionary"]) == {"resid 2 · resid2", "resid 2 · twin"}


def test_the_default_model_ships_a_dictionary_that_reconstructs_its_layer(gemma, home):
    """A first visit has something to read: the shipped residual SAE (layer 9, float16 on disk) is listed for
    the default model, after any trained here, and reconstructs that layer on a new prompt (FVU 0.13 there)."""
    shipped = features.available(gemma)
    assert [Path(p).name for p in shipped] == ["resid-L9-w4096-k32"]
    assert Path(shipped[0]).is_relative_to(features.SHIPPED)
    result = features.run(gemma, features.Settings("The Eiffel Tower is in the city of Paris, and the Colosseum is in "
                                                   "Rome.", tuple(shipped), top=3))
    (layer,) = result.to_json()["layers"]
    assert (layer["layer"], layer["site"]) == (9, "resid")
    assert 0.05 < layer["fvu"] < 0.2, layer["fvu"]
    bos, *rest = layer["positions"]
    assert bos["token"] == "<bos>" and bos["features"] == []  # left out, as in training
    assert all(len(p["features"]) == 3 and p["features"][0]["activation"] > 0 for p in rest)
