"""`python -m core attribute` on the default model (Gemma 3 270M): the JSON contract and one-line errors."""

import json

import pytest
import torch

import core.analyses.attribute.command as command
from core.cli import main

PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture
def cli(gemma, monkeypatch, capsys):
    """``main(["attribute", ...])`` on the session's loaded default model (no second 20-second load)."""

    def load(args):
        assert args.model == "gemma-3-270m"
        return gemma

    monkeypatch.setattr(command, "load_from_args", load)

    def call(*args):
        code = main(["attribute", "--model", "gemma-3-270m", "--prompt", PROMPT, *args, "--json"])
        out, err = capsys.readouterr()
        return code, json.loads(out) if code == 0 else None, err.strip().splitlines()

    return call


def test_paris_json_contract_and_sum(gemma, cli):
    code, out, _ = cli("--target", " Paris")
    assert code == 0
    assert {"model", "target", "versus", "position", "total", "components"} <= set(out)
    assert out["target"] == " Paris" and out["versus"] is None and out["position"] == 8
    n_layers, n_heads = gemma.n_layers, gemma.n_heads
    components = out["components"]
    assert len(components) == 1 + n_layers * (n_heads + 1)  # no biases in Gemma 3
    for c in components:
        assert set(c) == {"name", "kind", "layer", "head", "value"} and c["kind"] in {"embed", "head", "mlp", "bias"}
    assert [c["name"] for c in components[:6]] == ["embed", "L0H0", "L0H1", "L0H2", "L0H3", "MLP0"]
    assert abs(sum(c["value"] for c in components) - out["total"]) <= 1e-4
    batch = gemma.encode([PROMPT])
    final = gemma.residuals(batch, index=torch.tensor([[len(out["tokens"]) - 1]]))[-1, 0, 0]
    logits = gemma.decode(final)  # Gemma 3 270M has no soft cap: these are the pre-cap logits
    assert out["total"] == pytest.approx(float(logits[out["target_id"]]), abs=1e-4)
    assert int(logits.argmax()) == out["target_id"]  # the model does answer Paris
    top = max(components, key=lambda c: abs(c["value"]))
    assert top["kind"] == "head" and top["layer"] >= n_layers // 2  # late heads carry the answer, not the embedding

    code, versus, _ = cli("--target", "Paris", "--versus", " London")  # no leading space: another token
    assert code == 0 and versus["target"] == "Paris" and versus["versus"] == " London"
    assert abs(sum(c["value"] for c in versus["components"]) - versus["total"]) <= 1e-4
    assert versus["total"] == pytest.approx(float(logits[versus["target_id"]] - logits[versus["versus_id"]]), abs=1e-4)
    assert torch.isfinite(torch.tensor([c["value"] for c in versus["components"]])).all()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "Eiffel Tower"], "is 3 tokens ('E', 'iffel', ' Tower')"),
        (["--target", " Paris", "--position", "9"], "position 9 is outside the prompt (9 tokens"),
        (["--target", " Paris", "--versus", "#300000"], "outside the vocabulary"),
        (["--target", ""], "target token is empty"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, args, message):
    code, _, err = cli(*args)
    assert code == 2 and len(err) == 1 and message in err[0] and err[0].startswith("error: ")
