"""The synthetic corpus: lines with known structure, so that skills can be measured exactly.

Three line formats, one example per line, in random order:

    count: 17 18 19 20 21          (counting: each number is the previous plus one)
    add: 23+45=68                  (arithmetic facts: two numbers below 50 and their sum)
    brackets: ( [ { | } ] )        (bracket matching: the closers mirror the openers)

`skill_probes` builds held-out prompts for each skill; `core.analyses.train.skills` scores a model on
them. Regenerate the shipped file with `python -m core.analyses.train.synthetic` (same seed, same bytes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

CORPUS_SEED = 0
PROBE_SEED = 1234
CORPUS_LINES = 8_000
BRACKET_PAIRS = {"(": ")", "[": "]", "{": "}", "<": ">"}
# A corpus holding all of these line prefixes gets its skills tracked during training.
SKILL_PREFIXES = ("count: ", "add: ", "brackets: ")


@dataclass(frozen=True)
class Probe:
    """A prompt and the exact text a model that has the skill continues it with."""

    skill: str
    prompt: str
    answer: str


def counting_example(rng: random.Random, shown: int) -> Probe:
    start = rng.randrange(0, 200)
    numbers = [str(n) for n in range(start, start + shown + 1)]
    return Probe("counting", "count: " + " ".join(numbers[:-1]), " " + numbers[-1])


def addition_example(rng: random.Random) -> Probe:
    a, b = rng.randrange(50), rng.randrange(50)
    return Probe("addition", f"add: {a}+{b}=", str(a + b))


def brackets_example(rng: random.Random) -> Probe:
    openers = [rng.choice(list(BRACKET_PAIRS)) for _ in range(rng.randint(1, 6))]
    closers = [BRACKET_PAIRS[o] for o in reversed(openers)]
    return Probe("brackets", "brackets: " + " ".join(openers) + " |", " " + " ".join(closers))


def _example(rng: random.Random) -> Probe:
    kind = rng.randrange(3)
    if kind == 0:
        return counting_example(rng, shown=rng.randint(3, 7))
    if kind == 1:
        return addition_example(rng)
    return brackets_example(rng)


def synthetic_text(lines: int = CORPUS_LINES, seed: int = CORPUS_SEED) -> str:
    """The corpus: `lines` examples, each `prompt + answer`, newline-terminated."""
    rng = random.Random(seed)
    return "".join(p.prompt + p.answer + "\n" for p in (_example(rng) for _ in range(lines)))


def skill_probes(per_skill: int = 32, seed: int = PROBE_SEED) -> dict[str, list[Probe]]:
    """Fixed prompts per skill (drawn with their own seed, so the same every run)."""
    rng = random.Random(seed)
    return {
        "counting": [counting_example(rng, shown=3) for _ in range(per_skill)],
        "addition": [addition_example(rng) for _ in range(per_skill)],
        "brackets": [brackets_example(rng) for _ in range(per_skill)],
    }


if __name__ == "__main__":
    from core.analyses.train.corpora import CORPORA_DIR

    out = CORPORA_DIR / "synthetic.txt"
    out.write_text(synthetic_text(), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
