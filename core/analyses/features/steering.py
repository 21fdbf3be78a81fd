"""Steering with one feature: add α × its decoder direction at its layer, or clamp its activation to α.

``add`` edits the dictionary's output site at every position (``Edit(site, "add", α·d)``, d the decoder row
scaled to unit norm), so generation is
``handle.generate`` with that edit. ``clamp`` sets the feature's activation to α wherever it is computed: at
each position x + (α − a(x))·d, with a(x) the feature's activation on the clean input (a first pass stopped at
the layer reads it), the dictionary's error left in place; BOS is not touched. Clamped generation runs one
such pair of passes per new token. Before and after: the logit lens of the prompt (top-1 token and its
probability at every layer × position) and a greedy continuation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from core.analyses.base import Settings as BaseSettings
from core.analyses.features.analysis import Loaded, load, token_names
from core.analyses.features.wiring import excluded, read
from core.errors import UserError
from core.models.handle import Batch, ModelHandle
from core.models.sites import Edit, Site
from core.progress import Progress, quiet

MODES = ("add", "clamp")
MAX_NEW_TOKENS = 200


@dataclass(frozen=True)
class SteerSettings(BaseSettings):
    """``alpha``: the multiple of the decoder direction added (add) or the activation imposed (clamp)."""

    prompt: str = "The Eiffel Tower is in the city of"
    dictionary: str = ""
    feature: int = 0
    mode: str = "add"
    alpha: float = 10.0
    new_tokens: int = 20

    def validate(self) -> None:
        if not self.prompt.strip():
            raise UserError("the prompt is empty: type some text to steer")
        if not self.dictionary:
            raise UserError("no dictionary given for steering: choose the dictionary the feature belongs to")
        if self.mode not in MODES:
            raise UserError(f"unknown steering mode '{self.mode}': choose add or clamp")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha):
            raise UserError(f"the steering α must be a finite number, got {self.alpha!r}")
        if isinstance(self.feature, bool) or not isinstance(self.feature, int) or self.feature < 0:
            raise UserError(f"the feature must be a latent number (0, 1, 2, …), got {self.feature!r}")
        if not isinstance(self.new_tokens, int) or not 1 <= self.new_tokens <= MAX_NEW_TOKENS:
            raise UserError(f"new tokens must be between 1 and {MAX_NEW_TOKENS}, got {self.new_tokens!r}")


@dataclass
class SteerResult:
    model: str
    settings: SteerSettings
    label: str  # the dictionary, e.g. "resid 9"
    tokens: list[str]
    before: list[list[tuple[str, float]]]  # [row][position] -> (top-1 token, its probability); row 0 = embeddings
    after: list[list[tuple[str, float]]]
    continuation_before: str
    continuation_after: str

    def to_json(self) -> dict:
        s = self.settings
        return {"dictionary": s.dictionary, "feature": s.feature, "mode": s.mode, "alpha": s.alpha,
                "continuation_before": self.continuation_before, "continuation_after": self.continuation_after,
                "layers": [{"layer": row, "before": [t for t, _ in b], "after": [t for t, _ in a]}
                           for row, (b, a) in enumerate(zip(self.before, self.after))]}

    def frames(self):
        """``lens``: which (before/after), layer, position, token, top_token, prob."""
        import pandas as pd

        rows = [{"which": which, "layer": row, "position": p, "token": self.tokens[p], "top_token": t, "prob": prob}
                for which, grid in (("before", self.before), ("after", self.after))
                for row, cells in enumerate(grid) for p, (t, prob) in enumerate(cells)]
        return {"lens": pd.DataFrame(rows)}


def direction(loaded: Loaded, feature: int, handle: ModelHandle) -> torch.Tensor:
    """The feature's decoder row scaled to unit norm, in the shape of its output site ([d_model]; ``z``:
    [head, head_dim]). Unit norm: α is in the site's own units whatever the dictionary's decoder norms."""
    d = loaded.dictionary
    if not 0 <= feature < d.width:
        raise UserError(f"feature {feature} does not exist: {loaded.label} has features 0..{d.width - 1}")
    row = d.W_dec[feature].detach().cpu()
    row = row / row.norm().clamp_min(1e-12)
    return row.unflatten(-1, (handle.n_heads, -1)) if loaded.wiring.write.kind == "z" else row


def clamp_delta(handle: ModelHandle, loaded: Loaded, batch: Batch, feature: int, value: float) -> torch.Tensor:
    """(value − a(x))·d at every position but BOS and padding: Float[Tensor, "batch pos d_out"] (z: heads split)."""
    x = read(handle, batch, [loaded.wiring])[loaded.wiring.read]
    activation = loaded.dictionary.encode(x.to(loaded.dictionary.device))[..., feature].cpu()
    change = (value - activation).masked_fill(excluded(handle, batch), 0.0)
    delta = change[..., None] * loaded.dictionary.W_dec[feature].cpu()
    return delta.unflatten(-1, (handle.n_heads, -1)) if loaded.wiring.write.kind == "z" else delta


def lens_grid(handle: ModelHandle, batch: Batch, edits) -> list[list[tuple[str, float]]]:
    """Top-1 token and probability of the logit lens at every layer (0 = embeddings) × position, with ``edits``."""
    sites = [Site("resid_pre", 0)] + [Site("resid_post", i) for i in range(handle.n_layers)]
    recording = handle.run_with_edits(batch, edits, read=sites)
    real = len(handle.tokenizer)
    grid = []
    for site in sites:
        probs = handle.decode(recording[site][0])[:, :real].softmax(-1)
        top = probs.max(-1)
        grid.append(list(zip(token_names(handle, top.indices.tolist()), top.values.tolist())))
    return grid


def _clamped_generation(handle: ModelHandle, loaded: Loaded, batch: Batch, s: SteerSettings) -> list[int]:
    ids = batch.input_ids[0][batch.attention_mask[0].bool()].tolist()
    eos, real, new = handle.tokenizer.eos_token_id, len(handle.tokenizer), []
    for _ in range(s.new_tokens):
        step = handle.batch_of([ids + new])
        edit = Edit(loaded.wiring.write, "add", clamp_delta(handle, loaded, step, s.feature, s.alpha))
        final = handle.run_with_edits(step, [edit]).final
        token = int(handle.decode(final[0, -1:])[0, :real].argmax())
        if eos is not None and token == eos:
            break
        new.append(token)
    return new


@torch.no_grad()
def steer(handle: ModelHandle, settings: SteerSettings, progress: Progress | None = None) -> SteerResult:
    settings.validate()
    handle.require("run_with_edits", "steering a feature")
    progress = progress or quiet
    loaded = load(handle, settings.dictionary)
    row = direction(loaded, settings.feature, handle)
    batch = handle.encode([settings.prompt])
    progress(0.1, "the lens before steering")
    before = lens_grid(handle, batch, [])
    if settings.mode == "add":
        edit = Edit(loaded.wiring.write, "add", settings.alpha * row)
    else:
        edit = Edit(loaded.wiring.write, "add", clamp_delta(handle, loaded, batch, settings.feature, settings.alpha))
    progress(0.3, "the lens after steering")
    after = lens_grid(handle, batch, [edit])
    progress(0.5, "greedy continuation before steering")
    plain = handle.generate(batch, settings.new_tokens)[0]
    progress(0.7, "greedy continuation after steering")
    steered = (handle.generate(batch, settings.new_tokens, edits=[edit])[0] if settings.mode == "add"
               else _clamped_generation(handle, loaded, batch, settings))
    decode = handle.tokenizer.decode
    progress(1.0, "done")
    return SteerResult(handle.spec, settings, loaded.label, token_names(handle, batch.input_ids[0]), before, after,
                       decode(plain, skip_special_tokens=True), decode(steered, skip_special_tokens=True))
