"""Successor scores of every head, recomputed by hand on a tiny model; computed once per loaded model."""

import gc

import pytest
import torch

from core import interventions as iv
from core.analyses import sequences as sq
from core.analyses.sequences import heads, tasks
from core.tokens import token_str
from tests import tiny


def test_successor_scores_on_a_tiny_model():
    handle = tiny.handle("llama")
    scores = heads._successor_scores(handle, None, layers_per_pass=2)
    assert set(scores.frame["token_set"]) == set(sq.SUCCESSOR_SETS)
    assert len(scores.frame) == 3 * 4 * len(sq.SUCCESSOR_SETS)
    # This Llama-style tokenizer prepends "▁" itself, so " Monday" is two tokens and the bare word is used.
    kept = sq.successor_tokens(handle.tokenizer, tasks.WEEKDAYS)
    assert [member for member, _ in kept] == list(range(7))
    ids = [t for _, t in kept]
    assert ids == [handle.tokenizer(d, add_special_tokens=False)["input_ids"][0] for d in tasks.WEEKDAYS]
    assert scores.tokens["weekdays"] == [token_str(handle.tokenizer, i) for i in ids]
    scored = scores.frame[scores.frame["n_tokens"] > 0]
    assert scored["score"].between(0, 1).all()
    assert (scores.frame.loc[scores.frame["token_set"] == "weekdays", "n_tokens"] == 6).all()
    # Recompute one head's weekday score by hand from the interventions' primitives.
    out = handle.head_ov(handle.after_first_mlp(ids), [1])[0, 2]
    best = handle.token_logits(out, torch.tensor(ids)).argmax(-1)
    expected = float((best[:-1] == torch.arange(1, 7)).float().mean())
    row = scores.frame[(scores.frame["layer"] == 1) & (scores.frame["head"] == 2) & (scores.frame["token_set"] == "weekdays")]
    assert row["score"].iloc[0] == pytest.approx(expected)


def test_successor_scores_are_computed_once_per_loaded_model():
    """Cached on the model object itself (``core.cache.PerModel``): a model loaded after another one was
    dropped gets its own scores, even when it reuses the dropped model's ``id``."""
    first = tiny.handle("llama", seed=1)
    scores = sq.successor_scores(first)
    assert sq.successor_scores(first) is scores
    dropped = scores.frame.copy()
    del first, scores
    gc.collect()
    other = tiny.handle("llama", seed=2)
    own = heads._successor_scores(other, None, layers_per_pass=8).frame
    assert not own.equals(dropped)  # the two random models score differently, so a stale entry would show
    assert sq.successor_scores(other).frame.equals(own)
