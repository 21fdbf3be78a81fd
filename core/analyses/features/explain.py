"""One feature explained: its decoder direction through the logit lens, its top-activating contexts in the
shipped corpora and its activation density (from the dictionary's cards, computed once and cached on disk)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.analyses.base import Settings as BaseSettings
from core.analyses.features import cards
from core.analyses.features.analysis import load
from core.errors import UserError
from core.models.handle import ModelHandle
from core.progress import Progress, part, quiet
from core.tokens import token_str

CONTEXT_BEFORE, CONTEXT_AFTER = 12, 4


@dataclass(frozen=True)
class Settings(BaseSettings):
    dictionary: str = ""
    feature: int = 0

    def validate(self) -> None:
        if not self.dictionary:
            raise UserError("no dictionary given: choose the dictionary the feature belongs to")
        if isinstance(self.feature, bool) or not isinstance(self.feature, int) or self.feature < 0:
            raise UserError(f"the feature must be a latent number (0, 1, 2, …), got {self.feature!r}")


@dataclass
class Context:
    activation: float
    before: str
    token: str
    after: str


@dataclass
class FeatureCard:
    label: str  # the dictionary, e.g. "resid 9"
    feature: int
    promoted: list[tuple[str, float]]  # (token, logit through the lens), strongest first
    suppressed: list[tuple[str, float]]
    contexts: list[Context]
    density: float  # fraction of the context corpus's non-BOS tokens where it is active
    histogram: list[float]
    bin_edges: list[float]
    corpus_tokens: int
    max_activation: float  # largest activation seen on the context corpus
    decoder_norm: float  # ‖decoder row‖: activation × this = the size of what the feature writes
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"dictionary": self.label, "feature": self.feature,
                "promoted": [{"token": t, "logit": round(v, 4)} for t, v in self.promoted],
                "suppressed": [{"token": t, "logit": round(v, 4)} for t, v in self.suppressed],
                "contexts": [vars(c) for c in self.contexts], "density": self.density,
                "max_activation": self.max_activation}

    def frames(self):
        import pandas as pd

        return {"contexts": pd.DataFrame([vars(c) for c in self.contexts]),
                "tokens": pd.DataFrame([{"direction": "promoted", "token": t, "logit": v} for t, v in self.promoted]
                                       + [{"direction": "suppressed", "token": t, "logit": v} for t, v in self.suppressed])}


def _text(handle: ModelHandle, ids) -> str:
    return "".join(token_str(handle.tokenizer, int(i)) for i in ids if int(i) >= 0)


def run(handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> FeatureCard:
    settings.validate()
    handle.require("record", "explaining a feature")
    progress = progress or quiet
    loaded = load(handle, settings.dictionary)
    width, f = loaded.dictionary.width, settings.feature
    if f >= width:
        raise UserError(f"feature {f} does not exist: {loaded.label} has features 0..{width - 1}")
    folder = Path(loaded.path)
    tokens = cards.top_tokens(handle, loaded.dictionary, folder, part(progress, 0.0, 0.3))
    context = cards.contexts(handle, loaded.dictionary, folder, part(progress, 0.3, 1.0))
    name = lambda i: token_str(handle.tokenizer, int(i))  # noqa: E731
    promoted = [(name(i), float(v)) for i, v in zip(tokens["promoted_ids"][f], tokens["promoted_logits"][f])]
    suppressed = [(name(i), float(v)) for i, v in zip(tokens["suppressed_ids"][f], tokens["suppressed_logits"][f])]
    contexts = []
    for activation, window, position in zip(context["top_acts"][f].tolist(), context["top_window"][f].tolist(),
                                            context["top_position"][f].tolist()):
        if activation <= 0:
            continue
        ids = context["windows"][window]
        contexts.append(Context(activation, _text(handle, ids[max(1, position - CONTEXT_BEFORE):position]),
                                name(ids[position]), _text(handle, ids[position + 1:position + 1 + CONTEXT_AFTER])))
    notes = [] if contexts else ["never active on the context corpus: a dead or rare feature"]
    return FeatureCard(loaded.label, f, promoted, suppressed, contexts, float(context["density"][f]),
                       context["histogram"][f].tolist(), context["bin_edges"].tolist(), int(context["tokens"][0]),
                       max([c.activation for c in contexts], default=0.0),
                       float(loaded.dictionary.W_dec[f].norm()), notes)
