"""Prompts and token sets of the translation analysis: what the model is asked, and what counts as each language.

- ``build_prompt``: the few-shot prompt of one word (``Français: "fleur" - 中文: "``).
- ``language_tokens``: the ids that begin a word. Whole-character tokens as in
  ``core.tokens.word_token_set``; when the word's first character is spelled in pieces (UTF-8
  bytes in Llama-2, byte-level BPE), the pieces are not counted alone: the first piece (e.g.
  <0xE0>) is shared by Devanagari and Tamil. The word's first *two* pieces count instead:
  p(piece1) at the prompt's end times p(piece2) read after teacher-forcing piece1.
- ``plan_words``: prompts and token sets for a word list, and which words are dropped and why
  (target and latent sets overlap, the latent word is a prefix of the target word, the
  tokenizer cannot write a word).

The three sets are disjoint: the source set leaves out tokens that are also in the target or
latent set (so "fl" counts for "flower", not for "fleur", in French -> English).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from core.analyses.translation.wordlist import LANGUAGES, WordList
from core.tokens import first_char_tokens, token_str, word_token_set

if TYPE_CHECKING:
    from core.analyses.translation.analysis import Settings

TASKS = ("translation", "repetition", "cloze")
SLOTS = ("target", "latent", "source")  # the three languages tracked, in array order
MAX_SHOTS = 16


def _line(task: str, source: str, target: str, source_word: str, target_word: str | None) -> str:
    """One demonstration (``target_word`` given) or the query (None: ends at the answer's opening quote)."""
    src, tgt = LANGUAGES[source].name, LANGUAGES[target].name
    answer = "" if target_word is None else f'{target_word}"'
    if task == "cloze":
        return f'{src}: "{source_word}" - {tgt}: "___" ⇒ "{answer}'
    return f'{src}: "{source_word}" - {tgt}: "{answer}'


def build_prompt(words: WordList, index: int, settings: Settings, avoid: tuple[int, ...] = ()) -> str:
    """The few-shot prompt for word ``index``: ``shots`` other words (seeded per word), then the query.

    The demonstrations for a word depend only on (seed, task, languages, word), so ``--limit``
    and batching never change a word's prompt. ``avoid``: words never shown as demonstrations (the other
    concept of a patched pair).
    """
    rng = random.Random(f"{settings.seed}|{settings.task}|{settings.source}|{settings.target}|{index}")
    others = [i for i in range(len(words)) if i != index and i not in avoid]
    demos = rng.sample(others, settings.shots)
    src_words, tgt_words = words.words[settings.source], words.words[settings.target]
    lines = [_line(settings.task, settings.source, settings.target, src_words[i], tgt_words[i]) for i in demos]
    lines.append(_line(settings.task, settings.source, settings.target, src_words[index], None))
    return "\n".join(lines)


# -- token sets -----------------------------------------------------------------------------------


def _is_fragment(tokenizer, token_id: int) -> bool:
    """A piece of a character (a UTF-8 byte token, a byte-level BPE fragment): not text on its own."""
    text = tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)
    return "\ufffd" in text


@dataclass(frozen=True)
class LanguageTokens:
    """What counts as "the model is writing ``word``": ``whole`` tokens, or the two-piece ``lead``."""

    word: str
    whole: frozenset[int]  # tokens that begin the word and are whole characters
    lead: tuple[int, int] | None = None  # first two pieces when the first character is split into pieces

    @property
    def empty(self) -> bool:
        return not self.whole and self.lead is None

    @property
    def ids(self) -> frozenset[int]:
        """Every id the lens may show for this word at the answer position (the lead's first piece too)."""
        return self.whole | ({self.lead[0]} if self.lead else set())

    def overlaps(self, other: "LanguageTokens") -> bool:
        return bool(self.whole & other.whole) or (self.lead is not None and self.lead == other.lead)

    def without(self, *others: "LanguageTokens") -> "LanguageTokens":
        """This set less every token (and lead) it shares with ``others``."""
        whole = self.whole.difference(*(o.whole for o in others))
        lead = None if self.lead is None or any(self.lead == o.lead for o in others) else self.lead
        return LanguageTokens(self.word, whole, lead)


def language_tokens(tokenizer, word: str) -> LanguageTokens:
    """The ids that begin ``word`` (see the module docstring); special tokens and <unk> never count."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    whole = frozenset(
        t for t in word_token_set(tokenizer, word).ids if t not in special and not _is_fragment(tokenizer, t)
    )
    pieces = first_char_tokens(tokenizer, word)
    lead = None
    if len(pieces) >= 2 and _is_fragment(tokenizer, pieces[0]) and pieces[0] not in special:
        lead = (int(pieces[0]), int(pieces[1]))
    return LanguageTokens(word.strip(), whole, lead)


@dataclass(frozen=True)
class WordPlan:
    """One kept word: its prompt and the token sets of its three languages."""

    row: int  # index in the word list
    words: dict  # slot -> word
    prompt: str
    sets: dict  # slot -> LanguageTokens
    forced: dict = field(default_factory=dict)  # lead's first piece -> (teacher-forced text, tokens after the prompt)


@dataclass(frozen=True)
class Plan:
    settings: Settings
    kept: list[WordPlan]
    dropped: pd.DataFrame  # row, source_word, target_word, latent_word, reason, detail


def _words_of(words: WordList, row: int, s: Settings) -> dict:
    return {"target": words.words[s.target][row], "latent": words.words[s.latent][row],
            "source": words.words[s.source][row]}


def plan_words(tokenizer, settings: Settings) -> Plan:
    """Prompts and token sets for the first ``settings.limit`` words of ``settings.word_list``; the others
    dropped with a reason. ``Plan.settings`` are the settings as run (``Settings.resolved``)."""
    settings.validate()
    s = settings.resolved()
    words = s.word_list
    rows = range(len(words) if s.limit is None else min(s.limit, len(words)))
    kept, dropped = [], []

    def drop(row, names, reason, detail=""):
        dropped.append((row, names["source"], names["target"], names["latent"], reason, detail))

    for row in rows:
        names = _words_of(words, row, s)
        target = language_tokens(tokenizer, names["target"])
        latent = target if s.latent == s.target else language_tokens(tokenizer, names["latent"])
        if s.source == s.target:
            source = target
        elif s.source == s.latent:
            source = latent
        else:
            source = language_tokens(tokenizer, names["source"]).without(target, latent)
        empty = [slot for slot, t in (("target", target), ("latent", latent)) if t.empty]
        if language_tokens(tokenizer, names["source"]).empty:
            empty.append("source")
        if empty:
            drop(row, names, "tokenizer cannot write the word", f"{', '.join(empty)}: only unknown tokens")
            continue
        if s.latent != s.target:
            if names["target"].casefold().startswith(names["latent"].casefold()):
                drop(row, names, "latent word is a prefix of the target word")
                continue
            if target.overlaps(latent):
                shared = sorted(target.whole & latent.whole)
                detail = ", ".join(repr(token_str(tokenizer, t)) for t in shared) or "same first two pieces"
                drop(row, names, "target and latent token sets overlap", detail)
                continue
        prompt = build_prompt(words, row, s)
        sets = {"target": target, "latent": latent, "source": source}
        forced, failed = _teacher_forced(tokenizer, prompt, names, sets)
        if failed:
            drop(row, names, "first character cannot be teacher-forced", failed)
            continue
        kept.append(WordPlan(row, names, prompt, sets, forced))
    frame = pd.DataFrame(dropped, columns=["row", "source_word", "target_word", "latent_word", "reason", "detail"])
    return Plan(s, kept, frame)


def _teacher_forced(tokenizer, prompt: str, names: dict, sets: dict) -> tuple[dict, str]:
    """For each distinct first piece among the sets' leads: the prompt with the word's first character
    appended, and how many tokens that character adds (the lens reads at -that). ({}, "") when no lead."""
    forced, base = {}, None
    for slot in SLOTS:
        lead = sets[slot].lead
        if lead is None or lead[0] in forced:
            continue
        if base is None:
            base = tokenizer(prompt)["input_ids"]
        text = prompt + names[slot].strip()[0]
        ids = tokenizer(text)["input_ids"]
        if ids[: len(base)] != base or len(ids) < len(base) + 2 or tuple(ids[len(base): len(base) + 2]) != lead:
            return {}, f"{slot} word {names[slot]!r}: appending its first character does not give its first pieces"
        forced[lead[0]] = (text, len(ids) - len(base))
    return forced, ""

