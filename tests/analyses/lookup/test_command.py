"""`python -m core lookup` on the default model: the JSON contract, the same seed giving the same JSON, bad K."""

import json

import pytest

from core.cli import main


@pytest.fixture(autouse=True)
def cli_reuses_the_loaded_model(gemma, monkeypatch):
    """The CLI loads its model through core.cli._load; hand it the session's default model instead of a
    second copy (the arguments still travel: the spec must be the default model's)."""
    def load(spec, options):
        assert spec == "gemma-3-270m"
        return gemma

    monkeypatch.setattr("core.cli._load", load)


def lookup_json(capsys, *args) -> dict:
    assert main(["lookup", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_incontext_contract_and_same_seed_same_json(gemma, capsys):
    args = ["--task", "incontext", "--pairs", "4", "--n", "2", "--top-heads", "2", "--seed", "5"]
    out = lookup_json(capsys, *args)
    assert {"model", "task", "n", "accuracy", "layers", "first_correct_layer", "heads", "by_pairs", "by_position"} <= set(out)
    assert out["model"] == "gemma-3-270m" and out["task"] == "incontext" and out["n"] == 2 and out["pairs"] == 4
    assert [r["pairs"] for r in out["by_pairs"]] == [1, 2, 4] and all(r["n"] == 2 for r in out["by_pairs"])
    assert sum(r["n"] for r in out["by_position"]) == 2
    assert [r["condition"] for r in out["by_condition"]] == ["clean", "collision", "typo"]
    assert [layer["layer"] for layer in out["layers"]] == list(range(19))
    assert out["layers"][-1]["p_answer"] == pytest.approx(out["p_answer"], abs=1e-5)  # the last layer is the model
    assert out["by_pairs"][0]["accuracy"] == 1.0  # one pair: Gemma copies its value
    assert len(out["heads"]) == 2 and set(out["heads"][0]) >= {"layer", "head", "attention", "pct_of_full"}
    assert out["heads"][0]["attention"] >= out["heads"][1]["attention"]
    assert lookup_json(capsys, *args) == out  # same seed, same JSON


def test_facts_contract_with_the_trace(gemma, capsys):
    out = lookup_json(capsys, "--task", "facts", "--n", "3", "--top-heads", "1", "--kinds", "residual")
    assert out["task"] == "facts" and out["n"] == 3 and 0 <= out["accuracy"] <= 1
    trace = out["trace"]
    assert {"positions", "tokens", "indirect_effect", "peak"} <= set(trace) and "mlp" not in trace
    assert trace["tokens"][:5] == ["<bos>", "The", " capital", " of", " France"] and trace["subject"] == [4, 5]
    assert trace["positions"] == list(range(len(trace["tokens"])))
    effect = trace["indirect_effect"]
    assert len(effect) == 19 and all(len(row) == len(trace["tokens"]) for row in effect)
    assert effect[18][-1] == pytest.approx(trace["p_clean"] - trace["p_corrupt"], abs=1e-5)
    assert trace["p_clean"] > 0.2 and trace["p_corrupt"] < trace["p_clean"] / 2  # the noise on " France" hides Paris
    assert trace["fact"] == {"index": 0, "prompt": "The capital of France is the city of", "answer": "Paris",
                             "subject": "France", "correct": True}
    assert all(row[:4] == [0.0] * 4 for row in effect)  # before the subject nothing changes
    assert len(out["neurons"]) == 18 * 5 and {"layer", "neuron", "activation", "promotes"} <= set(out["neurons"][0])


def test_k_larger_than_the_list_or_the_prompt_cap_is_one_line_and_exit_2(gemma, capsys, monkeypatch):
    assert main(["lookup", "--pairs", "200", "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "K=200 pairs need 200 distinct keys and values" in err[0]
    monkeypatch.setenv("LAYERSCOPE_MAX_PROMPT_TOKENS", "64")
    assert main(["lookup", "--pairs", "32", "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "K=32 pairs" in err[0] and "at most 64 tokens per prompt" in err[0]
