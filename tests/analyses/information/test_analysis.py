"""The analysis on a tiny random model: the JSON contract, answers known without the probes (the
embeddings' nearest row is the token itself, the lens at the last layer is the model), the same seed
giving the same JSON, the corpus window, and one clear line for every bad input."""

import json

import core  # noqa: F401  (before torch: passive OpenMP waiting on shared CPUs)
import pytest
import torch

from core.analyses import information as info
from core.analyses.information.analysis import read_text
from core.analyses.information.corpus import token_window
from core.cli import main
from core.errors import UserError
from tests import tiny

CONTRACT = {"layer", "current_token_acc", "previous_token_acc", "next_token_acc", "mi_next_token_bits",
            "effective_rank", "anisotropy", "translation_retrieval"}
SMALL = info.Settings(corpus="en", tokens=80, concepts=6)


@pytest.fixture(scope="module")
def handle():
    return tiny.handle("llama")


@pytest.fixture(scope="module")
def result(handle):
    return info.run(handle, SMALL)


def test_json_contract(result):
    out = result.to_json()
    assert {"model", "n_tokens", "layers", "tokens_per_word"} <= set(out)
    assert out["model"] == "tiny-llama" and out["n_tokens"] == 80
    assert [layer["layer"] for layer in out["layers"]] == [0, 1, 2, 3]  # embeddings + 3 blocks
    for layer in out["layers"]:
        assert set(layer) == CONTRACT
        for key in ("current_token_acc", "previous_token_acc", "next_token_acc", "translation_retrieval"):
            assert 0 <= layer[key] <= 1
        assert layer["effective_rank"] >= 1 and -1 <= layer["anisotropy"] <= 1
    assert set(out["tokens_per_word"]) == {"en", "hi", "ta", "fr", "de", "es", "zh", "ru", "ja"}
    assert out["split"] == {"fit": 53, "score": 27, "how": result.split_description()}  # two thirds to fit
    assert json.loads(json.dumps(out)) == out  # plain JSON types only


def test_answers_known_without_probes(handle, result):
    layers = result.layers
    # Llama adds nothing to the embeddings before block 0: each token's residual is its own row.
    assert layers[0].current_token_nearest_acc == 1.0
    # The lens at the last layer is the model: its top-1 accuracy is the model's own.
    window = token_window(handle, read_text(SMALL).text, SMALL.tokens)
    own = handle.logits(window.batch)[0].argmax(-1)  # [position]
    score = torch.tensor(result.score_positions)
    assert layers[-1].next_token_acc == pytest.approx(float((own[score] == window.ids[score + 1]).double().mean()))
    # Byte-fallback tokenizer trained on a few English lines: Hindi and Tamil words cost more tokens.
    per_word = result.tokens_per_word
    assert per_word["hi"] > 2 * per_word["en"] and per_word["ta"] > 2 * per_word["en"]
    assert sorted(result.fit_positions + result.score_positions) == list(range(1, 81))
    near = result.neighbours  # " water" is several tokens here: its vector is their mean row
    assert near.tied is False and len(near.input) == len(near.output) == 10
    assert [n.cosine for n in near.input] == sorted((n.cosine for n in near.input), reverse=True)


def test_same_seed_same_json_and_another_seed_another_split(handle, result):
    again = info.run(handle, SMALL)
    assert json.dumps(again.to_json()) == json.dumps(result.to_json())
    other = info.run(handle, info.Settings(corpus="en", tokens=80, concepts=6, seed=1))
    assert other.fit_positions != result.fit_positions


def test_frames_name_their_columns(result):
    frames = result.frames()
    assert set(frames) == {"layers", "outliers", "retrieval", "pca", "tokens_per_word", "neighbours"}
    assert len(frames["layers"]) == 4 and "mi_current_token_bits" in frames["layers"]
    assert len(frames["retrieval"]) == 4 * 9 * 8  # layers x ordered language pairs
    assert set(frames["pca"]["kind"]) == {"word", "token"}
    assert len(frames["pca"][frames["pca"]["kind"] == "word"]) == 4 * 9 * 6


def test_a_short_text_gives_a_shorter_window(handle):
    text = read_text(info.Settings(corpus="en")).text
    window = token_window(handle, text[:400], 1000)
    assert 40 <= window.n < 1000
    assert handle.tokenizer(window.prompt)["input_ids"][: window.n + 2] == window.ids.tolist()


@pytest.mark.parametrize("settings, message", [
    (info.Settings(corpus="it"), "language 'it' is not in the word list"),
    (info.Settings(languages=("en", "it")), "language 'it' is not in the word list"),
    (info.Settings(languages=("en",)), "at least two different languages"),
    (info.Settings(corpus="no-such-corpus"), "unknown corpus 'no-such-corpus'"),
    (info.Settings(tokens=10), "tokens must be between 40"),
    (info.Settings(concepts=1), "concepts must be between 2 and 225"),
    (info.Settings(word="  "), "the word is empty"),
    (info.Settings(corpus="upload.txt", text="   \n "), "is empty"),
    (info.Settings(corpus="upload.txt", text="Too short to probe."), "a probe needs at least 40"),
])
def test_bad_settings_are_one_clear_line(handle, settings, message):
    with pytest.raises(UserError, match=message) as error:
        info.run(handle, settings)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 50, "is a binary file"),
    (b"caf\xe9 " * 100, "is not UTF-8 text"),
], ids=["empty", "binary", "latin-1"])
def test_bad_corpus_files_exit_2_before_a_model_loads(tmp_path, capsys, content, message):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    assert main(["information", "--model", "./no/such/model", "--corpus", str(path), "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_cli_language_not_in_the_word_list_exit_2(capsys):
    assert main(["information", "--model", "./no/such/model", "--languages", "en,ko", "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "language 'ko' is not in the word list" in err[0]
