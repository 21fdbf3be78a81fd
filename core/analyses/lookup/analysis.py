"""Key–value lookup: does the model work like a hash map? In context (K pairs, then a query) and in its
weights (subject → attribute facts): accuracy, the layer where the answer appears, retrieval heads
confirmed by ablation, and for facts causal tracing and MLP neurons as memories."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.analyses.base import Settings as BaseSettings
from core.analyses.lookup import facts as facts_mod
from core.analyses.lookup import incontext
from core.analyses.lookup.answers import Item, Scores, score
from core.analyses.lookup.heads import ABLATIONS, Heads, retrieval_heads
from core.analyses.lookup.neurons import top_neurons
from core.analyses.lookup.subject import SubjectSearch, find_subject, span_of_text, span_of_tokens
from core.analyses.lookup.tracing import KINDS, Trace, trace
from core.errors import UserError
from core.models.handle import ModelHandle
from core.progress import Progress, part, quiet
from core.tokens import token_str

VERSION = "1"  # the store's analysis version: raise it when a change of code changes the numbers

TASKS = ("incontext", "facts")
MAX_PAIRS = 2000
MAX_PROMPTS = 1000


def pair_sweep(k: int) -> tuple[int, ...]:
    """The capacity sweep up to K: 1, 2, 4, … and K itself."""
    sweep, value = [], 1
    while value < k:
        sweep.append(value)
        value *= 2
    return tuple(sweep + [k])


@dataclass(frozen=True)
class Settings(BaseSettings):
    """``task``: ``incontext`` or ``facts``.

    In context: ``pairs`` (the K values; the largest is the main one, where the conditions and the
    inside-the-model analyses run), ``n`` prompts per K and per condition, pairs from ``lists``,
    ``perturb`` adds the collision and typo conditions.
    Facts: ``facts_csv`` (CSV bytes; None = the shipped ``assets/facts.csv``), ``n`` facts (0 = all),
    ``shots``; causal tracing of fact ``trace_fact`` (-1 = the first one the model gets right) with
    ``noise`` × the embeddings' std, restoring ``kinds`` over ``window`` layers; ``neurons`` per layer.
    The traced subject is the CSV's; ``subject`` (its text in the traced prompt) or ``subject_tokens`` (a token
    range [start, end) of the traced prompt) pick another; without any, the span whose noising hides the
    answer is searched for (``subject.py``).
    Both: ``top_heads`` heads confirmed by ``ablation``; ``seed``.
    """

    task: str = "incontext"
    n: int = 10
    seed: int = 0
    pairs: tuple[int, ...] = (1, 2, 4, 8)
    lists: str = "words"
    perturb: bool = True
    facts_csv: bytes | None = None
    shots: int = 0
    top_heads: int = 5
    ablation: str = "mean"
    trace_fact: int = -1
    noise: float = 3.0
    kinds: tuple[str, ...] = KINDS
    window: int = 1
    neurons: int = 5
    subject: str = ""
    subject_tokens: tuple[int, int] | None = None

    def validate(self) -> None:
        if self.task not in TASKS:
            raise UserError(f"unknown task '{self.task}': choose incontext or facts")
        if self.task == "incontext":
            if not 1 <= self.n <= MAX_PROMPTS:
                raise UserError(f"the number of prompts per K must be 1..{MAX_PROMPTS}, got {self.n}")
            if not self.pairs or not all(1 <= k <= MAX_PAIRS for k in self.pairs):
                raise UserError(f"K (pairs per prompt) must be 1..{MAX_PAIRS}, got {', '.join(map(str, self.pairs)) or 'none'}")
            if self.lists not in incontext.LISTS:
                raise UserError(f"unknown list '{self.lists}': choose one of {', '.join(incontext.LISTS)}")
            if self.subject or self.subject_tokens is not None:
                raise UserError("a subject span belongs to causal tracing of facts: use --task facts")
        else:
            if not 0 <= self.n <= facts_mod.MAX_FACTS:
                raise UserError(f"the number of facts must be 0 (all) .. {facts_mod.MAX_FACTS}, got {self.n}")
            if not 0 <= self.shots <= 16:
                raise UserError(f"shots must be 0..16, got {self.shots}")
            if self.facts_csv is not None:
                facts_mod.parse(self.facts_csv, "the uploaded facts file")
            if not 0 <= self.noise <= 100:
                raise UserError(f"the noise must be 0..100 times the embeddings' std, got {self.noise}")
            bad = [k for k in self.kinds if k not in KINDS]
            if bad:
                raise UserError(f"unknown restoration kind '{bad[0]}': choose from {', '.join(KINDS)}")
            if not 0 <= self.neurons <= 50:
                raise UserError(f"neurons per layer must be 0..50, got {self.neurons}")
            if self.subject and self.subject_tokens is not None:
                raise UserError("give the subject as text or as a token range, not both")
        if not 0 <= self.top_heads <= 64:
            raise UserError(f"the number of heads to confirm must be 0..64, got {self.top_heads}")
        if self.ablation not in ABLATIONS:
            raise UserError(f"unknown ablation '{self.ablation}': choose one of {', '.join(ABLATIONS)}")

    @property
    def main_k(self) -> int:
        return max(self.pairs)


@dataclass
class Result:
    """``prompts``: one row per prompt (see ``frames``); ``main``: which rows the headline figures, the
    layer curve and the heads are about (clean prompts at the main K, or every fact)."""

    model: str
    n_layers: int
    n_heads: int
    settings: Settings
    prompts: pd.DataFrame
    main: np.ndarray  # bool per prompt row
    p_layers: np.ndarray  # [main prompt, layer]
    heads: Heads
    notes: list[str] = field(default_factory=list)
    trace: Trace | None = None
    traced: dict = field(default_factory=dict)  # the traced fact: prompt, answer, index
    neurons: pd.DataFrame | None = None
    subject_from: str = "column"  # where the traced subject came from: column, search or setting
    subject_search: SubjectSearch | None = None  # the candidates, when the subject was searched for

    # -- figures --------------------------------------------------------------------------------------
    @property
    def accuracy(self) -> float:
        return float(self.prompts.loc[self.main, "correct"].mean())

    @property
    def first_correct_layer(self) -> int | None:
        """Median over the correctly answered main prompts of the layer from which the answer stays top-1."""
        settled = self.prompts.loc[self.main & self.prompts["correct"], "settled_layer"].dropna()
        return int(np.median(settled)) if len(settled) else None

    def layers(self) -> pd.DataFrame:
        """layer, p_answer: the answer's probability through the logit lens, mean over the main prompts."""
        p = np.nanmean(self.p_layers, axis=0) if len(self.p_layers) else np.zeros(self.n_layers + 1)
        return pd.DataFrame({"layer": range(self.n_layers + 1), "p_answer": p})

    def _grouped(self, rows: pd.Series, by: str) -> pd.DataFrame:
        frame = self.prompts[rows]
        out = frame.groupby(by, sort=True).agg(n=("correct", "size"), accuracy=("correct", "mean"),
                                               p_answer=("p_answer", "mean")).reset_index()
        return out.astype({"n": int})

    def by_pairs(self) -> pd.DataFrame:
        """pairs (K), n, accuracy, p_answer: clean prompts of each K."""
        return self._grouped(self.prompts["condition"] == "clean", "pairs")

    def by_position(self) -> pd.DataFrame:
        """position (1 = the first pair), n, accuracy, p_answer: clean prompts at the main K."""
        return self._grouped(self.main, "position")

    def by_condition(self) -> pd.DataFrame:
        """condition (clean, collision, typo), n, accuracy, p_answer at the main K."""
        at_main = self.prompts["pairs"] == self.settings.main_k
        frame = self._grouped(at_main, "condition")
        order = {c: i for i, c in enumerate(incontext.CONDITIONS)}
        return frame.sort_values("condition", key=lambda s: s.map(order)).reset_index(drop=True)

    # -- the protocol -----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        """The ``python -m core lookup`` contract."""
        heads = [{"layer": int(r.layer), "head": int(r.head), "attention": _r(r.attention),
                  "pct_of_full": _r(r.pct_of_full), "p_answer": _r(r.p_answer), "accuracy": _r(r.accuracy)}
                 for r in self.heads.table.itertuples()]
        out = {
            "model": self.model,
            "task": self.settings.task,
            "n": int(self.main.sum()),
            "accuracy": _r(self.accuracy),
            "layers": [{"layer": int(r.layer), "p_answer": _r(r.p_answer)} for r in self.layers().itertuples()],
            "first_correct_layer": self.first_correct_layer,
            "heads": heads,
            "heads_together": {k: (_r(v) if isinstance(v, float) else v) for k, v in self.heads.together.items()},
            "p_answer": _r(self.prompts.loc[self.main, "p_answer"].mean()),
            "ablation": self.heads.ablation,
            "notes": self.notes,
        }
        if self.settings.task == "incontext":
            out["pairs"] = self.settings.main_k
            out["list"] = self.settings.lists
            for key, frame in (("by_pairs", self.by_pairs()), ("by_position", self.by_position()),
                               ("by_condition", self.by_condition())):
                out[key] = _records(frame)
        else:
            out["by_relation"] = _records(self._grouped(self.main, "relation"))
            out["trace"] = self._trace_json()
            if self.neurons is not None:
                out["neurons"] = _records(self.neurons)
        return out

    def _trace_json(self) -> dict | None:
        if self.trace is None:
            return None
        t = self.trace
        trace = {"fact": self.traced, "positions": list(range(len(t.tokens))), "tokens": t.tokens,
                 "subject": list(t.subject), "answer": t.answer, "p_clean": _r(t.p_clean),
                 "p_corrupt": _r(t.p_corrupt), "noise_std": _r(t.noise_std), "window": t.window}
        for kind in t.effects:
            key = "indirect_effect" if kind == "residual" else kind
            trace[key] = [[_r(v) for v in row] for row in t.effects[kind]]
        trace["peak"] = {kind: {k: (_r(v) if isinstance(v, float) else v) for k, v in t.peak(kind).items()}
                         for kind in t.effects}
        if self.subject_from != "column":
            trace["subject_from"] = self.subject_from
            trace["subject_text"] = "".join(t.tokens[t.subject[0]:t.subject[1]]).strip()
        if self.subject_search is not None:
            trace["subject_candidates"] = _records(self.subject_search.frame())
        return trace

    def frames(self) -> dict[str, pd.DataFrame]:
        """``prompts``: task-specific columns (in context: pairs, condition, position, query, prompt, expected;
        facts: relation, language, subject, prompt, expected), then answer (the scored token), top_token (the
        model's), correct, p_answer, settled_layer (from which layer the answer stays top-1; main prompts only);
        ``layers``: layer, p_answer; ``heads``: the confirmed heads; ``head_attention``: layer, head,
        attention (every head); for in context ``by_pairs``, ``by_position``, ``by_condition``; for facts
        ``trace`` (kind, layer, position, token, subject, indirect_effect) and ``neurons``, and when the subject was
        searched for ``subject_candidates`` (``SubjectSearch.frame``: start, end, text, p_noised, drop, chosen)."""
        attention = pd.DataFrame([{"layer": l, "head": h, "attention": float(self.heads.attention[l, h])}
                                  for l in range(self.n_layers) for h in range(self.n_heads)])
        out = {"prompts": self.prompts, "layers": self.layers(), "heads": self.heads.table, "head_attention": attention}
        if self.settings.task == "incontext":
            out.update(by_pairs=self.by_pairs(), by_position=self.by_position(), by_condition=self.by_condition())
        else:
            out["by_relation"] = self._grouped(self.main, "relation")
            if self.trace is not None:
                out["trace"] = self.trace.frame()
            if self.subject_search is not None:
                out["subject_candidates"] = self.subject_search.frame()
            if self.neurons is not None:
                out["neurons"] = self.neurons
        return out


def _r(value):
    """Floats rounded for the JSON (NaN as null)."""
    if value is None:
        return None
    value = float(value)
    return None if np.isnan(value) else round(value, 6)


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: (_r(v) if isinstance(v, (float, np.floating)) else (int(v) if isinstance(v, (np.integer,)) else v))
             for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _scored_frame(handle: ModelHandle, items: list[Item], scores: Scores, columns: dict) -> pd.DataFrame:
    tok = handle.tokenizer
    frame = pd.DataFrame(columns)
    frame["answer"] = [token_str(tok, it.answer[0]) for it in items]
    frame["top_token"] = [token_str(tok, int(t)) for t in scores.top_ids]
    frame["correct"] = scores.correct
    frame["p_answer"] = scores.p_answer
    frame["settled_layer"] = pd.array([scores.settled_layer(i) if not np.isnan(scores.p_layers[i, 0]) else None
                                       for i in range(len(items))], dtype="Int64")
    return frame


def _run_incontext(handle: ModelHandle, s: Settings, progress: Progress) -> Result:
    prompts = incontext.build(handle, s.lists, tuple(sorted(set(s.pairs))), s.n, s.seed, s.perturb)
    items = incontext.items(handle, prompts)
    main = np.array([p.condition == "clean" and p.k == s.main_k for p in prompts])
    scores = score(handle, items, lens=main, progress=part(progress, 0.0, 0.3))
    frame = _scored_frame(handle, items, scores, {
        "pairs": [p.k for p in prompts], "condition": [p.condition for p in prompts],
        "position": [p.query + 1 for p in prompts], "query": [p.query_key for p in prompts],
        "prompt": [p.text for p in prompts], "expected": [p.answer for p in prompts]})
    main_items = [it for it, m in zip(items, main) if m]
    heads = retrieval_heads(handle, main_items, s.top_heads, s.ablation, part(progress, 0.3, 1.0))
    return Result(handle.spec, handle.n_layers, handle.n_heads, s, frame, main, scores.p_layers[main], heads,
                  _ablation_notes(heads))


def _run_facts(handle: ModelHandle, s: Settings, progress: Progress) -> Result:
    facts = facts_mod.shipped() if s.facts_csv is None else facts_mod.parse(s.facts_csv, "the uploaded facts file")
    facts = facts[: s.n] if s.n else facts
    items, notes = facts_mod.items(handle, facts, s.shots, s.seed)
    scores = score(handle, items, progress=part(progress, 0.0, 0.2))
    frame = _scored_frame(handle, items, scores, {
        "relation": [f.relation or "unlabelled" for f in facts], "language": [f.language for f in facts],
        "subject": [f.subject for f in facts], "prompt": [f.prompt for f in facts],
        "expected": [f.answer for f in facts]})
    main = np.ones(len(items), dtype=bool)
    heads = retrieval_heads(handle, items, s.top_heads, s.ablation, part(progress, 0.2, 0.5))
    notes += _ablation_notes(heads)
    result = Result(handle.spec, handle.n_layers, handle.n_heads, s, frame, main, scores.p_layers, heads, notes)
    index = _fact_to_trace(s, facts, items, scores, notes)
    if index is not None:
        it = items[index]
        result.traced = {"index": index, "prompt": facts[index].prompt, "answer": facts[index].answer,
                         "subject": facts[index].subject, "correct": bool(scores.correct[index])}
        text = facts_mod.with_shots(facts, s.shots, s.seed)[index]  # the prompt as scored (items made the same)
        span = _subject_span(handle, s, facts[index], text, it, result)
        if span is None:
            notes.append(f"fact {index} has no subject column and no word before its last one to noise: nothing "
                         "was traced (give its subject)")
            progress(1.0, "done")
            return result
        result.trace = trace(handle, it.ids, span, it.answer[0], noise=s.noise, seed=s.seed, kinds=s.kinds,
                             window=s.window, progress=part(progress, 0.5, 0.95))
        if s.neurons:
            result.neurons = top_neurons(handle, it.ids, span[1] - 1, per_layer=s.neurons)
    progress(1.0, "done")
    return result


def _subject_span(handle: ModelHandle, s: Settings, fact, text: str, item: Item,
                  result: Result) -> tuple[int, int] | None:
    """The traced tokens of ``text`` (the fact's prompt after its demonstrations): the settings' span, else the
    CSV's subject, else the searched one (``result.subject_from`` says which; None: nothing to search)."""
    start = len(text) - len(fact.prompt)
    if s.subject_tokens is not None:
        result.subject_from = "setting"
        return span_of_tokens(tuple(s.subject_tokens), len(item.ids))
    if s.subject:
        result.subject_from = "setting"
        return span_of_text(handle.tokenizer, text, start, s.subject)
    if item.span[1] > item.span[0]:
        return item.span
    search = find_subject(handle, item.ids, text, start, item.answer[0], noise=s.noise, seed=s.seed)
    if search is None:
        return None
    result.subject_from, result.subject_search = "search", search
    return search.span


def _fact_to_trace(s: Settings, facts, items: list[Item], scores: Scores, notes: list[str]) -> int | None:
    """The fact to trace: ``trace_fact``, or the first one the model gets right that has a subject (without any
    subject column, or with a subject setting: the first one it gets right)."""
    if s.trace_fact >= 0:
        if s.trace_fact >= len(facts):
            raise UserError(f"fact {s.trace_fact} does not exist: there are {len(facts)} (0..{len(facts) - 1})")
        return s.trace_fact
    with_subject = [i for i, it in enumerate(items) if it.span[1] > it.span[0]]
    if not with_subject or s.subject or s.subject_tokens is not None:
        with_subject = list(range(len(items)))
    correct = [i for i in with_subject if scores.correct[i]]
    if not correct:
        notes.append("the model gets none of these facts right: the first fact is traced anyway")
    return (correct or with_subject)[0]


def _ablation_notes(heads: Heads) -> list[str]:
    if heads.zero_ablated:
        return [f"{heads.zero_ablated} prompts have no other prompt of the same token length, so their heads were "
                "zero-ablated instead of mean-ablated"]
    return []


def run(handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> Result:
    settings.validate()
    progress = progress or quiet
    if settings.task == "incontext":
        return _run_incontext(handle, settings, progress)
    return _run_facts(handle, settings, progress)
