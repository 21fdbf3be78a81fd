"""Finding a fact's subject by noising: a planted subject is found, the batched search equals one corruption at a
time, the user's own span is traced, bad spans are one line; the CLI traces a CSV without a subject column."""

import json

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from core.analyses.lookup import Settings, run
from core.analyses.lookup.answers import make_batch, split_answer
from core.analyses.lookup.subject import (
    NEAR_BEST, candidate_spans, choose, find_subject, span_of_text, span_of_tokens, word_spans,
)
from core.analyses.lookup.tracing import corrupt
from core.cli import main
from core.errors import UserError
from core.models import wrap_model
from tests import tiny

pytestmark = pytest.mark.usefixtures("one_thread")
TEXT = "one two three four five six seven eight nine"


def planted(word: str):
    """A one-layer GPT-2 built by hand whose only head reads the position of ``word``: a key dimension only that
    word's embedding has, a constant query (its bias), values and output projection the identity, no MLP, no position
    embeddings. The last position's output is its own embedding plus ``word``'s: nothing else in the prompt matters."""
    tok = tiny.tokenizer("llama")  # every number word is one token (the byte-level one shares pieces between them)
    torch.manual_seed(0)
    d = 64
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=d, n_layer=1, n_head=1, n_positions=64,
                                       bos_token_id=1, eos_token_id=2))
    plant = tok(" " + word, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        wte = model.transformer.wte.weight
        wte.normal_()
        wte[:, :2] = 0
        wte[plant, 0] = 8.0  # the key only the planted word's tokens have
        for norm in (model.transformer.h[0].ln_1, model.transformer.h[0].ln_2, model.transformer.ln_f):
            norm.weight.fill_(1.0)
        attn = model.transformer.h[0].attn
        eye = torch.eye(d)
        attn.c_attn.weight[:, d:2 * d] = eye * (torch.arange(d) == 0)  # k = x₀
        attn.c_attn.bias[0] = 20.0  # q: a constant that picks out x₀
        attn.c_attn.weight[:, 2 * d:] = eye  # v = x
        attn.c_proj.weight.copy_(eye)
    model.config._attn_implementation = "eager"
    return wrap_model(model.eval(), tok, "planted-gpt2")


@pytest.mark.parametrize("word", ["two", "five", "seven"])
def test_the_search_finds_the_planted_subject(word):
    handle = planted(word)
    ids = handle.tokenizer(TEXT)["input_ids"]
    answer = int(handle.logits(make_batch(handle, [ids]))[0, -1].argmax())
    search = find_subject(handle, ids, TEXT, 0, answer)
    assert search.texts[search.chosen] == word
    others = [d for i, d in enumerate(search.drops) if word not in search.texts[i].split()]
    assert search.drops[search.chosen] > 0.5 and max(others) < 0.05  # no span without it hides the answer


def test_batched_search_equals_one_corruption_at_a_time(llama):
    text = "The capital of France is Paris. The capital of Germany is"
    ids = llama.tokenizer(text)["input_ids"]
    answer = int(llama.logits(make_batch(llama, [ids]))[0, -1].argmax())
    search = find_subject(llama, ids, text, 0, answer, noise=3.0, seed=4)
    assert len(search.spans) == len(candidate_spans(llama.tokenizer, text, 0)) > 10
    for span, p in zip(search.spans, search.p_noised):
        alone = corrupt(llama, ids, span, answer, noise=3.0, seed=4)
        assert p == pytest.approx(alone.p_corrupt, abs=1e-6)
        assert search.p_clean == pytest.approx(alone.p_clean, abs=1e-6)
    assert search.drops.max() > 0.01 and search.drops[search.chosen] >= NEAR_BEST * search.drops.max()
    last = word_spans(llama.tokenizer, text, 0)[-1][0]
    assert all(end <= last[0] for _, end in search.spans)  # the word that predicts the answer is never noised
    frame = search.frame()
    assert list(frame.columns) == ["start", "end", "text", "p_noised", "drop", "chosen"]
    assert frame["drop"].is_monotonic_decreasing and frame["chosen"].sum() == 1


def test_choose_takes_the_shortest_latest_span_near_the_largest_drop():
    spans = [(1, 2), (1, 3), (2, 3), (3, 4)]
    assert choose(spans, np.array([0.56, 0.60, 0.20, 0.55]), [1, 2, 1, 1]) == 3  # both ≥ 0.9 × 0.6: the later one
    assert choose(spans, np.array([0.56, 0.60, 0.20, 0.30]), [1, 2, 1, 1]) == 0  # one word near the best
    assert choose(spans, np.array([0.10, 0.60, 0.20, 0.30]), [1, 2, 1, 1]) == 1  # only the two-word span is near
    assert choose(spans, np.array([-0.1, -0.2, -0.05, -0.3]), [1, 2, 1, 1]) == 2  # nothing hides it: the least harm


def test_spans_of_text_and_tokens_and_bad_ones(llama):
    tok = llama.tokenizer
    text = "Paris. The capital of France is"
    ids = tok(text)["input_ids"]
    start, end = span_of_text(tok, text, 7, "France")
    assert tok.decode(ids[start:end]).strip() == "France"
    with pytest.raises(UserError, match="'Spain' is not in the prompt"):
        span_of_text(tok, text, 7, "Spain")
    with pytest.raises(UserError, match="is not in the prompt"):
        span_of_text(tok, text, 7, "Paris")  # before the fact's own prompt (a demonstration)
    assert span_of_tokens((2, 4), len(ids)) == (2, 4)
    with pytest.raises(UserError, match="not a span of the prompt's"):
        span_of_tokens((3, 3), len(ids))


def test_traced_span_is_the_setting_or_the_search(llama):
    csv = b"prompt,answer\nThe capital of France is Paris. The capital of Germany is,Berlin\n"
    base = Settings(task="facts", facts_csv=csv, top_heads=0, kinds=("residual",), neurons=2)
    searched = run(llama, base)
    assert searched.subject_from == "search" and searched.trace is not None
    assert searched.trace.subject == searched.subject_search.span
    chosen = run(llama, Settings(**{**base.__dict__, "subject_tokens": (9, 11)}))
    assert chosen.subject_from == "setting" and chosen.trace.subject == (9, 11) and chosen.subject_search is None
    by_text = run(llama, Settings(**{**base.__dict__, "subject": "Germany"}))
    start, end = by_text.trace.subject
    assert "".join(by_text.trace.tokens[start:end]).strip() == "Germany"
    out = by_text.to_json()["trace"]
    assert out["subject_from"] == "setting" and out["subject_text"] == "Germany" and "subject_candidates" not in out
    out = searched.to_json()["trace"]
    assert out["subject_from"] == "search" and out["subject_candidates"][0]["drop"] >= out["subject_candidates"][-1]["drop"]
    assert sum(c["chosen"] for c in out["subject_candidates"]) == 1
    assert "subject_candidates" in searched.frames()



def test_cli_traces_a_csv_without_subjects(tiny_folder, tmp_path, capsys):
    facts = tmp_path / "facts.csv"
    facts.write_text("prompt,answer\nThe capital of France is,Paris\nThe capital of Germany is,Berlin\n", encoding="utf-8")
    args = ["lookup", "--task", "facts", "--model", tiny_folder, "--facts", str(facts), "--top-heads", "0",
            "--kinds", "residual", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    trace = out["trace"]
    assert trace["subject_from"] == "search" and trace["subject_candidates"]
    start, end = trace["subject"]
    assert trace["subject_text"] == "".join(trace["tokens"][start:end]).strip()
    assert not any("nothing was traced" in note for note in out["notes"])
    assert main([*args, "--subject-tokens", "2:4"]) == 0
    assert json.loads(capsys.readouterr().out)["trace"]["subject"] == [2, 4]


@pytest.mark.parametrize("extra, message", [
    (["--subject", "Spain"], "the subject 'Spain' is not in the prompt"),
    (["--subject-tokens", "3"], "--subject-tokens takes a token range START:END"),
    (["--subject-tokens", "2:99"], "not a span of the prompt's"),
    (["--subject", "France", "--subject-tokens", "1:2"], "not both"),
    (["--task", "incontext", "--subject", "France"], "use --task facts"),
])
def test_cli_bad_subject_is_one_line_and_exit_2(tiny_folder, tmp_path, capsys, extra, message):
    facts = tmp_path / "facts.csv"
    facts.write_text("prompt,answer\nThe capital of France is,Paris\n", encoding="utf-8")
    assert main(["lookup", "--task", "facts", "--model", tiny_folder, "--facts", str(facts), "--top-heads", "0",
                 "--kinds", "residual", *extra, "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize("text, answer, subject", [("The Eiffel Tower is located in the city of", "Paris", "Eiffel"),
                                                   ("The capital of France is the city of", "Paris", "France")])
def test_gemma_finds_the_subject(gemma, text, answer, subject):
    ids, answer = split_answer(gemma.tokenizer, text, answer)
    search = find_subject(gemma, ids, text, 0, answer[0])
    assert search.texts[search.chosen] == subject
    traced = corrupt(gemma, ids, search.span, answer[0])  # what the trace corrupts: the same noise
    assert traced.p_corrupt == pytest.approx(float(search.p_noised[search.chosen]), abs=1e-4)
    assert search.p_clean > 0.5 and traced.p_corrupt < 0.05


def test_a_one_word_prompt_without_subject_is_not_traced_and_says_why(llama):
    result = run(llama, Settings(task="facts", facts_csv=b"prompt,answer\nParis,France\n", top_heads=0, neurons=0))
    assert result.trace is None and result.subject_search is None
    assert any("no word before its last one" in note for note in result.notes)
    assert result.to_json()["trace"] is None
