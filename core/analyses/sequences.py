"""Sequence continuation (``1 2 3 4 `` → ``5``): which attention heads and MLPs carry it.

Follows Lan & Barez, "Towards Interpretable Sequence Continuation" (arXiv 2311.04131) and Gould et al.,
"Successor Heads" (arXiv 2312.09230):

- ``build_prompts``: built-in tasks (bare or inside a sentence) or the user's own pairs -> clean and
  corrupted prompts of equal token length, kept only when the answers are single tokens and the model
  gets the clean prompt right (top-1 correct and p(correct) > 2·p(incorrect)).
- metric: logit difference logit(correct) − logit(incorrect) at the last position, mean over prompts;
  an intervention is reported as its percentage of the unablated model's.
- ``run_sweep``: exact ablation of every head and MLP (batched, ``core.interventions``), attribution
  patching from one forward/backward pair, or both with their rank correlation.
- ``find_circuit`` / ``compare_circuits``: iterative pruning within a threshold; two tasks' overlap.
- ``successor_scores`` / ``inspect_head``: attention patterns and successor scores of heads.
"""

from __future__ import annotations

import random
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from core import interventions as iv
from core.errors import UserError
from core.interventions import ABLATIONS, Component
from core.models.handle import ModelHandle
from core.tokens import token_str

Progress = Callable[[float, str], None]
TEMPLATES = ("bare", "sentence")
METHODS = ("ablation", "attribution")
# "auto" (the page's default): exact ablation of every component when its estimated cost fits this budget
# (from this model's measured speed on these prompts), else attribution + exact checks.
EXACT_BUDGET_S = 60.0
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


def _quiet(fraction: float, message: str) -> None:
    pass


def _part(progress: Progress | None, lo: float, hi: float) -> Progress:
    """A progress callback mapping [0, 1] onto [lo, hi] of ``progress``."""
    if progress is None:
        return _quiet
    return lambda f, m: progress(lo + (hi - lo) * min(max(f, 0.0), 1.0), m)


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


@dataclass(frozen=True)
class SeqSettings:
    """Which prompts: a built-in task (``template`` bare or sentence, ``length`` shown members) or
    ``custom`` pairs (see ``parse_pairs``); ``n`` pairs; ``ablation`` mean, zero or resample."""

    task: str = "numerals"
    template: str = "bare"
    n: int = 8
    seed: int = 0
    length: int = 4
    first_token: bool = False
    custom: str = ""
    ablation: str = "mean"

    def validate(self) -> None:
        if not self.custom.strip() and self.task not in TASKS:
            raise UserError(f"unknown task '{self.task}': choose one of {', '.join(TASKS)}")
        if self.template not in TEMPLATES:
            raise UserError(f"unknown template '{self.template}': choose bare or sentence")
        if self.ablation not in ABLATIONS:
            raise UserError(f"unknown ablation '{self.ablation}': choose one of {', '.join(ABLATIONS)}")
        if not 1 <= self.n <= 256:
            raise UserError(f"the number of prompts must be between 1 and 256, got {self.n}")
        if not 2 <= self.length <= 10:
            raise UserError(f"the sequence length must be between 2 and 10 shown members, got {self.length}")


def _clean_check(handle: ModelHandle, prompts: list[str], ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each prompt: top-1 == correct, logit diff, p(correct), p(incorrect) -> (ok, logit_diff, p_correct)."""
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


def build_prompts(handle: ModelHandle, settings: SeqSettings) -> PromptSet:
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


def _custom_prompts(handle: ModelHandle, settings: SeqSettings) -> PromptSet:
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


# -- metric ----------------------------------------------------------------------------------------------


def token_logits(handle: ModelHandle, residual: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Logits of chosen tokens from final residuals, differentiably: final norm, unembedding rows, soft cap.

    ``residual`` [n, d_model]; ``ids`` [n, k] (per row) or [k] (shared) -> Float[Tensor, "n k"].
    Only the k rows of the unembedding are used, not the whole vocabulary.
    """
    norm = handle.adapter.final_norm(handle.model)
    unembed = handle.adapter.unembed(handle.model)
    weight = getattr(unembed, "weight", None)
    device = weight.device if weight is not None else residual.device
    x = norm(residual.to(device))
    ids = ids.to(device)
    if weight is not None and weight.is_floating_point():
        rows = weight[ids]
        x = x.to(weight.dtype)
        logits = (x @ rows.T if ids.ndim == 1 else torch.einsum("nd,nkd->nk", x, rows)).float()
        bias = getattr(unembed, "bias", None)
        if bias is not None:
            logits = logits + bias[ids].float()
    else:  # quantized unembedding: the whole row of logits, then pick
        full = unembed(x).float()
        logits = full[:, ids] if ids.ndim == 1 else full.gather(1, ids)
    cap = handle.adapter.softcap(handle.model)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def logit_diff(handle: ModelHandle, residual: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """logit(correct) − logit(incorrect) per row: ``residual`` [n, d_model], ``answers`` [n, 2]."""
    logits = token_logits(handle, residual, answers)
    return logits[:, 0] - logits[:, 1]


# -- ablation sweeps -------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """The metric after removing each component, by exact ablation or its attribution-patching estimate.

    ``heads`` columns: layer, head, component, logit_diff (mean over prompts, after removal), pct_of_full
    (100 · logit_diff / full_logit_diff), change (logit_diff − full_logit_diff), rank (1 = largest drop).
    ``mlps`` columns: layer, component, logit_diff, pct_of_full, change, rank.
    """

    model: str
    task: str
    method: str  # "ablation" | "attribution"
    ablation: str  # "mean" | "zero" | "resample"
    n_prompts: int
    full_logit_diff: float
    heads: pd.DataFrame
    mlps: pd.DataFrame
    seconds: float

    def to_json(self) -> dict:
        """The CLI contract of ``python -m core seq``."""
        return {
            "model": self.model,
            "task": self.task,
            "n_prompts": self.n_prompts,
            "full_logit_diff": round(self.full_logit_diff, 4),
            "heads": [
                {"layer": int(r.layer), "head": int(r.head), "logit_diff": round(float(r.logit_diff), 4),
                 "pct_of_full": round(float(r.pct_of_full), 2)}
                for r in self.heads.sort_values(["layer", "head"]).itertuples()
            ],
            "mlps": [
                {"layer": int(r.layer), "logit_diff": round(float(r.logit_diff), 4), "pct_of_full": round(float(r.pct_of_full), 2)}
                for r in self.mlps.sort_values("layer").itertuples()
            ],
        }

    def ranked(self) -> pd.DataFrame:
        """Heads and MLPs together, largest drop first."""
        both = pd.concat([self.heads.assign(kind="head"), self.mlps.assign(head=-1, kind="mlp")], ignore_index=True)
        return both.sort_values("change").reset_index(drop=True)[
            ["component", "kind", "layer", "head", "logit_diff", "pct_of_full", "change"]]


def _frames(components: list[Component], values: np.ndarray, full: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [(c.layer, c.head, c.label, float(v), 100.0 * float(v) / full, float(v) - full, c.is_mlp)
            for c, v in zip(components, values)]
    frame = pd.DataFrame(rows, columns=["layer", "head", "component", "logit_diff", "pct_of_full", "change", "is_mlp"])
    out = []
    for is_mlp in (False, True):
        part = frame[frame["is_mlp"] == is_mlp].drop(columns="is_mlp").reset_index(drop=True)
        part["rank"] = part["change"].rank(method="first").astype(int)
        out.append(part if not is_mlp else part.drop(columns="head"))
    return out[0], out[1]


@dataclass
class Prepared:
    """A prompt set run once: the recorded clean pass, the replacement values and the answer ids [pair, 2]."""

    prompts: PromptSet
    batch: object
    run: iv.CleanRun
    values: iv.Activations
    answers: torch.Tensor
    clean_seconds: float = 0.0  # one recorded forward pass of the clean prompts: the unit of exact cost

    def exact_cost_s(self, handle: ModelHandle, components: Sequence[Component]) -> float:
        """Estimated seconds to ablate each component exactly: every variant resumes at its layer, so it
        costs the part of a forward pass from there on."""
        return self.clean_seconds * sum((handle.n_layers - c.layer) / handle.n_layers for c in components)


def prepare(handle: ModelHandle, prompts: PromptSet, ablation: str, seed: int = 0) -> Prepared:
    """Run the clean prompts (recorded) and the corrupted ones (their activations give the replacement values)."""
    batch = handle.encode(prompts.clean)
    started = time.perf_counter()
    run = iv.record(handle, batch)
    clean_seconds = time.perf_counter() - started
    corrupt = iv.capture(handle, handle.encode(prompts.corrupt))
    values = iv.replacement(ablation, corrupt, len(prompts.pairs), seed)
    return Prepared(prompts, batch, run, values, prompts.answer_ids(), clean_seconds)


def mean_logit_diffs(handle: ModelHandle, prep: Prepared, finals: torch.Tensor) -> np.ndarray:
    """finals [variant, batch, d_model] -> mean logit difference per variant."""
    v, b, d = finals.shape
    with torch.inference_mode():
        diffs = logit_diff(handle, finals.reshape(v * b, d), prep.answers.repeat(v, 1)).reshape(v, b)
    return diffs.mean(1).cpu().numpy()


def exact_sweep(handle: ModelHandle, prep: Prepared, components: list[Component], ablation: str,
                progress: Progress | None = None, max_tokens: int = 4096) -> SweepResult:
    """Exact ablation of each component, many per batched pass."""
    start = time.perf_counter()
    finals = iv.run_variants(handle, prep.run, prep.values, [[c] for c in components], max_tokens=max_tokens,
                             progress=progress)
    full = float(mean_logit_diffs(handle, prep, prep.run.final.unsqueeze(0))[0])
    values = mean_logit_diffs(handle, prep, finals)
    heads_df, mlps_df = _frames(components, values, full)
    return SweepResult(handle.spec, prep.prompts.task, "ablation", ablation, len(prep.prompts.pairs), full,
                       heads_df, mlps_df, time.perf_counter() - start)


def attribution_sweep(handle: ModelHandle, prep: Prepared, ablation: str) -> SweepResult:
    """Attribution patching: every head and MLP from one forward/backward pair on the clean prompts."""
    start = time.perf_counter()
    answers = prep.answers
    est = iv.attribution(handle, prep.batch, prep.values, lambda final: logit_diff(handle, final, answers))
    full = float(est.metric.mean())
    components = iv.heads(handle) + iv.mlps(handle)
    values = [full + float(est.mlps[c.layer] if c.is_mlp else est.heads[c.layer, c.head]) for c in components]
    heads_df, mlps_df = _frames(components, np.array(values), full)
    return SweepResult(handle.spec, prep.prompts.task, "attribution", ablation, len(prep.prompts.pairs), full,
                       heads_df, mlps_df, time.perf_counter() - start)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Rank correlation (Spearman's ρ); NaN when either side is constant or has fewer than 3 values."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


@dataclass
class SeqResult:
    """What the page's main run returns: the prompts and one or both sweeps.

    ``exact`` covers every head and MLP, or (when exact ablation of all was too slow, or ``top_k`` was
    asked for) the ``top_k`` heads and MLPs attribution ranked highest plus as many others drawn at
    random by the seed; ``spearman_heads`` is the rank correlation of the two methods over every head
    measured exactly, so it is never computed only on heads the estimate picked itself.
    ``exact_estimate_s`` is the estimated cost of exact ablation of every component; ``method`` says
    which method ran ("ablation", "attribution" or "both").
    """

    prompts: PromptSet
    exact: SweepResult | None
    attribution: SweepResult | None
    spearman_heads: float | None = None
    spearman_mlps: float | None = None
    method: str = "ablation"
    exact_estimate_s: float | None = None

    @property
    def exact_is_complete(self) -> bool:
        return self.exact is not None and (self.attribution is None or len(self.exact.heads) == len(self.attribution.heads))

    @property
    def main(self) -> SweepResult:
        return self.exact if self.exact_is_complete else self.attribution

    @property
    def unconfirmed_heads(self) -> list[str]:
        """Heads only attribution estimated (empty when exact ablation covered every head)."""
        if self.attribution is None:
            return []
        exact = set() if self.exact is None else set(self.exact.heads["component"])
        ranked = self.attribution.heads.sort_values("change")["component"]
        return [c for c in ranked if c not in exact]

    def best_head(self) -> pd.Series:
        """The head whose removal lowers the metric most, measured exactly wherever exact ablation ran."""
        return (self.exact or self.attribution).heads.sort_values("change").iloc[0]

    def comparison(self) -> pd.DataFrame:
        """Heads both methods cover. Columns: layer, head, component, exact_change, attribution_change,
        exact_pct, attribution_pct."""
        if self.exact is None or self.attribution is None:
            return pd.DataFrame()
        cols = ["layer", "head", "component", "change", "pct_of_full"]
        merged = self.exact.heads[cols].merge(self.attribution.heads[cols], on=["layer", "head", "component"],
                                              suffixes=("_exact", "_attribution"))
        return merged.rename(columns={"change_exact": "exact_change", "change_attribution": "attribution_change",
                                      "pct_of_full_exact": "exact_pct", "pct_of_full_attribution": "attribution_pct"})


def _checked_by_attribution(attribution: SweepResult, top_k: int, seed: int) -> list[Component]:
    """The ``top_k`` heads and MLPs attribution ranks highest, plus as many others drawn at random (seeded),
    so that the comparison of the two methods also covers heads the estimate did not pick."""
    chosen = []
    for frame, is_mlp in ((attribution.heads, False), (attribution.mlps, True)):
        order = frame.sort_values("change")
        top, rest = order.iloc[:top_k], order.iloc[top_k:]
        sample = rest.sample(n=min(top_k, len(rest)), random_state=seed) if len(rest) else rest
        for r in pd.concat([top, sample]).itertuples():
            chosen.append(Component(int(r.layer)) if is_mlp else Component(int(r.layer), int(r.head)))
    return chosen


def run_sweep(handle: ModelHandle, settings: SeqSettings, method: str = "ablation", top_k: int | None = None,
              progress: Progress | None = None, budget_s: float = EXACT_BUDGET_S) -> SeqResult:
    """Build the prompts and run ``method``:

    - "ablation": exact, every head and MLP; "attribution": the estimate only;
    - "both": attribution for all, and exact ablation of all (``top_k`` None) or of the ``top_k`` heads and
      MLPs attribution ranks highest plus ``top_k`` random others;
    - "auto": attribution, then exact ablation of every component when its estimated cost (from this
      model's measured speed on these prompts) is at most ``budget_s`` seconds, else as "both" with ``top_k``.
    """
    if method not in (*METHODS, "both", "auto"):
        raise UserError(f"unknown method '{method}': choose ablation, attribution, both or auto")
    report = _part(progress, 0, 1)
    report(0.0, "building prompts")
    prompts = build_prompts(handle, settings)
    report(0.1, f"{len(prompts.pairs)} prompt pairs; clean and corrupted runs")
    prep = prepare(handle, prompts, settings.ablation, settings.seed)
    every = iv.heads(handle) + iv.mlps(handle)
    estimate = prep.exact_cost_s(handle, every)
    attribution = exact = None
    if method in ("attribution", "both", "auto"):
        report(0.15, "attribution patching: one forward and one backward pass")
        attribution = attribution_sweep(handle, prep, settings.ablation)
    ran = "both" if method == "auto" else method
    if method in ("ablation", "both", "auto"):
        components = every
        partial = (method == "both" and top_k) or (method == "auto" and estimate > budget_s)
        if partial:
            components = _checked_by_attribution(attribution, int(top_k or 12), settings.seed)
        report(0.2, f"exact ablation of {len(components)} components (estimated {prep.exact_cost_s(handle, components):.0f} s)")
        exact = exact_sweep(handle, prep, components, settings.ablation, progress=_part(progress, 0.2, 1.0))
    result = SeqResult(prompts, exact, attribution, method=ran, exact_estimate_s=estimate)
    if exact is not None and attribution is not None:
        both = result.comparison()
        result.spearman_heads = spearman(both["exact_change"], both["attribution_change"])
        mlps = exact.mlps.merge(attribution.mlps, on="layer", suffixes=("_exact", "_attribution"))
        result.spearman_mlps = spearman(mlps["change_exact"], mlps["change_attribution"])
    report(1.0, "done")
    return result


# -- circuit search ----------------------------------------------------------------------------------------


@dataclass
class Circuit:
    """The components left after iterative pruning, and what they keep of the metric.

    ``steps`` columns: sweep, component, logit_diff (with it removed too), pct_of_full, removed (bool).
    """

    task: str
    threshold: float  # percent of the full metric allowed to be lost
    full_logit_diff: float
    logit_diff: float  # with every non-circuit component ablated
    heads: list[Component]
    mlps: list[Component]
    n_passes: int
    steps: pd.DataFrame
    n_prompts: int = 0
    include_mlps: bool = False  # whether MLPs were candidates for removal (else all kept)

    @property
    def pct_of_full(self) -> float:
        return 100.0 * self.logit_diff / self.full_logit_diff

    def frame(self, n_layers: int, n_heads: int) -> pd.DataFrame:
        """One row per head: layer, head, component, in_circuit."""
        keep = set(self.heads)
        return pd.DataFrame([(l, h, Component(l, h).label, Component(l, h) in keep)
                             for l in range(n_layers) for h in range(n_heads)],
                            columns=["layer", "head", "component", "in_circuit"])

    def labels(self) -> list[str]:
        """The searched components that survived: heads, and MLPs when they were pruned too."""
        return [c.label for c in self.heads + (self.mlps if self.include_mlps else [])]


def prune(handle: ModelHandle, prep: Prepared, threshold: float, include_mlps: bool = False,
          progress: Progress | None = None) -> Circuit:
    """Iterative pruning on prepared prompts (see ``find_circuit``), exactly sequential but batched: one pass
    evaluates removing the first 1, 2, … remaining candidates of a layer; every prefix above the floor is
    removed, the first that falls below is kept, and the pass repeats after it. So a layer costs one pass
    plus one per kept component, not one per candidate."""
    progress = progress or _quiet
    full = float(mean_logit_diffs(handle, prep, prep.run.final.unsqueeze(0))[0])
    floor = (1 - threshold / 100.0) * full
    removed: set[Component] = set()
    steps, passes, sweep = [], 0, 0
    n_layers = handle.n_layers
    while True:
        sweep += 1
        changed = False
        for layer in reversed(range(n_layers)):
            progress(1 - 0.5 ** (sweep - 1) + 0.5 ** sweep * (n_layers - layer) / n_layers,
                     f"sweep {sweep}, layer {layer}: {len(removed)} removed")
            candidates = ([Component(layer)] if include_mlps else []) + [
                Component(layer, h) for h in reversed(range(handle.n_heads))]
            candidates = [c for c in candidates if c not in removed]
            while candidates:
                # Prefix i removes candidates[:i+1] on top of everything removed so far: exactly what the
                # sequential decision on candidates[i] evaluates if all before it were removed.
                prefixes = [removed | set(candidates[: i + 1]) for i in range(len(candidates))]
                diffs = mean_logit_diffs(handle, prep, iv.run_variants(handle, prep.run, prep.values, prefixes))
                passes += 1
                fail = next((i for i, d in enumerate(diffs) if d < floor), len(candidates))
                for i, (c, d) in enumerate(zip(candidates[: fail + 1], diffs)):
                    steps.append((sweep, c.label, float(d), 100 * float(d) / full, i < fail))
                removed |= set(candidates[:fail])
                changed = changed or fail > 0
                candidates = candidates[fail + 1:]  # candidates[fail] stays; later ones need a new pass
        if not changed:
            break
    final = float(mean_logit_diffs(handle, prep, iv.run_variants(handle, prep.run, prep.values, [removed]))[0])
    every = iv.heads(handle) + iv.mlps(handle)
    return Circuit(
        task=prep.prompts.task, threshold=threshold, full_logit_diff=full, logit_diff=final,
        heads=[c for c in every if not c.is_mlp and c not in removed],
        mlps=[c for c in every if c.is_mlp and c not in removed],
        n_passes=passes + 1,
        steps=pd.DataFrame(steps, columns=["sweep", "component", "logit_diff", "pct_of_full", "removed"]),
        n_prompts=len(prep.prompts.pairs),
        include_mlps=include_mlps,
    )


def find_circuit(handle: ModelHandle, settings: SeqSettings, threshold: float = 20.0, include_mlps: bool = False,
                 progress: Progress | None = None) -> Circuit:
    """Iterative pruning (Lan & Barez): sweep layers from last to first, MLP then heads from last to first;
    remove a component for good when the metric (everything removed so far ablated too) stays at or
    above (100 − threshold)% of the full model's; repeat sweeps until nothing changes."""
    if not 0 < threshold < 100:
        raise UserError(f"the threshold is a percentage of the full metric, between 0 and 100 (got {threshold})")
    report = _part(progress, 0, 1)
    report(0.0, "building prompts")
    prep = prepare(handle, build_prompts(handle, settings), settings.ablation, settings.seed)
    return prune(handle, prep, threshold, include_mlps, _part(progress, 0.05, 1.0))


@dataclass
class CircuitComparison:
    """Two tasks' circuits and their overlap (heads; MLPs too when they were pruned)."""

    a: Circuit
    b: Circuit
    shared: list[str]
    only_a: list[str]
    only_b: list[str]

    @property
    def jaccard(self) -> float:
        union = len(self.shared) + len(self.only_a) + len(self.only_b)
        return len(self.shared) / union if union else float("nan")


def overlap(a: Circuit, b: Circuit) -> CircuitComparison:
    la, lb = a.labels(), b.labels()
    return CircuitComparison(a, b, [x for x in la if x in lb], [x for x in la if x not in lb], [x for x in lb if x not in la])


def compare_circuits(handle: ModelHandle, settings: SeqSettings, other_task: str, threshold: float = 20.0,
                     include_mlps: bool = False, progress: Progress | None = None) -> CircuitComparison:
    """The circuits of ``settings.task`` and of ``other_task`` (same template and settings) and their overlap."""
    from dataclasses import replace

    first = find_circuit(handle, settings, threshold, include_mlps, _part(progress, 0, 0.5))
    second = find_circuit(handle, replace(settings, task=other_task, custom=""), threshold, include_mlps,
                          _part(progress, 0.5, 1.0))
    return overlap(first, second)


# -- single heads: successor scores and attention patterns --------------------------------------------------

SUCCESSOR_SETS: dict[str, tuple[str, ...]] = {
    "numbers 1–200": tuple(str(i) for i in range(1, 201)),
    "number words": tuple(NUMBER_WORDS),
    "ordinals": tuple(ORDINALS),
    "weekdays": tuple(WEEKDAYS),
    "months": tuple(MONTHS),
    "letters": tuple(LETTERS),
}


def successor_tokens(tokenizer, members: Sequence[str]) -> list[tuple[int, int]]:
    """(member index, token id) for members that are one token: with a leading space if possible, else bare."""
    out = []
    for i, word in enumerate(members):
        for text in (" " + word, word):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) == 1:
                out.append((i, ids[0]))
                break
    return out


@dataclass
class SuccessorScores:
    """Successor score of every head on every ordered token set.

    ``frame`` columns: layer, head, component, token_set, score (fraction of tokens t whose successor gets
    the highest logit among the set through the head's OV circuit applied to t's embedding after the
    first MLP), n_tokens (tokens t scored). ``tokens`` lists each set's tokens kept (single tokens only).
    """

    frame: pd.DataFrame
    tokens: dict[str, list[str]]

    def overall(self) -> pd.DataFrame:
        """Mean over token sets per head, best first. Columns: layer, head, component, score, best_set."""
        scored = self.frame[self.frame["n_tokens"] > 0]
        mean = scored.groupby(["layer", "head", "component"], as_index=False)["score"].mean()
        best = scored.loc[scored.groupby(["layer", "head"])["score"].idxmax(), ["layer", "head", "token_set"]]
        return mean.merge(best.rename(columns={"token_set": "best_set"}), on=["layer", "head"]).sort_values(
            "score", ascending=False).reset_index(drop=True)


_SUCCESSOR_CACHE: dict[int, tuple[weakref.ref, SuccessorScores]] = {}


def successor_scores(handle: ModelHandle, progress: Progress | None = None, layers_per_pass: int = 8) -> SuccessorScores:
    """Successor scores of every head (Gould et al. 2023): embedding → first MLP → head OV → final norm → unembedding.

    They depend on the weights only, so they are computed once per loaded model.
    """
    cached = _SUCCESSOR_CACHE.get(id(handle.model))
    if cached is not None and cached[0]() is handle.model:
        return cached[1]
    scores = _successor_scores(handle, progress, layers_per_pass)
    _SUCCESSOR_CACHE[id(handle.model)] = (weakref.ref(handle.model), scores)
    return scores


def _successor_scores(handle: ModelHandle, progress: Progress | None, layers_per_pass: int) -> SuccessorScores:
    report = _part(progress, 0, 1)
    sets = {name: successor_tokens(handle.tokenizer, members) for name, members in SUCCESSOR_SETS.items()}
    all_ids = sorted({t for kept in sets.values() for _, t in kept})
    if not all_ids:
        raise UserError("none of the successor token sets has single tokens in this tokenizer")
    position = {t: i for i, t in enumerate(all_ids)}
    report(0.05, f"{len(all_ids)} tokens through the first MLP")
    embedded = iv.after_first_mlp(handle, all_ids)
    rows = []
    for first in range(0, handle.n_layers, layers_per_pass):
        layers = list(range(first, min(handle.n_layers, first + layers_per_pass)))
        report(0.1 + 0.9 * first / handle.n_layers, f"OV circuits of layers {layers[0]}–{layers[-1]}")
        outputs = iv.head_outputs(handle, embedded, layers)  # [layer, head, token, d_model]
        for name, kept in sets.items():
            index = {member: k for k, (member, _) in enumerate(kept)}
            ids = torch.tensor([t for _, t in kept], dtype=torch.long)
            scored = [(k, index[member + 1]) for k, (member, _) in enumerate(kept) if member + 1 in index]
            source = torch.tensor([position[t] for _, t in kept], dtype=torch.long)
            for li, layer in enumerate(layers):
                if not scored:  # fewer than two consecutive members are single tokens in this tokenizer
                    rows += [(layer, head, Component(layer, head).label, name, float("nan"), 0) for head in range(handle.n_heads)]
                    continue
                with torch.inference_mode():
                    x = outputs[li][:, source.to(outputs.device)]  # [head, set token, d_model]
                    logits = token_logits(handle, x.reshape(-1, x.shape[-1]), ids).reshape(handle.n_heads, len(kept), len(kept))
                best = logits.argmax(-1).cpu()
                for head in range(handle.n_heads):
                    hits = sum(int(best[head, k] == succ) for k, succ in scored)
                    rows.append((layer, head, Component(layer, head).label, name, hits / len(scored), len(scored)))
    frame = pd.DataFrame(rows, columns=["layer", "head", "component", "token_set", "score", "n_tokens"])
    tokens = {name: [token_str(handle.tokenizer, t) for _, t in kept] for name, kept in sets.items()}
    report(1.0, "done")
    return SuccessorScores(frame, tokens)


@dataclass
class HeadInspection:
    """One head on one prompt: its attention pattern and successor scores.

    ``pattern`` is Float[ndarray, "query key"] (rows sum to 1); ``successor`` has this head's rows of
    ``SuccessorScores.frame``; ``ranking`` is every head's mean successor score, best first.
    """

    layer: int
    head: int
    prompt: str
    tokens: list[str]
    pattern: np.ndarray
    successor: pd.DataFrame
    ranking: pd.DataFrame
    tokens_per_set: dict[str, list[str]] = field(default_factory=dict)

    def pattern_frame(self) -> pd.DataFrame:
        """Long form: query, key (positions), query_token, key_token, weight."""
        t = len(self.tokens)
        return pd.DataFrame([(q, k, self.tokens[q], self.tokens[k], float(self.pattern[q, k]))
                             for q in range(t) for k in range(t)],
                            columns=["query", "key", "query_token", "key_token", "weight"])


def attention_pattern(handle: ModelHandle, prompt: str, layer: int, head: int) -> tuple[list[str], np.ndarray]:
    """(tokens, [query, key] attention weights) of one head on one prompt."""
    if not 0 <= head < handle.n_heads:
        raise UserError(f"head {head} does not exist: choose 0..{handle.n_heads - 1}")
    batch = handle.encode([prompt])
    weights = iv.attention_pattern(handle, batch, layer)[0, head].numpy()
    tokens = [token_str(handle.tokenizer, t) for t in batch.input_ids[0].tolist()]
    return tokens, weights


def inspect_head(handle: ModelHandle, prompt: str, layer: int, head: int, scores: SuccessorScores | None = None,
                 progress: Progress | None = None) -> HeadInspection:
    """Attention pattern of head (layer, head) on ``prompt`` and its successor scores (all heads ranked)."""
    tokens, pattern = attention_pattern(handle, prompt, layer, head)
    scores = scores or successor_scores(handle, progress)
    frame = scores.frame
    mine = frame[(frame["layer"] == layer) & (frame["head"] == head)].reset_index(drop=True)
    return HeadInspection(layer, head, prompt, tokens, pattern, mine, scores.overall(), scores.tokens)


__all__ = [
    "ABLATIONS", "METHODS", "TASKS", "TEMPLATES", "Circuit", "CircuitComparison", "HeadInspection", "PromptPair",
    "PromptSet", "SeqResult", "SeqSettings", "SuccessorScores", "SweepResult", "attention_pattern", "build_prompts",
    "compare_circuits", "find_circuit", "inspect_head", "logit_diff", "overlap", "parse_pairs", "run_sweep",
    "spearman", "successor_scores", "token_logits",
]
