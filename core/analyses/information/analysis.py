"""Journey of information: what each layer's residual still knows about the tokens, how compressed it
is, and where a word's meaning stops depending on its language.

One forward pass over ``tokens`` positions of a text captures every layer's residual. Positions are
split at random (by ``seed``): every probe is fitted on two thirds of them (the fit split) and every
number is measured on the other third (the score split), the lens included. The word list goes through the model once per
(model, words) and is cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from core.analyses.base import Settings as BaseSettings
from core.analyses.information import embeddings, geometry
from core.analyses.information.corpus import MIN_TOKENS, Text, decode, load_text, story_tokens, token_class, token_window
from core.analyses.information.probes import ProbeScore, probe_tokens
from core.analyses.translation.wordlist import LANGUAGES, SHIPPED_LANGUAGES, load_words
from core.errors import UserError
from core.lens import run_lens
from core.models.handle import ModelHandle
from core.progress import Progress, part
from core.tokens import token_str

VERSION = "1"  # the store's analysis version: raise it when a change of code changes the numbers

MAX_TOKENS = 2000
DEFAULT_CORPUS = "shakespeare"


@dataclass(frozen=True)
class Settings(BaseSettings):
    """``corpus``: a shipped corpus, a word-list language code (the parallel story) or a text file;
    ``tokens`` positions read; ``seed`` picks the fit/score split and the concepts; ``languages`` and
    ``concepts`` (how many rows of the word list) for translation retrieval; ``word`` whose embedding
    neighbours are listed. ``text``, when given (an upload), is read instead and ``corpus`` only names it."""

    corpus: str = DEFAULT_CORPUS
    tokens: int = 400
    seed: int = 0
    languages: tuple[str, ...] = SHIPPED_LANGUAGES
    concepts: int = 100
    word: str = "water"
    text: str = ""

    def validate(self) -> None:
        if not self.corpus.strip():
            raise UserError("no corpus given: name a shipped corpus, a language code or a text file")
        if not MIN_TOKENS <= self.tokens <= MAX_TOKENS:
            raise UserError(f"tokens must be between {MIN_TOKENS} (a probe needs them) and {MAX_TOKENS}, got {self.tokens}")
        shipped = load_words()
        for code in self.languages:
            if code not in shipped.languages:
                raise UserError(f"language {code!r} is not in the word list: use some of {', '.join(shipped.languages)}")
        if len(set(self.languages)) < 2:
            raise UserError("translation retrieval needs at least two different languages")
        if not 2 <= self.concepts <= len(shipped):
            raise UserError(f"concepts must be between 2 and {len(shipped)} (the word list's rows), got {self.concepts}")
        if not self.word.strip():
            raise UserError("the word is empty: type a word to find its neighbours")


@dataclass
class Layer:
    """What one layer (0 = embeddings, n_layers = output) keeps; accuracies are on the score split."""

    layer: int
    current_token_acc: float  # probe
    current_token_nearest_acc: float  # nearest input embedding (cosine) among the score split's distinct tokens
    previous_token_acc: float  # probe
    next_token_acc: float  # the logit lens's top-1 against the actual next token
    next_token_probe_acc: float
    mi_next_token_bits: float  # H(next) - CE(probe): a lower bound on I(residual; next token)
    mi_current_token_bits: float
    mi_previous_token_bits: float
    effective_rank: float
    anisotropy: float
    translation_retrieval: float  # mean over ordered language pairs
    outlier_dims: int


@dataclass
class Result:
    model: str
    n_layers: int
    settings: Settings
    corpus: Text
    tokens: list[str]  # the window, position 0 (BOS) to n + 1
    fit_positions: list[int]
    score_positions: list[int]
    layers: list[Layer]
    probes: dict[str, ProbeScore]  # "current", "previous", "next"
    outliers: list[geometry.Outlier]
    retrieval: np.ndarray  # [layer, language, language], NaN on the diagonal
    languages: tuple[str, ...]
    concepts: list[str]  # the English word of each concept used
    tokens_per_word: dict[str, float]  # every word-list language, all its words
    story_tokens: dict[str, int]  # tokens of the parallel story, per language
    neighbours: embeddings.Neighbours
    pca: pd.DataFrame = field(repr=False)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens) - 2

    @property
    def peak_retrieval_layer(self) -> int:
        return max(self.layers, key=lambda l: l.translation_retrieval).layer

    def split_description(self) -> str:
        return (f"positions 1..{self.n_tokens} split at random (seed {self.settings.seed}): probes fitted on "
                f"{len(self.fit_positions)}, every accuracy and bound measured on the other {len(self.score_positions)}")

    def to_json(self) -> dict:
        """The ``python -m core information`` contract (plus the split, the probes' classes and the outliers)."""
        contract = ("layer", "current_token_acc", "previous_token_acc", "next_token_acc", "mi_next_token_bits",
                    "effective_rank", "anisotropy", "translation_retrieval")
        return {
            "model": self.model,
            "n_tokens": self.n_tokens,
            "layers": [{"layer": l.layer} | {k: _num(getattr(l, k)) for k in contract[1:]} for l in self.layers],
            "tokens_per_word": {k: _num(v) for k, v in self.tokens_per_word.items()},
            "corpus": self.corpus.name,
            "seed": self.settings.seed,
            "split": {"fit": len(self.fit_positions), "score": len(self.score_positions),
                      "how": self.split_description()},
            "probes": {name: {"classes": p.n_classes, "coverage": _num(p.coverage),
                              "label_entropy_bits": _num(p.label_entropy_bits)} for name, p in self.probes.items()},
            "translation_languages": list(self.languages),
            "translation_concepts": len(self.concepts),
            "outliers": [{"layer": o.layer, "dim": o.dim, "ratio": _num(o.ratio),
                          "tokens": [self.tokens[p] for p, _ in o.carriers]} for o in self.outliers],
        }

    def frames(self) -> dict[str, pd.DataFrame]:
        """``layers`` (one row per layer, every ``Layer`` field), ``outliers``, ``retrieval`` (layer, source,
        target, accuracy), ``pca`` (layer, kind, x, y, label, group), ``tokens_per_word`` and ``neighbours``."""
        layers = pd.DataFrame([vars(l) for l in self.layers])
        outliers = pd.DataFrame(
            [(o.layer, o.dim, o.max_abs, o.ratio, " | ".join(f"{p}:{self.tokens[p]}" for p, _ in o.carriers))
             for o in self.outliers],
            columns=["layer", "dim", "max_abs", "ratio", "carriers"],
        )
        retrieval = pd.DataFrame(
            [(layer, a, b, float(self.retrieval[layer, i, j]))
             for layer in range(self.retrieval.shape[0])
             for i, a in enumerate(self.languages) for j, b in enumerate(self.languages) if i != j],
            columns=["layer", "source", "target", "accuracy"],
        )
        per_word = pd.DataFrame(
            [(code, LANGUAGES[code].english_name, v, self.story_tokens.get(code)) for code, v in self.tokens_per_word.items()],
            columns=["language", "name", "tokens_per_word", "story_tokens"],
        )
        n = self.neighbours
        neighbour_rows = [(which, rank, x.token, x.token_id, x.cosine)
                          for which, found in (("input", n.input), ("output", n.output))
                          for rank, x in enumerate(found, start=1)]
        return {
            "layers": layers,
            "outliers": outliers,
            "retrieval": retrieval,
            "pca": self.pca,
            "tokens_per_word": per_word,
            "neighbours": pd.DataFrame(neighbour_rows, columns=["embedding", "rank", "token", "token_id", "cosine"]),
        }


def _num(x: float) -> float | None:
    x = float(x)
    return None if x != x else round(x, 6)


FIT_SHARE = 2 / 3  # more rows for the probes; a third is enough to score (and the lens decodes only those)


def split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows 0..n-1 at random into fit rows (two thirds) and score rows (the rest), each sorted."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = round(n * FIT_SHARE)
    return order[:cut].sort().values, order[cut:].sort().values


def nearest_token_accuracy(handle: ModelHandle, residual: torch.Tensor, ids: torch.Tensor) -> list[float]:
    """Per layer, how often the input-embedding row nearest (cosine) the residual [layer, n, d] is the token
    ``ids`` [n], among the distinct tokens of ``ids``."""
    embed = handle.weights.embedding()
    if not embed.is_floating_point():
        return [float("nan")] * residual.shape[0]
    candidates = ids.unique()
    rows = embed.detach()[candidates.to(embed.device)].float().cpu()
    rows = rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    nearest = candidates[(residual.float() @ rows.T).argmax(-1)]  # [layer, n]; the residual's norm cannot change it
    return (nearest == ids).double().mean(1).tolist()


def read_text(settings: Settings) -> Text:
    """The text the settings name (no model needed: the CLI checks it before loading one)."""
    if settings.text:
        return Text(settings.corpus, decode(settings.corpus, settings.text.encode("utf-8", "surrogatepass")), None)
    return load_text(settings.corpus, load_words().languages, LANGUAGES)


def run(handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> Result:
    settings.validate()
    words = load_words()
    text = read_text(settings)
    window = token_window(handle, text.text, settings.tokens)
    n = window.n
    ids = window.ids
    part(progress, 0, 0.05)(0, f"one forward pass over {n} tokens")
    residual = handle.residuals(window.batch)[:, 0].float().cpu()  # [layer, n + 2, d]
    x = residual[:, 1 : n + 1]  # positions 1..n: each has a previous and a next token
    fit, score = split(n, settings.seed)

    probes: dict[str, ProbeScore] = {}
    labels = {"current": ids[1 : n + 1], "previous": ids[:n], "next": ids[2 : n + 2]}
    for k, (name, y) in enumerate(labels.items()):
        part(progress, 0.05 + 0.1 * k, 0.15 + 0.1 * k)(0, f"fitting the {name}-token probe on every layer")
        probes[name] = probe_tokens(x, y, fit, score)
    nearest = nearest_token_accuracy(handle, x[:, score], labels["current"][score])

    part(progress, 0.35, 0.65)(0, f"the logit lens at the {len(score)} scored positions, every layer")
    lens = run_lens(handle, window.prompt, positions=(score + 1).tolist(), top_k=1,
                    progress=part(progress, 0.35, 0.65))
    if lens.token_ids[0][: n + 2] != ids.tolist():
        raise RuntimeError("the lens tokenized the window differently from the probes")
    lens_top = torch.as_tensor(lens.top_ids[:, 0, :, 0])  # [layer, score slot]
    next_acc = (lens_top == labels["next"][score]).double().mean(1).tolist()

    rng = np.random.default_rng(settings.seed)
    rows = sorted(rng.choice(len(words), size=settings.concepts, replace=False).tolist())
    languages = tuple(dict.fromkeys(settings.languages))
    concept_words = tuple(words.words[code][i] for code in languages for i in rows)
    reps = embeddings.word_residuals(handle, concept_words, part(progress, 0.65, 0.95))
    reps = reps.view(reps.shape[0], len(languages), len(rows), -1)
    retrieval = np.stack([geometry.translation_retrieval(reps[layer]).numpy() for layer in range(reps.shape[0])])

    part(progress, 0.95, 1.0)(0, "effective rank, anisotropy, outliers, PCA")
    token_text = [token_str(handle.tokenizer, t) for t in ids.tolist()]
    outliers = [o for layer in range(residual.shape[0])
                for o in geometry.outlier_dimensions(residual[layer, : n + 1], layer)]
    layers = []
    for layer in range(residual.shape[0]):
        mi = {name: p.mutual_information_bits[layer] for name, p in probes.items()}
        block = retrieval[layer]
        layers.append(Layer(
            layer=layer,
            current_token_acc=probes["current"].accuracy[layer],
            current_token_nearest_acc=nearest[layer],
            previous_token_acc=probes["previous"].accuracy[layer],
            next_token_acc=next_acc[layer],
            next_token_probe_acc=probes["next"].accuracy[layer],
            mi_next_token_bits=mi["next"],
            mi_current_token_bits=mi["current"],
            mi_previous_token_bits=mi["previous"],
            effective_rank=geometry.effective_rank(x[layer]),
            anisotropy=geometry.anisotropy(x[layer]),
            translation_retrieval=float(np.nanmean(block)),
            outlier_dims=sum(o.layer == layer for o in outliers),
        ))
    pca = _pca_frame(x, token_text[1 : n + 1], reps, languages, concept_words, settings.seed)
    return Result(
        model=handle.spec, n_layers=handle.n_layers, settings=settings, corpus=text, tokens=token_text,
        fit_positions=(fit + 1).tolist(), score_positions=(score + 1).tolist(), layers=layers, probes=probes,
        outliers=outliers, retrieval=retrieval, languages=languages,
        concepts=[words.words["en"][i] for i in rows],
        tokens_per_word={code: embeddings.tokens_per_word(handle, list(words.words[code])) for code in words.languages},
        story_tokens=story_tokens(handle),
        neighbours=embeddings.neighbours(handle, settings.word),
        pca=pca,
    )


def _pca_frame(x: torch.Tensor, token_text: list[str], reps: torch.Tensor, languages: tuple[str, ...],
               word_labels: tuple[str, ...], seed: int) -> pd.DataFrame:
    """Every layer's 2-D PCA of the window's tokens (group = token class) and of the words (group = language);
    ``reps`` [layer, language, concept, d] and ``word_labels`` in the same language-major order."""
    classes = [token_class(t) for t in token_text]
    word_groups = [code for code in languages for _ in range(reps.shape[2])]
    frames = []
    for layer in range(x.shape[0]):
        for kind, vectors, text, group in (
            ("token", x[layer], token_text, classes),
            ("word", reps[layer].reshape(-1, reps.shape[-1]), word_labels, word_groups),
        ):
            xy = geometry.pca_2d(vectors, seed).numpy()
            frames.append(pd.DataFrame({"layer": layer, "kind": kind, "x": xy[:, 0], "y": xy[:, 1],
                                        "label": text, "group": group}))
    return pd.concat(frames, ignore_index=True)
