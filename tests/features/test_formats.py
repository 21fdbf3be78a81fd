"""Files: Gemma Scope 2, SAELens and sparsify layouts read and written, foreign files read, bad files refused."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.errors import UserError
from core.features import detect_layout, load_dictionary, save_dictionary
from core.features import formats
from tests.features.conftest import random_dictionary

TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip")


def same_tensors(a, b):
    return all((getattr(a, n) is None and getattr(b, n) is None) or torch.equal(getattr(a, n), getattr(b, n))
               for n in TENSORS)


@pytest.mark.parametrize("activation, kind, skip", [
    ("jumprelu", "sae", False), ("topk", "sae", False), ("relu", "sae", False), ("batchtopk", "sae", False),
    ("jumprelu", "transcoder", True), ("topk", "transcoder", False),
])
def test_gemma_scope_layout_round_trips_bit_exact(tmp_path, inputs, activation, kind, skip):
    d = random_dictionary(activation=activation, kind=kind, skip=skip, layer=7, model="gemma-3-270m", d_model=16,
                          info={"fvu": 0.1})
    folder = save_dictionary(d, tmp_path / "layer_6", "gemmascope")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "params.safetensors"]
    stored = load_file(str(folder / "params.safetensors"))
    expected = {"w_enc", "w_dec", "b_enc", "b_dec"} | ({"threshold"} if d.threshold is not None else set()) \
        | ({"affine_skip_connection"} if skip else set())
    assert set(stored) == expected and stored["w_enc"].shape == (16, 48) and stored["w_dec"].shape == (48, 16)
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == {"jumprelu": "jump_relu", "batchtopk": "jump_relu"}.get(activation, activation)
    assert config["hf_hook_point_in"] == ("model.layers.6.output" if kind == "sae"
                                          else "model.layers.6.pre_feedforward_layernorm.output")
    back = load_dictionary(folder, expect_model="google/gemma-3-270m-pt", expect_d_model=16,
                           expect_site=d.site, expect_layer=7)
    assert same_tensors(back, d) and back.metadata() == d.metadata()
    assert torch.equal(back.encode(inputs), d.encode(inputs)) and torch.equal(back(inputs), d(inputs))


@pytest.mark.parametrize("activation, kind, skip, layouts", [
    ("topk", "sae", False, ("saelens", "sparsify")),
    ("jumprelu", "sae", False, ("saelens",)), ("batchtopk", "sae", False, ("saelens",)),
    ("relu", "transcoder", True, ("saelens",)), ("topk", "transcoder", True, ("sparsify",)),
])
def test_the_same_weights_in_every_layout_give_the_same_features(tmp_path, inputs, activation, kind, skip, layouts):
    d = random_dictionary(activation=activation, kind=kind, skip=skip, layer=4, model="gpt2")
    reference = load_dictionary(save_dictionary(d, tmp_path / "gemmascope", "gemmascope"))
    for layout in layouts:
        back = load_dictionary(save_dictionary(d, tmp_path / layout / "layers.3", layout))
        assert detect_layout(tmp_path / layout / "layers.3") == layout
        assert (back.kind, back.site, back.layer, back.model) == (d.kind, d.site, 4, "gpt2")
        torch.testing.assert_close(back.encode(inputs), reference.encode(inputs), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(back(inputs), reference(inputs), rtol=1e-5, atol=1e-5)


def test_our_saelens_and_sparsify_files_have_their_native_keys_and_transposes(tmp_path):
    d = random_dictionary(kind="transcoder", skip=True, activation="topk", layer=4)
    sp = save_dictionary(d, tmp_path / "layers.3.mlp", "sparsify")
    stored, config = load_file(str(sp / "sae.safetensors")), json.loads((sp / "cfg.json").read_text())
    assert set(stored) == {"encoder.weight", "encoder.bias", "W_dec", "b_dec", "W_skip"}
    assert torch.equal(stored["encoder.weight"], d.W_enc.T) and torch.equal(stored["W_skip"], d.W_skip.T)
    assert (config["num_latents"], config["k"], config["transcode"], config["skip_connection"], config["d_in"]) == \
        (48, 5, True, True, 16)
    sae = random_dictionary(activation="jumprelu", layer=10)
    sl = save_dictionary(sae, tmp_path / "saelens", "saelens")
    config = json.loads((sl / "cfg.json").read_text())
    assert (config["architecture"], config["d_sae"], config["apply_b_dec_to_input"]) == ("jumprelu", 48, False)
    assert config["metadata"]["hook_name"] == "blocks.9.hook_resid_post"
    assert set(load_file(str(sl / "sae_weights.safetensors"))) == {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"}


def test_a_published_gemma_scope_2_folder_is_read_as_shipped(tmp_path, inputs):
    d = random_dictionary(activation="jumprelu")
    folder = tmp_path / "resid_post" / "layer_5_width_16k_l0_small"
    folder.mkdir(parents=True)
    save_file({"w_enc": d.W_enc, "w_dec": d.W_dec, "b_enc": d.b_enc, "b_dec": d.b_dec, "threshold": d.threshold},
              str(folder / "params.safetensors"))
    (folder / "config.json").write_text(json.dumps({"hf_hook_point_in": "model.layers.5.output", "width": 48,
                                                    "model_name": "google/gemma-3-270m-pt", "architecture": "jump_relu",
                                                    "l0": 20}))
    back = load_dictionary(folder / "params.safetensors", expect_model="gemma-3-270m", expect_layer=6)
    assert (back.kind, back.site, back.layer, back.activation, back.d_model) == ("sae", "resid", 6, "jumprelu", 16)
    assert torch.equal(back.encode(inputs), d.encode(inputs))
    (folder / "config.json").unlink()  # no config: the folder name says where it reads
    assert (load_dictionary(folder).site, load_dictionary(folder).layer) == ("resid", 6)


def test_a_gemma_scope_1_npz_is_read_without_pickle(tmp_path, inputs):
    import numpy as np

    d = random_dictionary(activation="jumprelu")
    folder = tmp_path / "layer_3" / "width_16k" / "average_l0_50"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **{name: getattr(d, name).numpy() for name in
                                       ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")})
    back = load_dictionary(folder)
    assert back.activation == "jumprelu" and torch.equal(back.encode(inputs), d.encode(inputs))
    (folder / "params.npz").write_bytes(b"\x80\x04pickled")
    one_line_error(folder, "not a readable npz file")


def test_foreign_saelens_and_sparsify_files_encode_x_minus_b_dec(tmp_path, inputs):
    d = random_dictionary(activation="relu")
    old = tmp_path / "saelens_v5"
    old.mkdir()
    save_file({"W_enc": d.W_enc, "W_dec": d.W_dec, "b_enc": d.b_enc, "b_dec": d.b_dec},
              str(old / "sae_weights.safetensors"))
    (old / "cfg.json").write_text(json.dumps({"d_in": 16, "d_sae": 48, "hook_point": "blocks.3.hook_resid_pre",
                                              "activation_fn_str": "relu", "model_name": "gpt2"}))
    back = load_dictionary(old, expect_site="resid", expect_layer=3)
    expected = ((inputs - d.b_dec) @ d.W_enc + d.b_enc).relu()  # SAELens < 6 applies b_dec to the input
    torch.testing.assert_close(back.encode(inputs), expected, rtol=1e-5, atol=1e-6)
    sp = tmp_path / "layers.2"
    sp.mkdir()
    save_file({"encoder.weight": d.W_enc.T.contiguous(), "encoder.bias": d.b_enc, "W_dec": d.W_dec, "b_dec": d.b_dec},
              str(sp / "sae.safetensors"))
    (sp / "cfg.json").write_text(json.dumps({"activation": "topk", "expansion_factor": 3, "normalize_decoder": True,
                                             "num_latents": 0, "k": 5, "multi_topk": False, "skip_connection": False,
                                             "transcode": False, "d_in": 16}))
    back = load_dictionary(sp, expect_site="resid", expect_layer=3)
    pre = ((inputs - d.b_dec) @ d.W_enc + d.b_enc).relu()  # sparsify: relu, then top k of x − b_dec
    values, indices = pre.topk(5, dim=-1)
    expected = torch.zeros_like(pre).scatter_(-1, indices, values)
    torch.testing.assert_close(back.encode(inputs), expected, rtol=1e-5, atol=1e-6)


def one_line_error(path, text, **expect):
    with pytest.raises(UserError) as error:
        load_dictionary(path, **expect)
    message = str(error.value)
    assert "\n" not in message and text in message, message
    return message


def test_each_bad_file_is_one_clear_line_naming_it(tmp_path):
    d = random_dictionary(activation="jumprelu", layer=6, model="gemma-3-270m")
    good = save_dictionary(d, tmp_path / "good", "gemmascope")
    weights = good / "params.safetensors"
    message = one_line_error(good, "made for d_model 16 but the model has d_model 640", expect_d_model=640)
    assert str(weights) in message and "choose a dictionary trained on this model" in message
    one_line_error(good, "trained on 'gemma-3-270m', not 'llama-2-7b'", expect_model="llama-2-7b")
    one_line_error(good, "reads layer 6, not 7", expect_layer=7)
    one_line_error(good, "reads site resid, not mlp_out", expect_site="mlp_out")

    no_threshold = tmp_path / "no_threshold"
    no_threshold.mkdir()
    save_file({"w_enc": d.W_enc, "w_dec": d.W_dec, "b_enc": d.b_enc, "b_dec": d.b_dec},
              str(no_threshold / "params.safetensors"))
    message = one_line_error(no_threshold, "a JumpReLU dictionary needs a threshold [width] tensor")
    assert str(no_threshold / "params.safetensors") in message

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "params.safetensors").write_bytes(weights.read_bytes()[:-100])
    one_line_error(truncated, f"{truncated / 'params.safetensors'}: not a readable safetensors file")

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "params.safetensors").write_bytes(b"PK\x03\x04 this is a zip, not safetensors" * 20)
    one_line_error(garbage, "re-save it as safetensors")

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save({"W_enc": d.W_enc}, pickled / "sae.pt")
    one_line_error(pickled, "pickle checkpoints are not read")

    mismatch = tmp_path / "mismatch"
    mismatch.mkdir()
    save_file({"w_enc": d.W_enc, "w_dec": d.W_dec[:40].contiguous(), "b_enc": d.b_enc, "b_dec": d.b_dec,
               "threshold": d.threshold}, str(mismatch / "params.safetensors"))
    one_line_error(mismatch, "width mismatch: W_enc [16, 48] has 48 latents but W_dec [40, 16] has 40")

    bad_cfg = save_dictionary(random_dictionary(activation="topk"), tmp_path / "bad_cfg", "saelens")
    config = json.loads((bad_cfg / "cfg.json").read_text())
    (bad_cfg / "cfg.json").write_text(json.dumps({**config, "d_sae": 64}))
    one_line_error(bad_cfg, "d_sae is 64 but the weights have 48")
    (bad_cfg / "cfg.json").write_text("{not json")
    one_line_error(bad_cfg, "not readable JSON")
    (bad_cfg / "cfg.json").unlink()
    one_line_error(bad_cfg, "cfg.json: missing")

    (tmp_path / "empty").mkdir()
    one_line_error(tmp_path / "empty", "no dictionary here")
    one_line_error(tmp_path, "give one of them")
    one_line_error(tmp_path / "missing", "no such folder")
    unknown = save_dictionary(random_dictionary(activation="topk"), tmp_path / "checkpoint", "sparsify")
    cfg = json.loads((unknown / "cfg.json").read_text())
    cfg.pop("layerscope")
    (unknown / "cfg.json").write_text(json.dumps(cfg))
    one_line_error(unknown, "does not say which site it reads", expect_site="resid")


def test_writing_is_atomic_and_never_clobbers(tmp_path, monkeypatch):
    d = random_dictionary()
    target = tmp_path / "out"

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(formats.json, "dump", boom)
    with pytest.raises(OSError):
        save_dictionary(d, target)
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no temporary folder left
    monkeypatch.undo()
    save_dictionary(d, target)
    with pytest.raises(UserError, match="pass overwrite=True"):
        save_dictionary(d, target)
    other = random_dictionary(seed=3)
    save_dictionary(other, target, overwrite=True)
    assert same_tensors(load_dictionary(target), other) and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (target / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="which is not a dictionary file"):
        save_dictionary(d, target, overwrite=True)


def test_layouts_refuse_what_they_cannot_hold(tmp_path):
    with pytest.raises(UserError, match="SAELens has no topk transcoder"):
        save_dictionary(random_dictionary(kind="transcoder", activation="topk"), tmp_path / "a", "saelens")
    with pytest.raises(UserError, match="sparsify holds only TopK"):
        save_dictionary(random_dictionary(activation="jumprelu"), tmp_path / "b", "sparsify")
    with pytest.raises(UserError, match="unknown layout"):
        save_dictionary(random_dictionary(), tmp_path / "c", "npz")
    assert not any(tmp_path.iterdir())
