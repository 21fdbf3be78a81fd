"""Scoring on a tiny random model: teacher-forced greedy correctness, p(answer) per layer, answer splitting."""

import numpy as np
import pytest
import torch

from core.analyses.lookup.answers import Item, Scores, make_batch, score, split_answer, token_span

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = ["The capital of France is", "1 2 3 4 5", "one two three four five six seven"]


def greedy(handle, ids, steps):
    ids = list(ids)
    out = []
    for _ in range(steps):
        with torch.inference_mode():
            nxt = int(handle.logits(make_batch(handle, [ids]))[0, -1].argmax())
        out.append(nxt)
        ids.append(nxt)
    return out


def test_greedy_continuations_are_correct_and_p_is_the_models(llama):
    items, probs = [], []
    for text in PROMPTS:
        ids = llama.tokenizer(text)["input_ids"]
        answer = greedy(llama, ids, 3)
        items.append(Item(tuple(ids), tuple(answer), (1, 2)))
        with torch.inference_mode():
            probs.append(float(torch.softmax(llama.logits(make_batch(llama, [ids]))[0, -1], -1)[answer[0]]))
    wrong_second = Item(items[0].ids, (items[0].answer[0], (items[0].answer[1] + 1) % 300), (1, 2))
    scores = score(llama, items + [wrong_second])
    assert scores.correct.tolist() == [True, True, True, False]  # the second token is teacher-forced and checked
    assert np.allclose(scores.p_answer[:3], probs, rtol=1e-4)
    assert np.allclose(scores.p_layers[:, -1], scores.p_answer, rtol=1e-5)  # the lens at the last layer is the model
    assert scores.top1_layers[:3, -1].all()
    alone = [score(llama, [it]) for it in items]  # left padding in the batch changes nothing
    assert np.allclose([s.p_answer[0] for s in alone], scores.p_answer[:3], rtol=1e-4)


def test_lens_only_where_asked(llama):
    ids = tuple(llama.tokenizer(PROMPTS[0])["input_ids"])
    scores = score(llama, [Item(ids, (5,), (0, 1)), Item(ids, (6,), (0, 1))], lens=[True, False])
    assert not np.isnan(scores.p_layers[0]).any() and np.isnan(scores.p_layers[1]).all()


def test_settled_layer():
    top1 = np.array([[False, True, False, True, True], [True, True, True, True, True], [True, True, True, True, False]])
    scores = Scores(np.ones(3, bool), np.ones(3), np.zeros(3, int), np.zeros((3, 5)), top1)
    assert [scores.settled_layer(i) for i in range(3)] == [3, 0, None]


def test_split_answer_moves_a_lone_space_to_the_prompt(gemma):
    tok = gemma.tokenizer
    prompt, answer = split_answer(tok, "Alice: 42\nBob:", "42")
    assert tok.decode(prompt[-1:]) == " " and [tok.decode([t]) for t in answer] == ["4", "2"]
    prompt, answer = split_answer(tok, "The capital of France is", "Paris")
    assert prompt == tok("The capital of France is")["input_ids"] and [tok.decode([t]) for t in answer] == [" Paris"]


def test_token_span_covers_the_characters(gemma):
    text = "The Eiffel Tower is in the city of"
    start = text.index("Eiffel Tower")
    span = token_span(gemma.tokenizer, text, start, start + len("Eiffel Tower"))
    ids = gemma.tokenizer(text)["input_ids"]
    assert gemma.tokenizer.decode(ids[span[0]:span[1]]).strip() == "Eiffel Tower"
