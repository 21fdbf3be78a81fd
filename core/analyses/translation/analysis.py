"""Latent language of translation (Wendler et al. 2024): which language do the middle layers decode to?

A few-shot prompt asks the model to translate a word (``Français: "fleur" - 中文: "``); the
logit lens reads, at the last position and every layer, how much probability goes to tokens
that begin the answer in the target language, in a latent language (English by default) and
in the source language (``prompts`` says which tokens count, and which words are dropped).
Averaged over many words with a 95% band, this gives the paper's curves: high entropy early,
English in the middle, the target only in the last layers.

- ``run``: the batched lens over every kept word -> ``Result``.
- ``drill_down``: one word's prompt under the lens at every position, and its top tokens per
  layer labelled by language.
- With ``causal`` / ``steer``: concept patching (``causal.py``) and language steering (``steering.py``) beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from core.analyses.base import Settings as BaseSettings
from core.analyses.translation.causal import CausalResult, run_causal
from core.analyses.translation.steering import SteeringResult, run_steering
from core.analyses.translation.prompts import MAX_SHOTS, SLOTS, TASKS, plan_words
from core.analyses.translation.wordlist import WordList, language, load_words
from core.errors import UserError
from core.lens import LensResult, run_lens
from core.lenses import LENS_NAMES, lens_for

# Why the page defaults to the logit lens: tuned-lens's maintainers advise against tuned lenses for latent-language
# questions (tuned-lens #136): translators trained on mostly English text can pull middle layers toward English.
LENS_ADVICE = ("The logit lens is the default here: the tuned lens's maintainers advise against it for latent-language "
               "questions, since translators trained on mostly English text can pull middle layers toward English "
               "(tuned-lens #136).")
from core.models.handle import ModelHandle
from core.progress import Progress, part

VERSION = "1"  # the store's analysis version: raise it when a change of code changes the numbers

Z95 = 1.96
MAX_TOP_K = 50


@dataclass(frozen=True)
class Settings(BaseSettings):
    """What to run. ``task``: "translation" (source -> target), "repetition" (target -> target,
    the source is ignored) or "cloze" (the translation written as a blank to fill). ``words``: the
    word list (None: the shipped ``assets/words.csv``)."""

    source: str = "fr"
    target: str = "zh"
    latent: str = "en"
    task: str = "translation"
    shots: int = 4
    seed: int = 0
    limit: int | None = None  # the first N words of the list
    energy: bool = False
    top_k: int = 5
    batch_size: int = 16
    words: WordList | None = None
    lens: str = "logit"  # "logit" | "tuned"; the logit lens by default (see LENS_ADVICE)
    causal: bool = False  # concept patching: source → target prompts patched into ``into`` = (R_in, R_out) prompts
    into: tuple[str, str] | None = None
    onward: bool = False  # concept patching at every row from ℓ on, not at row ℓ alone
    steer: tuple[str, str] | None = None  # language steering: the X − Y direction, added with strength ``alpha``
    alpha: float = 1.0

    @property
    def word_list(self) -> WordList:
        return self.words if self.words is not None else load_words()

    def resolved(self) -> "Settings":
        """The settings as run: in the repetition task the source is the target."""
        return replace(self, source=self.target) if self.task == "repetition" else self

    def validate(self) -> None:
        if self.lens not in LENS_NAMES:
            raise UserError(f"unknown lens '{self.lens}': choose one of {', '.join(LENS_NAMES)}")
        if self.task not in TASKS:
            raise UserError(f"unknown task '{self.task}': use one of {', '.join(TASKS)}")
        s = self.resolved()
        for code in (s.source, s.target, s.latent):
            language(code)
        words = self.word_list
        words.require(s.source, s.target, s.latent)
        if not 0 <= s.shots <= MAX_SHOTS:
            raise UserError(f"shots must be between 0 and {MAX_SHOTS}, got {s.shots}")
        if s.shots > len(words) - 1:
            raise UserError(f"{s.shots} demonstrations need at least {s.shots + 1} words; the list has {len(words)}")
        if s.limit is not None and s.limit < 1:
            raise UserError(f"the word limit must be at least 1, got {s.limit}")
        if not 1 <= s.top_k <= MAX_TOP_K:
            raise UserError(f"top-k must be between 1 and {MAX_TOP_K}, got {s.top_k}")
        if s.batch_size < 1:
            raise UserError("batch size must be at least 1")
        self._validate_causal(s, words)

    def _validate_causal(self, s: "Settings", words: WordList) -> None:
        if (s.into is not None or s.onward) and not s.causal:
            raise UserError("--into and --onward set up concept patching: add --causal")
        if (s.causal or s.steer) and s.task != "translation":
            raise UserError("concept patching and steering patch translation prompts: use the translation task")
        if s.causal:
            if s.into is None or len(s.into) != 2:
                raise UserError("concept patching needs the receiving pair: --into R_IN,R_OUT (e.g. de,es)")
            for code in s.into:
                language(code)
            if s.into[0] == s.into[1]:
                raise UserError(f"--into names the same language twice ({s.into[0]}): the receiving prompt must translate")
            if s.into[1] == s.target:
                raise UserError(f"the receiving prompt answers in {s.target} like the source prompt: choose another "
                                "--into output language, or the concept could not be told from its language")
            words.require(*s.into)
        if s.steer is not None:
            if len(s.steer) != 2:
                raise UserError("--steer takes two language codes, X,Y (e.g. de,zh)")
            for code in s.steer:
                language(code)
            if s.steer[0] == s.steer[1]:
                raise UserError(f"--steer names the same language twice ({s.steer[0]}): give two languages X,Y")
            words.require(*s.steer, "en")
            if not isinstance(s.alpha, (int, float)) or not math.isfinite(s.alpha):
                raise UserError(f"the steering strength alpha must be a finite number, got {s.alpha!r}")


@dataclass
class Result:
    """Per layer x kept word: probability of each language's set at the answer position.

    Arrays are indexed [layer, word]; ``lang_probs[..., i]`` follows ``SLOTS`` (target, latent, source).
    """

    model: str
    n_layers: int
    settings: Settings
    words: pd.DataFrame  # one row per kept word: row, source_word, target_word, latent_word, prompt
    dropped: pd.DataFrame  # row, source_word, target_word, latent_word, reason, detail
    lang_probs: np.ndarray  # [layer, word, slot]
    entropy_bits: np.ndarray  # [layer, word]
    energy: np.ndarray | None  # [layer, word], when asked for
    top_ids: np.ndarray  # [layer, word, k]
    top_tokens: list  # [layer][word][k] token text
    top_probs: np.ndarray  # [layer, word, k]
    token_sets: list[dict]  # per word: slot -> ids the lens may show for that word (for labels)
    n_two_piece: int  # kept words where a lead (two pieces) stood in for a split first character
    causal: CausalResult | None = None  # concept patching, when asked for
    steering: SteeringResult | None = None  # language steering, when asked for

    @property
    def n_words(self) -> int:
        return len(self.words)

    @property
    def n_dropped(self) -> int:
        return len(self.dropped)

    @property
    def layers(self) -> range:
        return range(self.n_layers + 1)

    def drop_reasons(self) -> dict[str, int]:
        return self.dropped["reason"].value_counts().to_dict() if self.n_dropped else {}

    def curves(self) -> pd.DataFrame:
        """One row per layer: mean probability of each language with its 95% band, mean entropy (and energy).

        Columns: layer, p_target, p_target_lo, p_target_hi, p_latent, ..._lo/_hi, p_source, ..._lo/_hi,
        entropy_bits, energy (NaN unless computed). Band: mean ± 1.96·σ/√n over the words.
        """
        n = self.n_words
        frame = pd.DataFrame({"layer": list(self.layers)})
        for i, slot in enumerate(SLOTS):
            values = self.lang_probs[:, :, i]
            mean = values.mean(axis=1)
            half = Z95 * values.std(axis=1, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(mean)
            frame[f"p_{slot}"] = mean
            frame[f"p_{slot}_lo"] = np.clip(mean - half, 0, 1)
            frame[f"p_{slot}_hi"] = np.clip(mean + half, 0, 1)
        frame["entropy_bits"] = self.entropy_bits.mean(axis=1)
        frame["energy"] = self.energy.mean(axis=1) if self.energy is not None else np.nan
        return frame

    def summary(self) -> "CurveSummary":
        return summarize(self.curves())

    def word_frame(self) -> pd.DataFrame:
        """One row per (word, layer), for CSV export.

        Columns: row, source_word, target_word, latent_word, prompt, layer, p_target, p_latent,
        p_source, entropy_bits, energy, top1, top1_prob.
        """
        n_layers, n_words = self.entropy_bits.shape
        layer = np.repeat(np.arange(n_layers)[None, :], n_words, axis=0).ravel()
        word = np.repeat(np.arange(n_words), n_layers)
        frame = self.words.iloc[word].reset_index(drop=True)
        frame["layer"] = layer
        for i, slot in enumerate(SLOTS):
            frame[f"p_{slot}"] = self.lang_probs[layer, word, i]
        frame["entropy_bits"] = self.entropy_bits[layer, word]
        frame["energy"] = self.energy[layer, word] if self.energy is not None else np.nan
        frame["top1"] = [self.top_tokens[l][w][0] for l, w in zip(layer, word)]
        frame["top1_prob"] = self.top_probs[layer, word, 0]
        return frame

    def final_table(self) -> pd.DataFrame:
        """One row per word: the words, the prompt, the final layer's masses, the latent peak and the top-1 output.

        Columns: row, source_word, target_word, latent_word, p_target_final, p_latent_peak,
        latent_peak_layer, output_top1, prompt.
        """
        frame = self.words[["row", "source_word", "target_word", "latent_word"]].copy()
        frame["p_target_final"] = self.lang_probs[-1, :, 0]
        frame["p_latent_peak"] = self.lang_probs[:, :, 1].max(axis=0)
        frame["latent_peak_layer"] = self.lang_probs[:, :, 1].argmax(axis=0)
        frame["output_top1"] = [self.top_tokens[-1][w][0] for w in range(self.n_words)]
        frame["prompt"] = self.words["prompt"]
        return frame

    def to_json(self) -> dict:
        """The ``python -m core translation`` contract: per layer the three mean masses, the target's and
        latent's 95% bands and the mean entropy (plus ``causal`` and ``steering`` when they ran)."""
        out = {
            "model": self.model,
            "n_words": self.n_words,
            "n_dropped": self.n_dropped,
            "layers": [
                {
                    "layer": int(row.layer),
                    "p_target": float(row.p_target),
                    "p_latent": float(row.p_latent),
                    "p_source": float(row.p_source),
                    "p_target_ci": [float(row.p_target_lo), float(row.p_target_hi)],
                    "p_latent_ci": [float(row.p_latent_lo), float(row.p_latent_hi)],
                    "entropy_bits": float(row.entropy_bits),
                }
                for row in self.curves().itertuples()
            ],
        }
        if self.causal is not None:
            out["causal"] = self.causal.to_json()
        if self.steering is not None:
            out["steering"] = self.steering.to_json()
        return out

    def frames(self) -> dict[str, pd.DataFrame]:
        """``curves`` (``curves``), ``words`` (``final_table``), ``word_layers`` (``word_frame``: per word x
        layer, with prompts), ``dropped`` (row, source_word, target_word, latent_word, reason, detail); with
        concept patching ``causal`` (``CausalResult.curves``), ``causal_pairs`` (``pair_frame``) and
        ``causal_prompts`` (``CausalResult.pairs``), ``causal_dropped`` (a, b, reason, detail); with steering
        ``steering`` (``SteeringResult.curves``) and ``steering_prompts`` (row, word_x, word_y, word_en, prompt)."""
        out = {"curves": self.curves(), "words": self.final_table(), "word_layers": self.word_frame(),
               "dropped": self.dropped}
        if self.causal is not None:
            out.update(causal=self.causal.curves(), causal_pairs=self.causal.pair_frame(),
                       causal_prompts=self.causal.pairs, causal_dropped=self.causal.dropped)
        if self.steering is not None:
            out.update(steering=self.steering.curves(), steering_prompts=self.steering.prompts)
        return out


@dataclass(frozen=True)
class CurveSummary:
    """Where the curves cross: the headline figures of a run."""

    latent_peak_layer: int
    latent_peak: float
    latent_above_10pct_from: int | None  # first layer with mean latent probability > 0.1
    target_overtakes_at: int | None  # first layer from which target > latent through the last layer
    target_final: float
    latent_final: float
    entropy_first_half_bits: float  # mean entropy over layers 0 .. n/2


def summarize(curves: pd.DataFrame) -> CurveSummary:
    target, latent = curves["p_target"].to_numpy(), curves["p_latent"].to_numpy()
    above = np.flatnonzero(latent > 0.1)
    ahead = target > latent
    overtakes = None
    if ahead[-1]:
        behind = np.flatnonzero(~ahead)
        overtakes = int(behind[-1] + 1) if len(behind) else 0
    half = len(curves) // 2
    return CurveSummary(
        latent_peak_layer=int(np.argmax(latent)),
        latent_peak=float(latent.max()),
        latent_above_10pct_from=int(above[0]) if len(above) else None,
        target_overtakes_at=overtakes,
        target_final=float(target[-1]),
        latent_final=float(latent[-1]),
        entropy_first_half_bits=float(curves["entropy_bits"].iloc[: half + 1].mean()),
    )



def _lens_by_length(handle: ModelHandle, prompts: list[str], progress, **kwargs) -> LensResult:
    """The lens (``run_lens``, or its reductions on NDIF) over prompts batched by token length (little padding);
    arrays back in the given order."""
    lengths = [len(handle.tokenizer(p)["input_ids"]) for p in prompts]
    order = np.argsort(lengths, kind="stable")
    sets = kwargs.pop("token_sets", None)
    result = run_lens(
        handle, [prompts[i] for i in order], token_sets=None if sets is None else [sets[i] for i in order],
        progress=progress, **kwargs,
    )
    back = np.argsort(order)
    for name in ("top_ids", "top_probs", "entropy_bits", "kl_to_final_bits", "set_probs", "energy"):
        value = getattr(result, name)
        if value is not None:
            setattr(result, name, value[:, back])
    result.top_tokens = [[layer[i] for i in back] for layer in result.top_tokens]
    return result


def run(handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> Result:
    """The latent-language curves of ``settings`` over its word list (default: the shipped list), with concept
    patching and language steering when the settings ask for them."""
    settings.validate()
    extras = [job for job, wanted in ((run_causal, settings.causal), (run_steering, settings.steer)) if wanted]
    if not extras:
        return _run_lens(handle, settings, progress)
    share = 1 / (1 + 2 * len(extras))  # the patched runs cost about twice the lens
    result = _run_lens(handle, settings, part(progress, 0.0, share))
    for i, job in enumerate(extras):
        outcome = job(handle, result.settings, part(progress, share * (1 + 2 * i), share * (3 + 2 * i)))
        if job is run_causal:
            result.causal = outcome
        else:
            result.steering = outcome
    return result


def _run_lens(handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> Result:
    plan = plan_words(handle.tokenizer, settings)
    s = plan.settings
    reader = lens_for(handle, s.lens)
    if not plan.kept:
        reasons = plan.dropped["reason"].value_counts().to_dict()
        raise UserError(
            f"all {len(plan.dropped)} words were dropped ({', '.join(f'{k}: {v}' for k, v in reasons.items())}): "
            "choose other languages or another latent language"
        )
    n = len(plan.kept)
    n_forced = sum(len(w.forced) for w in plan.kept)
    total = n + n_forced

    def scaled(start: int, size: int) -> Progress:
        """Prompts start .. start + size of the run's ``total`` (the main pass, then each teacher-forced group)."""
        stage = part(progress, start / total, (start + size) / total)
        return lambda f, message: stage(f, f"{start + round(f * size)}/{total} prompts")

    # Main pass: per word, the whole-token set and the lead's first piece of each language.
    main_sets = [
        [set(w.sets[slot].whole) for slot in SLOTS]
        + [{w.sets[slot].lead[0]} if w.sets[slot].lead else set() for slot in SLOTS]
        for w in plan.kept
    ]
    main = _lens_by_length(
        handle, [w.prompt for w in plan.kept], scaled(0, n), token_sets=main_sets, top_k=s.top_k,
        energy=s.energy, batch_size=s.batch_size, lens=reader,
    )
    set_probs = main.set_probs[:, :, 0]  # [layer, word, 6]
    lang_probs = set_probs[:, :, :3].copy()

    # Teacher-forced pass: after each lead's first piece, the probability of its second piece.
    if n_forced:
        jobs = [(wi, first, text, offset) for wi, w in enumerate(plan.kept) for first, (text, offset) in w.forced.items()]
        done = n
        for offset in sorted({job[3] for job in jobs}):
            group = [job for job in jobs if job[3] == offset]
            group_sets = [
                [{plan.kept[wi].sets[slot].lead[1]} if plan.kept[wi].sets[slot].lead and plan.kept[wi].sets[slot].lead[0] == first
                 else set() for slot in SLOTS]
                for wi, first, _, _ in group
            ]
            forced = _lens_by_length(
                handle, [job[2] for job in group], scaled(done, len(group)), positions=[-offset],
                token_sets=group_sets, top_k=1, batch_size=s.batch_size, lens=reader,
            )
            second = forced.set_probs[:, :, 0]  # [layer, job, slot]
            for j, (wi, first, _, _) in enumerate(group):
                for si, slot in enumerate(SLOTS):
                    lead = plan.kept[wi].sets[slot].lead
                    if lead and lead[0] == first:
                        lang_probs[:, wi, si] += set_probs[:, wi, 3 + si] * second[:, j, si]
            done += len(group)

    frame = pd.DataFrame(
        [(w.row, w.words["source"], w.words["target"], w.words["latent"], w.prompt) for w in plan.kept],
        columns=["row", "source_word", "target_word", "latent_word", "prompt"],
    )
    return Result(
        model=handle.spec,
        n_layers=handle.n_layers,
        settings=s,
        words=frame,
        dropped=plan.dropped,
        lang_probs=lang_probs,
        entropy_bits=main.entropy_bits[:, :, 0],
        energy=None if main.energy is None else main.energy[:, :, 0],
        top_ids=main.top_ids[:, :, 0],
        top_tokens=[[word[0] for word in layer] for layer in main.top_tokens],
        top_probs=main.top_probs[:, :, 0],
        token_sets=[{slot: w.sets[slot].ids for slot in SLOTS} for w in plan.kept],
        n_two_piece=sum(any(w.sets[slot].lead for slot in SLOTS) for w in plan.kept),
    )
