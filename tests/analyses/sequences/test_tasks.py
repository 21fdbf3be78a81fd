"""Tasks and prompts: sequences and rules, answers as the tokenizer splits them, custom pairs, filtering on Gemma."""

import numpy as np
import pytest

from core.analyses import sequences as sq
from core.analyses.sequences import tasks
from core.errors import UserError
from tests import tiny


def test_task_sequences_and_rules():
    numerals, months, fib = sq.TASKS["numerals"], sq.TASKS["months"], sq.TASKS["fibonacci"]
    assert numerals.sequences(4)[1] == [1, 2, 3, 4, 5]
    assert [10, 11, 0, 1, 2] in months.sequences(4)  # November December January February → March
    assert len(months.sequences(4)) == 12
    assert [1, 2, 3, 5, 8] in fib.sequences(4) and [2, 1, 3, 4, 7] in fib.sequences(4)
    assert sq.TASKS["descending"].sequences(3)[0] == [3, 2, 1, 0]
    assert sq.TASKS["interval10"].sequences(3)[1] == [1, 11, 21, 31]
    assert numerals.follows([7, 3, 4, 9]) and not numerals.follows([7, 3, 9, 4])
    assert months.follows([11, 0, 5]) and not months.follows([0, 11, 5])
    assert fib.follows([2, 9, 11, 4]) and not fib.follows([2, 9, 3, 7])


@pytest.mark.parametrize("style, prompt, answer", [("llama", "1 2 3 4", " 5"), ("gpt2", "1 2 3 4 ", "5")])
def test_answer_split_follows_the_tokenizer(style, prompt, answer):
    """``▁5`` is one token in the tiny Llama-style vocabulary, but ``Ġ5`` is not in the GPT-2-style one, so
    there the prompt must end with the space (as for Gemma and Llama-2)."""
    tok = tiny.tokenizer(style)
    text, correct, incorrect, ids = tasks._answer_split(tok, "1 2 3 4", "5", "4", first_token=False)
    assert (text, correct, incorrect) == (prompt, answer, answer.replace("5", "4"))
    assert tok(text + correct)["input_ids"] == tok(text)["input_ids"] + [ids[0]]


def test_parse_pairs_and_errors():
    rows = sq.parse_pairs("1 2 3 4 | 7 2 9 4 | 5 | 4\n\n# comment\nA B C | Q B X | D | C")
    assert rows == [("1 2 3 4", "7 2 9 4", "5", "4"), ("A B C", "Q B X", "D", "C")]
    with pytest.raises(UserError, match="line 1 .* four parts"):
        sq.parse_pairs("1 2 3 4 | 5")
    with pytest.raises(UserError, match="unknown task"):
        sq.Settings(task="primes").validate()


def test_numeral_prompts_on_gemma(gemma):
    prompts = sq.build_prompts(gemma, sq.Settings(task="numerals", n=8))
    # Gemma writes numbers digit by digit: only answers 4..9 are one token, and the model gets all 6 right.
    assert (prompts.n_candidates, prompts.n_kept, prompts.n_tokens) == (97, 6, 9)
    assert prompts.dropped["answer not one token"] == 91
    assert len(prompts.pairs) == 8
    lengths = {len(gemma.tokenizer(p)["input_ids"]) for p in prompts.clean + prompts.corrupt}
    assert lengths == {9}
    for pair in prompts.pairs:
        assert pair.clean.endswith(" ") and pair.correct.isdigit()  # "1 2 3 4 " → "5"
        members = [int(x) for x in pair.clean.split()]
        assert int(pair.correct) == members[-1] + 1 and int(pair.incorrect) == members[-1]
        assert not sq.TASKS["numerals"].follows([int(x) for x in pair.corrupt.split()])
        assert pair.logit_diff > np.log(2) and pair.p_correct > 0.1
