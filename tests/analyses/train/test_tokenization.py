"""Char-level and byte-level BPE tokenizers: round trips, padding, save and reload."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from core.errors import UserError
from core.analyses.train.corpora import load_corpus
from core.analyses.train.tokenization import bpe_tokenizer, build_tokenizer, char_tokenizer, encode, token_labels

SAMPLE = "To be, or not to be: that is the question.\nWhether 'tis nobler — in the mind — to suffer\n"


@pytest.fixture(scope="module")
def shakespeare_bpe():
    return bpe_tokenizer(load_corpus("shakespeare").text[:60_000], vocab_size=400)


def test_char_tokenizer_is_one_token_per_character():
    tok = char_tokenizer(SAMPLE)
    ids = encode(tok, SAMPLE)
    assert len(ids) == len(SAMPLE)
    assert len(tok) == 2 + len(set(SAMPLE))  # <pad>, <unk> and every character
    assert tok.decode(ids) == SAMPLE
    assert tok.convert_ids_to_tokens(encode(tok, "To\n")) == ["T", "o", "\n"]


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=sorted(set(SAMPLE)), max_size=80))
def test_char_round_trip_on_any_text_of_known_characters(text):
    tok = char_tokenizer(SAMPLE)
    assert tok.decode(encode(tok, text)) == text


def test_char_unknown_characters_become_unk():
    tok = char_tokenizer("abc")
    assert encode(tok, "aZc") == [encode(tok, "a")[0], tok.unk_token_id, encode(tok, "c")[0]]


@settings(max_examples=25, deadline=None)
@given(st.text(max_size=60))
def test_bpe_round_trips_any_unicode_text(shakespeare_bpe, text):
    assert shakespeare_bpe.decode(encode(shakespeare_bpe, text)) == text


def test_bpe_learns_merges_that_shorten_text(shakespeare_bpe):
    ids = encode(shakespeare_bpe, SAMPLE)
    assert len(shakespeare_bpe) == 400
    assert len(ids) < 0.7 * len(SAMPLE.encode())  # merges make tokens longer than one byte
    assert shakespeare_bpe.decode(ids) == SAMPLE


def test_bpe_training_is_deterministic():
    text = load_corpus("shakespeare").text[:30_000]
    assert bpe_tokenizer(text, 300).backend_tokenizer.to_str() == bpe_tokenizer(text, 300).backend_tokenizer.to_str()


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_left_padding_and_reload_through_auto_tokenizer(kind, tmp_path):
    tok = build_tokenizer(SAMPLE * 3, kind, 300)
    batch = tok(["To be", "or not to be"], padding=True)
    short, long = batch["input_ids"]
    assert len(short) == len(long)
    n_pad = batch["attention_mask"][0].count(0)
    assert n_pad > 0 and short[:n_pad] == [tok.pad_token_id] * n_pad  # padding on the left
    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(["To be", "or not to be"], padding=True)["input_ids"] == batch["input_ids"]
    assert reloaded.decode(encode(reloaded, SAMPLE)) == SAMPLE


def test_token_labels_show_whitespace():
    tok = char_tokenizer("a b\n")
    assert token_labels(tok, encode(tok, "a b\n")) == ["a", "·", "b", "⏎"]


def test_unknown_kind_and_tiny_bpe_vocab_are_user_errors():
    with pytest.raises(UserError, match="unknown tokenizer"):
        build_tokenizer(SAMPLE, "wordpiece")
    with pytest.raises(UserError, match="at least 260"):
        build_tokenizer(SAMPLE, "bpe", 100)
