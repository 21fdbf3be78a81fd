"""Skill accuracy on the synthetic corpus: does the model continue `count: 12 13 14` with ` 15`?

A probe counts as solved when the greedy continuation starts with the exact answer followed
by a boundary (space or newline), so ` 150` is not a correct continuation of `... 13 14`.
"""

from __future__ import annotations

from core.analyses.train.generate import greedy_continuations
from core.models.tinylm import TinyLM
from core.analyses.train.synthetic import SKILL_PREFIXES, Probe, skill_probes


def corpus_has_skills(text: str) -> bool:
    """True when the text holds every synthetic line format (the synthetic corpus, or a file like it)."""
    return all(("\n" + prefix) in text or text.startswith(prefix) for prefix in SKILL_PREFIXES)


def solved(continuation: str, answer: str) -> bool:
    return continuation.startswith(answer) and continuation[len(answer) : len(answer) + 1] in (" ", "\n")


def skill_accuracy(model: TinyLM, tokenizer, probes: dict[str, list[Probe]] | None = None) -> dict[str, float]:
    """Fraction of probes solved, per skill (greedy decoding, one batch per skill)."""
    probes = skill_probes() if probes is None else probes
    accuracy = {}
    for skill, items in probes.items():
        # every token is at least one character, so len(answer) + 1 tokens reach past the answer
        max_new_tokens = max(len(p.answer) for p in items) + 1
        continuations = greedy_continuations(model, tokenizer, [p.prompt for p in items], max_new_tokens)
        accuracy[skill] = sum(solved(c, p.answer) for c, p in zip(continuations, items)) / len(items)
    return accuracy
