"""In-context prompts: drawn by seed from the shipped lists, equal token lengths per K, the conditions, bad K."""

import random
from collections import Counter

import pytest

from core.analyses.lookup import incontext
from core.analyses.lookup.incontext import Prompt, build, items, typo
from core.errors import UserError


def test_prompts_are_drawn_by_seed(gemma):
    a = build(gemma, "words", (2, 4), 6, seed=3)
    assert a == build(gemma, "words", (2, 4), 6, seed=3)
    assert a != build(gemma, "words", (2, 4), 6, seed=4)
    assert Counter((p.k, p.condition) for p in a) == {(2, "clean"): 6, (4, "clean"): 6, (4, "collision"): 6, (4, "typo"): 6}


@pytest.mark.parametrize("lists", list(incontext.LISTS))
def test_prompts_of_one_k_have_one_token_length_and_the_span_is_the_queried_pair(gemma, lists):
    prompts = build(gemma, lists, (3, 8), 8, seed=0, perturb=False)
    scored = items(gemma, prompts)
    for k in (3, 8):
        lengths = {len(it.ids) for it, p in zip(scored, prompts) if p.k == k}
        assert len(lengths) == 1, (lists, k, lengths)
    tok = gemma.tokenizer
    for it, p in zip(scored, prompts):
        key, value = p.pairs[p.query]
        assert tok.decode(list(it.ids[it.span[0]:it.span[1]])).strip() == f"{key}: {value}"
        assert tok.decode(list(it.answer)).strip() == value


def test_queried_positions_are_balanced_and_conditions_do_what_they_say(gemma):
    prompts = build(gemma, "names", (5,), 12, seed=1)
    clean = [p for p in prompts if p.condition == "clean"]
    counts = Counter(p.query for p in clean)
    assert set(counts) == set(range(5)) and max(counts.values()) - min(counts.values()) <= 1
    few = build(gemma, "names", (8,), 4, seed=1, perturb=False)  # fewer prompts than pairs: spread out
    assert sorted(p.query for p in few) == [0, 2, 4, 6]
    for p in prompts:
        keys = [k for k, _ in p.pairs]
        values = [v for _, v in p.pairs]
        assert len(set(keys)) == p.k
        if p.condition == "collision":
            assert values.count(p.answer) == 2 and len(set(values)) == p.k - 1
        elif p.condition == "typo":
            assert p.query_key != keys[p.query] and p.query_key not in keys
            assert sorted(p.query_key.lower()) == sorted(keys[p.query].lower())
        else:
            assert p.query_key == keys[p.query] and len(set(values)) == p.k
        assert p.text.endswith(f"\n{p.query_key}:") and p.text.count("\n") == p.k + 2


def test_typo_avoids_other_keys():
    rng = random.Random(0)
    assert typo("K27", rng, {"K27", "K72"}) in {"2K7", "k27"}
    assert typo("K27", rng, {"K27", "K72", "2K7"}) == "k27"
    assert typo("aa", rng, {"aa"}) == "AA"
    assert typo("Bob", rng, {"Bob"}) in {"oBb", "Bbo"}


def test_k_beyond_the_list_or_the_context_is_a_user_error(gemma, llama):
    with pytest.raises(UserError, match="colours list has 30"):
        build(gemma, "codes", (31,), 1, seed=0)
    with pytest.raises(UserError, match="longer than the model's context of 256"):
        build(llama, "codes", (200,), 1, seed=0)  # the tiny model reads 256 tokens


def test_prompt_text_and_pair_span():
    p = Prompt((("apple", "river"), ("stone", "cloud")), 1, "stone", "clean")
    assert p.text == "Key-value pairs:\napple: river\nstone: cloud\nLook up the value of the key.\nstone:"
    start, end = p.pair_chars()
    assert p.text[start:end] == "stone: cloud" and p.answer == "cloud"
