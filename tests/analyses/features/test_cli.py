"""`python -m core features` on the real default model: the JSON contract, numbers equal to the dictionary applied
to the lens's residual, steering, and bad input as one line with exit 2 and nothing written."""

import json

import pytest

from core.cli import main
from core.features import save_dictionary
from tests.analyses.features.conftest import random_dictionary

PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture
def gemma_dict(gemma, tmp_path, monkeypatch):
    from core.analyses.features import command

    monkeypatch.setenv("LAYERSCOPE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(command, "load_from_args", lambda args: gemma)  # the session's model, not a second copy
    d = random_dictionary(gemma.d_model, width=128, k=6, layer=9, model="google/gemma-3-270m-pt", scale=4000.0)
    return save_dictionary(d, tmp_path / "resid9"), d


def run(capsys, *args):
    code = main(["features", "--model", "gemma-3-270m", "--prompt", PROMPT, *args, "--json"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_features_json_contract_on_the_default_model(gemma, gemma_dict, capsys):
    folder, d = gemma_dict
    code, out, _ = run(capsys, "--dict", str(folder), "--top", "3")
    assert code == 0
    out = json.loads(out)
    assert set(out) == {"model", "tokens", "dictionaries", "layers"} and out["model"] == "gemma-3-270m"
    assert out["tokens"][:2] == ["<bos>", "The"]
    assert out["dictionaries"] == [{"path": str(folder), "site": "resid", "layer": 9, "kind": "sae", "width": 128}]
    layer = out["layers"][0]
    assert (layer["layer"], layer["site"]) == (9, "resid") and layer["fvu"] > 0
    residual = gemma.residuals(gemma.encode([PROMPT]))[9, 0]  # the lens's row 9 = Site("resid_post", 8)
    acts = d.encode(residual)
    assert layer["positions"][0]["features"] == []  # BOS
    for p, position in enumerate(layer["positions"][1:], 1):
        top = acts[p].topk(3)
        assert [f["id"] for f in position["features"]] == [i for i, v in zip(top.indices.tolist(), top.values) if v > 0]


def test_steering_from_the_command_line(gemma, gemma_dict, capsys):
    folder, _ = gemma_dict
    code, out, _ = run(capsys, "--dict", str(folder), "--steer", "3", "--alpha", "400", "--new-tokens", "4")
    steering = json.loads(out)["steering"]
    assert code == 0 and steering["feature"] == 3 and steering["mode"] == "add" and len(steering["layers"]) == 19
    assert steering["layers"][9]["before"] != steering["layers"][9]["after"]
    assert steering["layers"][8]["before"] == steering["layers"][8]["after"]  # before its layer nothing changes


def test_bad_input_is_one_line_exit_2_and_writes_nothing(gemma, gemma_dict, tmp_path, capsys):
    from safetensors.torch import save_file

    folder, d = gemma_dict
    narrow = save_dictionary(random_dictionary(64, model="tiny-llama"), tmp_path / "narrow")
    other = save_dictionary(random_dictionary(gemma.d_model, layer=9, model="smollm2-135m"), tmp_path / "other")
    deep = save_dictionary(random_dictionary(gemma.d_model, layer=30, model="gemma-3-270m"), tmp_path / "deep")
    jump = tmp_path / "jump"
    jump.mkdir()
    save_file({"w_enc": d.W_enc.contiguous(), "w_dec": d.W_dec, "b_enc": d.b_enc, "b_dec": d.b_dec},
              str(jump / "params.safetensors"))
    (jump / "config.json").write_text(json.dumps({"architecture": "jump_relu", "hf_hook_point_in": "model.layers.8.output"}))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "params.safetensors").write_bytes(b"\x00" * 40)
    cases = [(["--dict", str(other)], "trained on 'smollm2-135m'"), (["--dict", str(narrow)], "d_model 64"), (["--dict", str(deep)], "outside the model"),
             (["--dict", str(jump)], "needs a threshold"), (["--dict", str(broken)], "not a readable"),
             (["--dict", str(tmp_path / "nowhere")], "no such folder"),
             (["--dict", str(folder), "--steer", "2", "--alpha", "nan"], "finite number")]
    for args, message in cases:
        code, out, err = run(capsys, *args)
        lines = err.strip().splitlines()
        assert code == 2 and out == "" and len(lines) == 1 and message in lines[0], (args, err)
    with pytest.raises(SystemExit) as exit_:
        run(capsys, "--dict", str(folder), "--steer", "2", "--alpha", "abc")
    assert exit_.value.code == 2 and "invalid float value: 'abc'" in capsys.readouterr().err
    home = tmp_path / "home"
    assert not home.exists() or not [p for p in home.rglob("*") if p.name.startswith(".")]  # no half-written file
