"""In-context lookup prompts: a header, K ``key: value`` lines, an instruction, then a query key; the model
should write its value.

Pairs are drawn by seed from shipped lists (``assets/lookup/``): words → words, names → numbers (10–99),
codes (a letter and two digits) → colours. Each list keeps only the items with its most common token
count under the model's tokenizer, so prompts with the same K have the same token length (ablations
compare positions one to one). Conditions, at the main K: ``clean``; ``collision`` (another key shares
the queried value); ``typo`` (the query key is misspelt: two letters swapped).
"""

from __future__ import annotations

import random
import string
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from core.analyses.lookup.answers import Item, check_length, ids_of, split_answer, token_span
from core.errors import UserError
from core.models.handle import ModelHandle

ASSETS = Path(__file__).resolve().parents[3] / "assets" / "lookup"
LISTS = {  # name -> (keys, values)
    "words": ("words", "words"),
    "names": ("names", "numbers"),
    "codes": ("codes", "colours"),
}
LIST_TITLES = {"words": "words → words", "names": "names → numbers", "codes": "codes → colours"}
CONDITIONS = ("clean", "collision", "typo")
# A bare list reads as free association to a small model (Gemma 3 270M: 21% right at K = 8, 24 prompts); with
# a header and a one-line instruction before the query it reads as a lookup (92%).
HEADER = "Key-value pairs:\n"
QUESTION = "Look up the value of the key.\n"


@lru_cache(maxsize=None)
def shipped(name: str) -> tuple[str, ...]:
    """A list by name: a shipped file (``assets/lookup/<name>.txt``) or a generated one (numbers, codes)."""
    if name == "numbers":
        return tuple(str(i) for i in range(10, 100))
    if name == "codes":
        return tuple(f"{letter}{i:02d}" for letter in string.ascii_uppercase for i in range(100))
    lines = (ASSETS / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    return tuple(dict.fromkeys(s.strip() for s in lines if s.strip() and not s.startswith("#")))


def pool(tokenizer, name: str, as_value: bool) -> list[str]:
    """The list's items with its most common token count (a value is read after a space)."""
    items = shipped(name)
    counts = [len(ids_of(tokenizer, (" " if as_value else "") + item, special=False)) for item in items]
    mode = Counter(counts).most_common(1)[0][0]
    return [item for item, c in zip(items, counts) if c == mode]


@dataclass(frozen=True)
class Prompt:
    """One lookup prompt: ``pairs`` in order, the queried pair's index, the key as typed in the query."""

    pairs: tuple[tuple[str, str], ...]
    query: int
    query_key: str
    condition: str

    @property
    def k(self) -> int:
        return len(self.pairs)

    @property
    def answer(self) -> str:
        return self.pairs[self.query][1]

    @property
    def text(self) -> str:
        lines = [f"{key}: {value}" for key, value in self.pairs]
        return HEADER + "\n".join(lines) + f"\n{QUESTION}{self.query_key}:"

    def pair_chars(self) -> tuple[int, int]:
        """Character span of the queried ``key: value`` line."""
        start = len(HEADER) + sum(len(f"{k}: {v}") + 1 for k, v in self.pairs[: self.query])
        key, value = self.pairs[self.query]
        return start, start + len(f"{key}: {value}")


def typo(key: str, rng: random.Random, taken: set[str]) -> str | None:
    """``key`` with two neighbouring characters swapped (or its case flipped), not equal to any key in ``taken``."""
    spots = [i for i in range(len(key) - 1) if key[i] != key[i + 1]]
    rng.shuffle(spots)
    candidates = [key[:i] + key[i + 1] + key[i] + key[i + 2:] for i in spots] + [key.swapcase()]
    for candidate in candidates:
        if candidate != key and candidate not in taken:
            return candidate
    return None


def build(handle: ModelHandle, list_name: str, pair_counts: tuple[int, ...], n: int, seed: int,
          perturb: bool = True) -> list[Prompt]:
    """``n`` clean prompts per K in ``pair_counts``, plus ``n`` collision and ``n`` typo prompts at the
    largest K. Queried positions cycle through 0..K-1, so every position is asked about equally often (with
    fewer prompts than pairs, they are spread from the first pair to the last)."""
    if list_name not in LISTS:
        raise UserError(f"unknown list '{list_name}': choose one of {', '.join(LISTS)}")
    key_list, value_list = LISTS[list_name]
    keys, values = pool(handle.tokenizer, key_list, False), pool(handle.tokenizer, value_list, True)
    main = max(pair_counts)
    _check_size(handle, keys, values, main, list_name)
    rng = random.Random(seed)
    prompts = []
    conditions = [(k, "clean") for k in sorted(pair_counts)]
    if perturb and main >= 2:
        conditions += [(main, "collision"), (main, "typo")]
    for k, condition in conditions:
        positions = [i % k if n >= k else i * k // n for i in range(n)]  # every position equally, or spread out
        rng.shuffle(positions)
        for query in positions:
            for _attempt in range(20):
                chosen = list(zip(rng.sample(keys, k), rng.sample(values, k)))
                query_key = chosen[query][0]
                if condition == "collision":
                    other = rng.choice([i for i in range(k) if i != query])
                    chosen[other] = (chosen[other][0], chosen[query][1])
                elif condition == "typo":
                    query_key = typo(query_key, rng, {key for key, _ in chosen})
                if query_key is not None:
                    break
            else:
                raise UserError(f"cannot misspell the keys of the {list_name} list without hitting another key")
            prompts.append(Prompt(tuple(chosen), query, query_key, condition))
    return prompts


def _check_size(handle: ModelHandle, keys: list[str], values: list[str], k: int, list_name: str) -> None:
    """K must fit the model's context and the list (distinct keys and values)."""
    per_pair = len(ids_of(handle.tokenizer, f"{keys[0]}: {values[0]}\n", special=False))
    frame = len(ids_of(handle.tokenizer, HEADER + QUESTION))
    check_length(handle, frame + per_pair * (k + 1), f"a prompt of K={k} pairs ({per_pair} tokens per pair)")
    limit = min(len(keys), len(values))
    if k > limit:
        raise UserError(f"K={k} pairs need {k} distinct keys and values, but the {LIST_TITLES[list_name]} list has "
                        f"{limit} under this tokenizer: use K ≤ {limit} or another list")


def items(handle: ModelHandle, prompts: list[Prompt]) -> list[Item]:
    """Each prompt as token ids, its answer's tokens and the queried pair's token span."""
    out = []
    for prompt in prompts:
        text = prompt.text
        ids, answer = split_answer(handle.tokenizer, text, prompt.answer)
        check_length(handle, len(ids) + len(answer), f"a prompt of K={prompt.k} pairs")
        out.append(Item(tuple(ids), tuple(answer), token_span(handle.tokenizer, text, *prompt.pair_chars())))
    return out
