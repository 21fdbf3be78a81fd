"""The layerwise view: the logit lens at the answer position, the answer's first character in every numeral system."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from core.analyses.arithmetic.numerals import SYSTEM_KEYS, SYSTEMS, format_number
from core.analyses.arithmetic.problems import Problem, check_systems, generate_problems, render_prompt
from core.lens import LensResult, run_lens
from core.lenses import lens_for
from core.models.handle import ModelHandle
from core.progress import Progress, part
from core.tokens import first_char_tokens, word_token_set

if TYPE_CHECKING:
    from core.analyses.arithmetic.analysis import Settings

Z95 = 1.96


@dataclass
class LayerProfile:
    """The lens at the answer position of every problem, written in ``numerals``.

    ``p_answer[layer, problem, s]`` is the probability the lens gives to text that begins the
    answer written in ``systems[s]``: the mass of the answer's token set
    (``core.tokens.word_token_set``), or, when the first character takes several tokens (byte
    fallback), the teacher-forced product of those tokens' probabilities at that layer
    (``chained[problem, s]``). ``top1_correct[layer, problem]``: the lens's top-1 token begins the
    answer in the prompts' own system.
    """

    model: str
    numerals: str
    settings: Settings
    systems: list[str]
    problems: list[Problem]
    prompts: list[str]
    p_answer: np.ndarray  # [layer, problem, system]
    chained: np.ndarray  # [problem, system] bool
    top1_correct: np.ndarray  # [layer, problem] bool
    lens: LensResult  # top-k at the answer position (slot 0) of every problem

    @property
    def n_layers(self) -> int:
        return self.p_answer.shape[0] - 1

    @property
    def first_top1_layers(self) -> list[int | None]:
        """Per problem, the first layer at which the correct answer is the lens's top-1 (None: never)."""
        out = []
        for column in self.top1_correct.T:
            hits = np.flatnonzero(column)
            out.append(int(hits[0]) if len(hits) else None)
        return out

    @property
    def first_correct_layer(self) -> int | None:
        """Median over problems (that ever reach it) of the first layer where the answer is top-1."""
        layers = [x for x in self.first_top1_layers if x is not None]
        return int(math.floor(float(np.median(layers)))) if layers else None

    def frame(self) -> pd.DataFrame:
        """Long table: layer, system, label, mean, ci_low, ci_high (mean ± 1.96·σ/√n), n."""
        n = self.p_answer.shape[1]
        mean = self.p_answer.mean(axis=1)
        sem = self.p_answer.std(axis=1, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(mean)
        rows = []
        for layer in range(self.p_answer.shape[0]):
            for s, key in enumerate(self.systems):
                m, half = float(mean[layer, s]), float(Z95 * sem[layer, s])
                rows.append({"layer": layer, "system": key, "label": SYSTEMS[key].label, "mean": m,
                             "ci_low": max(0.0, m - half), "ci_high": min(1.0, m + half), "n": n})
        return pd.DataFrame(rows)

    def top1_rate(self) -> pd.DataFrame:
        """Per layer, the fraction of problems whose lens top-1 begins the correct answer: layer, top1_rate."""
        return pd.DataFrame({"layer": np.arange(self.top1_correct.shape[0]), "top1_rate": self.top1_correct.mean(axis=1)})

    def layers_json(self) -> list[dict]:
        """The CLI contract's "layers" list: mean probability of the answer in every system, per layer."""
        mean = self.p_answer.mean(axis=1)
        return [
            {"layer": layer, "p_answer": {key: float(mean[layer, s]) for s, key in enumerate(self.systems)}}
            for layer in range(mean.shape[0])
        ]

    def problems_frame(self) -> pd.DataFrame:
        """One row per problem: problem, prompt_query (last line), answer, expected, first_top1_layer,
        final_top1 (the output's top token), then p_final_<system> at the last layer."""
        rows = []
        for i, (problem, prompt) in enumerate(zip(self.problems, self.prompts)):
            row = {
                "problem": i,
                "query": prompt.rsplit("\n", 1)[-1],
                "answer": problem.answer,
                "expected": format_number(problem.answer, self.numerals),
                "first_top1_layer": self.first_top1_layers[i],
                "final_top1": self.lens.top_tokens[-1][i][0][0],
            }
            for s, key in enumerate(self.systems):
                row[f"p_final_{key}"] = float(self.p_answer[-1, i, s])
            rows.append(row)
        return pd.DataFrame(rows)


def _first_char_probs(
    handle: ModelHandle, prompts: list[str], chars: list[str], batch_size: int, lens=None
) -> tuple[np.ndarray, list[list[int]]]:
    """Lens probability, at every layer, that prompt i continues with character ``chars[i]`` when the
    tokenizer spells it in several tokens: [layer, item], and each item's token chain.

    ``run_lens`` reads ``prompt + char``: the position before each piece predicts that piece, and
    the pieces' probabilities are multiplied layer by layer (teacher forcing). A character whose
    spelling changes the prompt's own tokens gets its first token's probability alone.
    """
    tokenizer = handle.tokenizer
    out = np.zeros((handle.n_layers + 1, len(prompts)))
    chains: list[list[int]] = []
    for prompt, char in zip(prompts, chars):
        base = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        full = tokenizer(prompt + char, add_special_tokens=True)["input_ids"]
        stable = full[: len(base)] == base and len(full) > len(base)
        chains.append(full[len(base) :] if stable else first_char_tokens(tokenizer, char)[:1])
    by_length: dict[int, list[int]] = {}
    for i, chain in enumerate(chains):
        by_length.setdefault(len(chain), []).append(i)
    for k, items in by_length.items():
        texts = [prompts[i] + chars[i] if k > 1 else prompts[i] for i in items]
        positions = list(range(-(k + 1), -1)) if k > 1 else [-1]
        result = run_lens(handle, texts, positions=positions, top_k=1, targets=[chains[i] for i in items],
                          batch_size=batch_size, lens=lens)
        # target_probs: [layer, item, slot, target]; piece j is read at slot j
        probs = np.stack([result.target_probs[:, :, j, j] for j in range(k)], axis=-1).prod(-1)
        out[:, items] = probs
    return out, chains


def layer_profile(
    handle: ModelHandle,
    settings: Settings,
    *,
    tracked: Sequence[str] = SYSTEM_KEYS,
    problems: list[Problem] | None = None,
    progress: Progress | None = None,
) -> LayerProfile:
    """The lens at the answer position of the problems written in ``settings.lens_numerals``, tracking
    the answer written in every system of ``tracked`` (see ``LayerProfile``)."""
    systems = check_systems(tracked)
    numerals = check_systems([settings.lens_numerals])[0]
    problems = problems if problems is not None else generate_problems(settings)
    tokenizer = handle.tokenizer
    prompts = [render_prompt(p, numerals, settings.surround) for p in problems]
    unknown = {tokenizer.unk_token_id} if tokenizer.unk_token_id is not None else set()  # a script the vocabulary lacks
    token_sets, own_sets, chained_items = [], [], []
    chained = np.zeros((len(problems), len(systems)), dtype=bool)
    for i, problem in enumerate(problems):
        row = []
        for s, key in enumerate(systems):
            text = format_number(problem.answer, key)
            if len(first_char_tokens(tokenizer, text)) > 1:
                chained[i, s] = True
                chained_items.append((i, s, text[0]))
                row.append(frozenset())
            else:
                row.append(word_token_set(tokenizer, text).ids - unknown)
        token_sets.append(row)
        own_text = format_number(problem.answer, numerals)
        pieces = first_char_tokens(tokenizer, own_text)
        own_sets.append({pieces[0]} if len(pieces) > 1 else set(word_token_set(tokenizer, own_text).ids))

    share = 1.0 if not chained_items else 0.7
    stage = part(progress, 0.0, share)
    reader = lens_for(handle, settings.lens)
    lens = run_lens(handle, prompts, positions=(-1,), top_k=settings.top_k, token_sets=token_sets,
                    batch_size=settings.batch_size, progress=lambda f, m: stage(f, f"lens: {m}"), lens=reader)
    p_answer = lens.set_probs[:, :, 0, :].astype(np.float64).copy()  # [layer, problem, system]
    if chained_items:
        probs, _ = _first_char_probs(handle, [prompts[i] for i, _, _ in chained_items],
                                     [c for _, _, c in chained_items], settings.batch_size, reader)
        for column, (i, s, _) in enumerate(chained_items):
            p_answer[:, i, s] = probs[:, column]
        if progress:
            progress(1.0, "lens: multi-token first characters teacher-forced")
    top1 = lens.top_ids[:, :, 0, 0]  # [layer, problem]
    top1_correct = np.array([[int(top1[layer, i]) in own_sets[i] for i in range(len(problems))]
                             for layer in range(top1.shape[0])], dtype=bool)
    return LayerProfile(handle.spec, numerals, settings, systems, problems, prompts, p_answer, chained, top1_correct, lens)

