"""Sequence-continuation tasks and their prompts: clean and corrupted prompts of equal token length.

``build_prompts`` makes them from a built-in task (bare, ``1 2 3 4 `` → ``5``, or inside sentences) or
the user's own pairs (``parse_pairs``), keeping a prompt only when both answers are single tokens
(or scored by their first token) and the model gets the clean prompt right: top-1 correct and
p(correct) > 2·p(incorrect). The corrupted twin draws random members, so the pattern is broken.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import torch

from core.errors import UserError
from core.lens import run_lens
from core.models.handle import ModelHandle

if TYPE_CHECKING:
    from core.analyses.sequences.analysis import Settings

TEMPLATES = ("bare", "sentence")
MAX_CHECKED = 64  # candidate prompts run through the model when filtering
NUMBERS = tuple(str(i) for i in range(0, 101))  # members of the numeric tasks
NUMBER_WORDS = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                "sixteen seventeen eighteen nineteen twenty").split()
ORDINALS = ("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
            "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth").split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = ("January February March April May June July August September October November December").split()
LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
NAMES = "John Mary Paul Anna Tom Lisa Mark Sarah James Emma David Laura Peter Kate".split()


# -- tasks ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """An ordered set of members and the rule that continues a sequence of them."""

    name: str
    title: str
    members: tuple[str, ...]
    step: int = 1  # index step between consecutive members
    cyclic: bool = False  # December → January
    fibonacci: bool = False  # next = sum of the two before
    sentence: str = "{name} was born in {member}."  # one shown member inside the sentence template
    query: str = "{name} was born in"

    def sequences(self, length: int) -> list[list[int]]:
        """Every clean sequence of ``length`` shown members plus the answer, as member indices."""
        n = len(self.members)
        out = []
        if self.fibonacci:
            for a in range(1, 10):
                for b in range(1, 10):
                    seq = [a, b]
                    while len(seq) < length + 1:
                        seq.append(seq[-2] + seq[-1])
                    if seq[-1] < n:
                        out.append(seq[: length + 1])
            return out
        for start in range(n):
            seq = [start + i * self.step for i in range(length + 1)]
            if self.cyclic:
                seq = [i % n for i in seq]
            elif min(seq) < 0 or max(seq) >= n:
                continue
            out.append(seq)
        return out

    def follows(self, seq: Sequence[int]) -> bool:
        """Whether any step of ``seq`` obeys the task's rule (a corrupted sequence must not)."""
        if self.fibonacci:
            return any(seq[i] + seq[i + 1] == seq[i + 2] for i in range(len(seq) - 2)) or any(
                b == a + 1 for a, b in zip(seq, seq[1:]))
        n = len(self.members)
        for a, b in zip(seq, seq[1:]):
            if (b - a) % n == self.step % n if self.cyclic else b - a == self.step:
                return True
        return False


def _interval(step: int) -> Task:
    return Task(f"interval{step}", f"intervals (+{step})", NUMBERS, step=step)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("numerals", "numerals (1 2 3 4 → 5)", NUMBERS),
        Task("number_words", "number words (one two three → four)", tuple(NUMBER_WORDS)),
        Task("months", "months (March April May → June)", tuple(MONTHS), cyclic=True),
        Task("weekdays", "weekdays (Monday Tuesday → Wednesday)", tuple(WEEKDAYS), cyclic=True,
             sentence="{name} arrived on {member}.", query="{name} arrived on"),
        Task("letters", "letters (A B C → D)", tuple(LETTERS),
             sentence="{name} sat in row {member}.", query="{name} sat in row"),
        _interval(2), _interval(3), _interval(5), _interval(10),
        Task("descending", "descending (9 8 7 → 6)", NUMBERS, step=-1),
        Task("fibonacci", "Fibonacci (1 2 3 5 → 8)", NUMBERS, fibonacci=True),
    )
}


# -- prompts -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptPair:
    """A clean prompt, its corrupted twin (same token length, pattern broken) and the two answers scored.

    ``correct``/``incorrect`` are the answer texts exactly as they follow the prompt (e.g. "5" after a
    trailing space for Gemma, " 5" for GPT-2); the ids are the tokens scored.
    """

    clean: str
    corrupt: str
    correct: str
    incorrect: str
    correct_id: int
    incorrect_id: int
    logit_diff: float = float("nan")  # clean logit difference of the unablated model
    p_correct: float = float("nan")


@dataclass
class PromptSet:
    """The prompts of one analysis, and how many candidates each filter dropped."""

    task: str
    template: str
    pairs: list[PromptPair]
    n_candidates: int  # distinct clean prompts generated (or typed)
    n_kept: int  # distinct clean prompts that passed every filter
    dropped: dict[str, int]  # reason -> number of distinct clean prompts dropped
    n_tokens: int  # token length of every prompt
    first_token: bool = False  # multi-token answers scored by their first token

    @property
    def clean(self) -> list[str]:
        return [p.clean for p in self.pairs]

    @property
    def corrupt(self) -> list[str]:
        return [p.corrupt for p in self.pairs]

    def answer_ids(self) -> torch.Tensor:
        """[pair, 2]: (correct, incorrect) token ids."""
        return torch.tensor([[p.correct_id, p.incorrect_id] for p in self.pairs], dtype=torch.long)

    def summary(self) -> str:
        reasons = ", ".join(f"{v} {k}" for k, v in self.dropped.items() if v) or "none dropped"
        repeat = " (clean prompts repeat with other corruptions)" if len(self.pairs) > self.n_kept else ""
        return (f"kept {self.n_kept} of {self.n_candidates} candidate prompts ({reasons}); "
                f"{len(self.pairs)} pairs used{repeat}")

    def frame(self) -> pd.DataFrame:
        """Columns: clean, corrupt, correct, incorrect, logit_diff, p_correct."""
        return pd.DataFrame(
            [(p.clean, p.corrupt, p.correct, p.incorrect, p.logit_diff, p.p_correct) for p in self.pairs],
            columns=["clean", "corrupt", "correct", "incorrect", "logit_diff", "p_correct"],
        )


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


def _answer_split(tokenizer, prompt: str, correct: str, incorrect: str, first_token: bool):
    """How the answers follow ``prompt``: -> (prompt text, correct text, incorrect text, ids) or None.

    Tries the answer with a leading space (`` 5`` is one token in GPT-2) and then the prompt with a
    trailing space (Llama-2 and Gemma write `` 5`` as ``▁``, ``5``: the prompt must end with the space).
    """
    prompt = prompt.rstrip(" ")
    for text, sep in ((prompt, " "), (prompt + " ", "")):
        base = _ids(tokenizer, text)
        ids = []
        for answer in (correct, incorrect):
            full = _ids(tokenizer, text + sep + answer)
            if full[: len(base)] != base or len(full) == len(base):
                break
            if len(full) != len(base) + 1 and not first_token:
                break
            ids.append(full[len(base)])
        if len(ids) == 2 and ids[0] != ids[1]:
            return text, sep + correct, sep + incorrect, ids
    return None


def _render(task: Task, template: str, members: Sequence[str], names: Sequence[str]) -> str:
    if template == "bare":
        return " ".join(members)
    lines = [task.sentence.format(name=name, member=m) for name, m in zip(names, members)]
    return " ".join(lines + [task.query.format(name=names[len(members)])])


def parse_pairs(text: str) -> list[tuple[str, str, str, str]]:
    """User pairs, one per line: ``clean | corrupt | correct | incorrect`` (answers follow after a space)."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 4 or not all(parts):
            raise UserError(
                f"line {number} of the custom prompts needs four parts 'clean | corrupt | correct | incorrect', "
                f"e.g. '1 2 3 4 | 7 2 9 4 | 5 | 4'; got: {line.strip()!r}"
            )
        rows.append(tuple(parts))
    if not rows:
        raise UserError("no custom prompt pairs given: write one per line, 'clean | corrupt | correct | incorrect'")
    return rows


def _clean_check(handle: ModelHandle, prompts: list[str], ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each prompt: top-1 == correct, logit diff, p(correct), p(incorrect) -> (ok, logit_diff, p_correct)."""
    if handle.reductions_only:  # NDIF: the last layer's reductions, logit diff = log p(correct) - log p(incorrect)
        lens = run_lens(handle, prompts, top_k=1, targets=ids.tolist(), batch_size=32)
        pc, pi = lens.target_probs[-1, :, 0, 0], lens.target_probs[-1, :, 0, 1]
        ok = (lens.top_ids[-1, :, 0, 0] == ids[:, 0].numpy()) & (pc > 2 * pi)
        return ok, np.log(np.maximum(pc, 1e-45)) - np.log(np.maximum(pi, 1e-45)), pc
    oks, diffs, probs = [], [], []
    for start in range(0, len(prompts), 32):
        batch = handle.encode(prompts[start : start + 32])
        index = torch.full((len(batch.lengths), 1), batch.input_ids.shape[1] - 1)
        logits = handle.decode(handle.residuals(batch, index)[-1][:, 0])  # [b, vocab]
        chunk = ids[start : start + 32].to(logits.device)
        p = torch.softmax(logits, -1)
        pc, pi = p.gather(1, chunk[:, :1])[:, 0], p.gather(1, chunk[:, 1:])[:, 0]
        lc, li = logits.gather(1, chunk[:, :1])[:, 0], logits.gather(1, chunk[:, 1:])[:, 0]
        oks.append((logits.argmax(-1) == chunk[:, 0]) & (pc > 2 * pi))
        diffs.append(lc - li)
        probs.append(pc)
    return torch.cat(oks).cpu().numpy(), torch.cat(diffs).cpu().numpy(), torch.cat(probs).cpu().numpy()


def _corrupt_for(handle, task: Task, template: str, clean_idx: list[int], names, pool: list[int],
                 length_tokens: int, split: tuple, rng: random.Random) -> str | None:
    """A corrupted prompt: random pool members (pattern broken), same names, same token length."""
    tok = handle.tokenizer
    lens = {i: len(tok(" " + task.members[i], add_special_tokens=False)["input_ids"]) for i in set(pool) | set(clean_idx)}
    shown = clean_idx[:-1]
    for _ in range(200):
        seq = []
        for i in shown:
            same = [j for j in pool if lens[j] == lens[i] and j not in seq] or [j for j in pool if j not in seq] or pool
            seq.append(rng.choice(same))
        if task.follows(seq) or seq == shown:
            continue
        text = _render(task, template, [task.members[j] for j in seq], names)
        text = text + (" " if split[0].endswith(" ") else "")
        if len(_ids(tok, text)) == length_tokens:
            return text
    return None


def build_prompts(handle: ModelHandle, settings: Settings) -> PromptSet:
    """Clean/corrupted pairs of one task (or the user's), filtered as the module docstring says."""
    settings.validate()
    if settings.custom.strip():
        return _custom_prompts(handle, settings)
    task = TASKS[settings.task]
    rng = random.Random(settings.seed)
    tok = handle.tokenizer
    sequences = task.sequences(settings.length)
    if settings.template == "sentence":
        sequences = [s for s in sequences for _ in range(2)]  # two name draws per sequence
    candidates = []  # (indices, names, prompt text, correct text, incorrect text, [ids])
    dropped = Counter()
    seen = set()
    for seq in sequences:
        names = rng.sample(NAMES, settings.length + 1) if settings.template == "sentence" else []
        members = [task.members[i] for i in seq]
        text = _render(task, settings.template, members[:-1], names)
        if text in seen:
            continue
        seen.add(text)
        split = _answer_split(tok, text, members[-1], members[-2], settings.first_token)
        if split is None:
            dropped["answer not one token" if not settings.first_token else "answers share a first token"] += 1
            continue
        candidates.append((seq, names, *split))
    n_candidates = len(seen)
    if not candidates:
        hint = "" if settings.first_token else (
            " (this tokenizer splits numbers into digits: score answers by their first token with "
            "--first-token / the 'first token' option)")
        raise UserError(f"task {task.name}: none of the {n_candidates} candidate prompts has single-token answers{hint}")
    lengths = Counter(len(_ids(tok, c[2])) for c in candidates)
    n_tokens = lengths.most_common(1)[0][0]
    dropped["other token length"] += sum(v for k, v in lengths.items() if k != n_tokens)
    candidates = [c for c in candidates if len(_ids(tok, c[2])) == n_tokens]
    rng.shuffle(candidates)
    if len(candidates) > MAX_CHECKED:
        dropped["not checked (cap)"] += len(candidates) - MAX_CHECKED
        candidates = candidates[:MAX_CHECKED]
    ids = torch.tensor([c[5] for c in candidates], dtype=torch.long)
    ok, diffs, probs = _clean_check(handle, [c[2] for c in candidates], ids)
    dropped["model wrong"] += int((~ok).sum())
    kept = [(c, float(d), float(p)) for c, k, d, p in zip(candidates, ok, diffs, probs) if k]
    pool = sorted({i for c, _, _ in kept for i in c[0]})
    if not task.fibonacci and task.members is NUMBERS:
        pool = sorted(set(pool) | set(range(1, 13)))  # random members 1-12, as in the papers, length permitting
    pairs = []
    for attempt in range(max(settings.n, len(kept)) * 3 if kept else 0):
        if len(pairs) >= settings.n:
            break
        (seq, names, text, correct, incorrect, answer_ids), d, p = kept[attempt % len(kept)]
        corrupt = _corrupt_for(handle, task, settings.template, seq, names, pool, n_tokens, (text,), rng)
        if corrupt is None:
            continue
        pairs.append(PromptPair(text, corrupt, correct, incorrect, answer_ids[0], answer_ids[1], d, p))
    if not pairs:
        more = ("; or score multi-digit answers by their first token (--first-token / the 'first token' option)"
                if task.members is NUMBERS and not settings.first_token else "")
        raise UserError(
            f"task {task.name}: the model got none of the {len(candidates)} checked prompts right "
            f"(top-1 correct and p(correct) > 2·p(incorrect)); try the other template or a larger model{more}"
            if not kept else f"task {task.name}: no corrupted prompt of the same token length could be drawn"
        )
    return PromptSet(settings.task, settings.template, pairs, n_candidates, len(kept), dict(dropped), n_tokens,
                     settings.first_token)


def _custom_prompts(handle: ModelHandle, settings: Settings) -> PromptSet:
    tok = handle.tokenizer
    rows = parse_pairs(settings.custom)
    made = []
    dropped = Counter()
    for number, (clean, corrupt, correct, incorrect) in enumerate(rows, start=1):
        split = _answer_split(tok, clean, correct, incorrect, settings.first_token)
        if split is None:
            dropped["answer not one token"] += 1
            continue
        text, c_text, i_text, ids = split
        corrupt_text = corrupt.rstrip(" ") + (" " if text.endswith(" ") else "")
        if len(_ids(tok, corrupt_text)) != len(_ids(tok, text)):
            raise UserError(
                f"custom pair {number}: the clean prompt is {len(_ids(tok, text))} tokens but the corrupted one is "
                f"{len(_ids(tok, corrupt_text))}: make them the same token length"
            )
        made.append(PromptPair(text, corrupt_text, c_text, i_text, ids[0], ids[1]))
    if not made:
        raise UserError("none of the custom pairs has answers that are single tokens for this model")
    lengths = {len(_ids(tok, p.clean)) for p in made}
    if len(lengths) > 1:
        raise UserError(f"the custom prompts have different token lengths ({sorted(lengths)}): make them all the same length")
    ok, diffs, probs = _clean_check(handle, [p.clean for p in made], torch.tensor([[p.correct_id, p.incorrect_id] for p in made]))
    dropped["model wrong"] += int((~ok).sum())
    pairs = [PromptPair(p.clean, p.corrupt, p.correct, p.incorrect, p.correct_id, p.incorrect_id, float(d), float(q))
             for p, k, d, q in zip(made, ok, diffs, probs) if k]
    if not pairs:
        raise UserError("the model gets none of the custom prompts right (top-1 correct and p(correct) > 2·p(incorrect))")
    pairs = pairs[: settings.n]
    return PromptSet("custom", "custom", pairs, len(rows), len(pairs), dict(dropped), lengths.pop(), settings.first_token)

