"""Retrieval heads on a tiny random model: attention to the span, and ablation through core.interventions."""

import numpy as np
import pytest

from core.analyses.lookup.answers import Item
from core.analyses.lookup.heads import attention_to_span, retrieval_heads

pytestmark = pytest.mark.usefixtures("one_thread")


def items_of(handle, texts, answer=7):
    out = []
    for text in texts:
        ids = tuple(handle.tokenizer(text)["input_ids"])
        out.append(Item(ids, (answer,), (1, 3)))
    return out


def test_attention_to_the_whole_prompt_is_one_for_every_head(family):
    items = items_of(family, ["The capital of France is", "1 2 3", "one two three four five six"])
    whole = [Item(it.ids, it.answer, (0, len(it.ids))) for it in items]  # different lengths: left padding
    assert np.allclose(attention_to_span(family, whole), 1.0, atol=1e-5)
    part = attention_to_span(family, items)
    assert (part >= 0).all() and (part <= 1 + 1e-6).all() and part.std() > 0


def test_ablating_heads_with_their_own_mean_changes_nothing(family):
    """Three copies of one prompt: the mean over them is each head's own output."""
    items = items_of(family, ["The capital of France is"] * 3)
    heads = retrieval_heads(family, items, top_k=4, ablation="mean")
    assert len(heads.table) == 4 and heads.table["attention"].is_monotonic_decreasing
    assert np.allclose(heads.table["pct_of_full"], 100.0, atol=1e-3)
    assert heads.together["pct_of_full"] == pytest.approx(100.0, abs=1e-3)
    assert (heads.table["accuracy"] == heads.full_accuracy).all() and heads.zero_ablated == 0


def test_zero_ablation_changes_p(family):
    items = items_of(family, ["The capital of France is", "The capital of Spain is"])
    heads = retrieval_heads(family, items, top_k=3, ablation="zero")
    assert np.abs(heads.table["pct_of_full"] - 100).max() > 0.1
    assert heads.together["components"] == list(heads.table["component"])


def test_a_prompt_without_a_same_length_partner_is_zero_ablated_and_counted(llama):
    items = items_of(llama, ["The capital of France is", "1 2 3 4 5 6 7 8 9 10 11 12"])
    heads = retrieval_heads(llama, items, top_k=2, ablation="mean")
    assert heads.zero_ablated == 2
