"""`python -m core information` on the real default model: a small run twice gives the same JSON, with
numbers that hold for Gemma 3 270M."""

import json

import pytest

from core.cli import main

ARGS = ["information", "--model", "gemma-3-270m", "--tokens", "80", "--concepts", "12", "--json"]


@pytest.fixture(scope="module")
def out(gemma):
    # The CLI's loader hands out the session's Gemma instead of reading the same 1 GB a second time.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("core.cli._load", lambda spec, options: gemma)
        first = _run()
        yield first, _run()


def _run() -> tuple[str, dict]:
    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        assert main(ARGS) == 0
    text = buffer.getvalue()
    return text, json.loads(text)


def test_same_seed_same_json(out):
    (text, _), (again, _) = out
    assert again == text


def test_what_gemma_shows(out):
    (_, result), _ = out
    assert result["model"] == "gemma-3-270m" and result["n_tokens"] == 80
    layers = result["layers"]
    assert [layer["layer"] for layer in layers] == list(range(19))
    # The embeddings hold the current token: a probe reads it off every time.
    assert layers[0]["current_token_acc"] == 1.0
    # The lens at the embeddings almost never predicts the next token; at the output it is the model.
    assert layers[0]["next_token_acc"] < 0.1 < layers[-1]["next_token_acc"]
    assert all(layer["mi_next_token_bits"] <= result["probes"]["next"]["label_entropy_bits"] for layer in layers)
    # Massive activations: the middle layers are far more anisotropic than the embeddings.
    assert layers[0]["anisotropy"] < 0.5 < layers[9]["anisotropy"]
    # Translation retrieval peaks in the middle, above the embeddings' (shared spellings) and the output's.
    retrieval = [layer["translation_retrieval"] for layer in layers]
    peak = retrieval.index(max(retrieval))
    assert 6 <= peak <= 15 and retrieval[peak] > retrieval[0] and retrieval[peak] > retrieval[-1]
    # Every English word of the list is one token in Gemma's vocabulary; Tamil pays the most.
    per_word = result["tokens_per_word"]
    assert per_word["en"] == 1.0 and max(per_word, key=per_word.get) == "ta" and per_word["hi"] > 1.2
    assert any(o["tokens"][0] == "<bos>" for o in result["outliers"])  # BOS carries the massive dimensions
