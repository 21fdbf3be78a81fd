"""`python -m core circuit`: the JSON contract for both graphs, the export, and bad input (one line, exit 2, nothing
written), on a tiny Gemma 3 saved as a folder."""

import json

import pytest

from core.cli import main
from tests import tiny
from tests.analyses.circuits.helpers import random_transcoders, save

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    where = tmp_path_factory.mktemp("tiny-gemma3")
    model, tokenizer = tiny.model("gemma3", style="sentencepiece")
    model.save_pretrained(where)
    tokenizer.save_pretrained(where)
    return str(where)


def test_routes_and_attribution_contracts_and_export(folder, tmp_path, capsys):
    export = tmp_path / "graph.json"
    assert main(["circuit", "--model", folder, "--prompt", PROMPT, "--export", str(export), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"model", "tokens", "target", "kind", "nodes", "edges", "scores"}
    assert out["kind"] == "routes" and out["scores"] is None and out["tokens"][-1] == " is"
    assert {n["kind"] for n in out["nodes"]} <= {"embed", "residual", "head", "mlp", "logit"}
    heads = [n for n in out["nodes"] if n["kind"] == "head"]
    assert heads and all(isinstance(n["head"], int) and n["feature"] is None for n in heads)
    ids = {n["id"] for n in out["nodes"]}
    assert all(e["source"] in ids and e["target"] in ids for e in out["edges"])
    graph = json.loads(export.read_text(encoding="utf-8"))
    assert set(graph) == {"metadata", "qParams", "nodes", "links"} and graph["metadata"]["slug"] == "graph"
    assert len(graph["nodes"]) == len(out["nodes"])

    handle = tiny.handle("gemma3", style="sentencepiece")  # the same weights (seed 0), to size the transcoders
    handle.spec = folder
    tc = save(random_transcoders(handle), tmp_path / "tc")
    assert main(["circuit", "--model", folder, "--prompt", PROMPT, "--dict", str(tc), "--target", " is",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "attribution" and out["target"] == " is"
    assert 0 < out["scores"]["replacement"] <= 1 and 0 < out["scores"]["completeness"] <= 1
    kinds = {n["kind"] for n in out["nodes"]}
    assert {"feature", "logit", "embed"} <= kinds <= {"feature", "error", "embed", "logit"}
    assert [n for n in out["nodes"] if n["kind"] == "logit"][0]["influence"] == pytest.approx(1.0)


@pytest.mark.parametrize("args,message", [
    (["--threshold", "0"], "threshold must be in (0, 1]"),
    (["--threshold", "1.5"], "threshold must be in (0, 1]"),
    (["--node-threshold", "-0.1"], "node threshold must be in (0, 1]"),
    (["--target", "qqqzzzq"], "not one"),
    (["--dict", "/nonexistent/transcoders"], "no such folder"),
    (["--prompt", "1 " * 200], "take at most 128"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(folder, tmp_path, capsys, args, message):
    export = tmp_path / "graph.json"
    argv = ["circuit", "--model", folder, "--prompt", PROMPT, "--export", str(export), *args, "--json"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1 and captured.out == ""
    assert not export.exists() and list(tmp_path.iterdir()) == []


def test_transcoders_for_another_model_exit_2(folder, tmp_path, capsys):
    handle = tiny.handle("gemma3", style="sentencepiece")
    tc = save(random_transcoders(handle, d_model=32), tmp_path / "tc")
    assert main(["circuit", "--model", folder, "--prompt", PROMPT, "--dict", str(tc), "--json"]) == 2
    assert "d_model 32" in capsys.readouterr().err
