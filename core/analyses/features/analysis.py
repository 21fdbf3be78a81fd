"""The Features readout: which dictionary features are active at every position of a prompt, layer by layer.

One pass through the model (``handle.record``, stopped after the last layer a dictionary reads) gives each
dictionary's input; each dictionary encodes it, and per position its strongest features are kept, with their
top promoted tokens (its decoder direction read through the logit lens, from the dictionary's tokens card,
``cards``) and each site's reconstruction error (FVU over the prompt's non-BOS positions).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from core.analyses.base import Settings as BaseSettings
from core.analyses.features import cards
from core.analyses.features.wiring import Wiring, excluded, kept, read, wire
from core.errors import UserError
from core.features import Dictionary, load_dictionary, metrics
from core.models.handle import ModelHandle
from core.progress import Progress, part, quiet
from core.tokens import token_str

MAX_TOP = 20
MAX_DICTIONARIES = 64


@dataclass(frozen=True)
class Settings(BaseSettings):
    """``dictionaries``: folders (each one dictionary, any layout ``core.features`` reads); ``top``: features per
    position; ``top_tokens``: promoted tokens shown per feature."""

    prompt: str = "The Eiffel Tower is in the city of"
    dictionaries: tuple[str, ...] = ()
    top: int = 5
    top_tokens: int = 5

    def validate(self) -> None:
        if not self.prompt.strip():
            raise UserError("the prompt is empty: type some text to look at")
        if not self.dictionaries:
            raise UserError("no dictionary given: train one (python -m core sae) or give a folder with --dict")
        if len(self.dictionaries) > MAX_DICTIONARIES:
            raise UserError(f"at most {MAX_DICTIONARIES} dictionaries at once, got {len(self.dictionaries)}")
        if not isinstance(self.top, int) or not 1 <= self.top <= MAX_TOP:
            raise UserError(f"--top must be between 1 and {MAX_TOP}, got {self.top!r}")
        if not isinstance(self.top_tokens, int) or not 1 <= self.top_tokens <= cards.TOP:
            raise UserError(f"top tokens per feature must be between 1 and {cards.TOP}, got {self.top_tokens!r}")
        for path in self.dictionaries:
            if not Path(path).expanduser().exists():
                raise UserError(f"{path}: no such folder; give the folder that holds a dictionary's weights")


@dataclass
class Loaded:
    """One dictionary wired to the model: where it came from, the weights, its sites."""

    path: str
    dictionary: Dictionary
    wiring: Wiring
    tag: str = ""  # the folder's name, when another dictionary read together has the same site and layer

    @property
    def kind(self) -> str:
        return self.dictionary.kind

    @property
    def site(self) -> str:
        """What the page and the JSON call its site: resid, mlp_out, attn_out, attn_z, or transcoder."""
        return "transcoder" if self.kind == "transcoder" else self.dictionary.site

    @property
    def layer(self) -> int:
        return int(self.dictionary.layer)

    @property
    def label(self) -> str:
        return f"{self.site} {self.layer}" + (f" · {self.tag}" if self.tag else "")

    def to_json(self) -> dict:
        return {"path": self.path, "site": self.site, "layer": self.layer, "kind": self.kind,
                "width": self.dictionary.width}


def load(handle: ModelHandle, path: str) -> Loaded:
    """A dictionary checked against the model (its name, d_model, the layer) and wired, once per model and file."""
    folder = Path(path).expanduser()
    try:
        stamp = max(p.stat().st_mtime_ns for p in folder.iterdir()) if folder.is_dir() else folder.stat().st_mtime_ns
    except (OSError, ValueError):
        stamp = 0

    def compute() -> Loaded:
        dictionary = load_dictionary(folder, expect_model=handle.spec, expect_d_model=handle.d_model)
        try:
            wiring = wire(dictionary, handle)
        except UserError as error:
            raise UserError(f"{folder}: {error}") from None
        return Loaded(str(folder), dictionary, wiring)

    return handle.cached(("features:dictionary", str(folder.resolve()), stamp), compute)


@dataclass
class Feature:
    id: int
    activation: float
    top_tokens: list[str]


@dataclass
class Layer:
    """One dictionary's readout: ``acts`` [pos, width] (sparse, stored dense), the strongest per position."""

    loaded: Loaded
    fvu: float
    error_ratio: list[float]  # per position ‖x − x̂‖ / ‖x‖ (BOS: its own, though left out of the FVU)
    positions: list[list[Feature]]

    def to_json(self) -> dict:
        return {"layer": self.loaded.layer, "site": self.loaded.site,
                "fvu": None if self.fvu != self.fvu else round(self.fvu, 5),
                "positions": []}


@dataclass
class Result:
    model: str
    settings: Settings
    tokens: list[str]
    layers: list[Layer]
    bos: list[bool]  # positions left out of the FVU

    def to_json(self) -> dict:
        """The ``python -m core features`` contract."""
        layers = []
        for layer in self.layers:
            item = layer.to_json()
            item["positions"] = [{"position": p, "token": self.tokens[p],
                                  "features": [{"id": f.id, "activation": round(f.activation, 5), "top_tokens": f.top_tokens}
                                               for f in features]}
                                 for p, features in enumerate(layer.positions)]
            layers.append(item)
        return {"model": self.model, "tokens": self.tokens,
                "dictionaries": [layer.loaded.to_json() for layer in self.layers], "layers": layers}

    def frames(self):
        """``features``: one row per (dictionary, position, rank): dictionary, site, layer, position, token, rank,
        feature, activation, top_tokens; ``layers``: dictionary, site, layer, kind, width, fvu, path;
        ``errors``: dictionary, position, token, error_ratio."""
        import pandas as pd

        rows, layers, errors = [], [], []
        for layer in self.layers:
            name = layer.loaded.label
            layers.append({"dictionary": name, **layer.loaded.to_json(), "fvu": layer.fvu})
            for p, features in enumerate(layer.positions):
                errors.append({"dictionary": name, "position": p, "token": self.tokens[p],
                               "error_ratio": layer.error_ratio[p], "bos": self.bos[p]})
                for rank, f in enumerate(features, 1):
                    rows.append({"dictionary": name, "site": layer.loaded.site, "layer": layer.loaded.layer,
                                 "position": p, "token": self.tokens[p], "rank": rank, "feature": f.id,
                                 "activation": f.activation, "top_tokens": " ".join(f.top_tokens)})
        columns = ["dictionary", "site", "layer", "position", "token", "rank", "feature", "activation", "top_tokens"]
        return {"features": pd.DataFrame(rows, columns=columns), "layers": pd.DataFrame(layers),
                "errors": pd.DataFrame(errors)}


def token_names(handle: ModelHandle, ids) -> list[str]:
    return [token_str(handle.tokenizer, int(i)) for i in ids]


def load_all(handle: ModelHandle, paths, progress: Progress = quiet) -> list[Loaded]:
    """Every dictionary loaded and wired (one ``UserError`` line for the first that does not fit), by layer."""
    loaded = []
    for i, path in enumerate(dict.fromkeys(paths)):
        progress(i / max(len(paths), 1), f"loading {Path(path).name}")
        loaded.append(load(handle, path))
    labels = [item.label for item in loaded]
    loaded = [replace(item, tag=Path(item.path).name) if labels.count(item.label) > 1 else item for item in loaded]
    return sorted(loaded, key=lambda item: (item.layer, item.site, item.tag))


@torch.no_grad()
def run(handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> Result:
    settings.validate()
    handle.require("record", "reading features")
    progress = progress or quiet
    loaded = load_all(handle, settings.dictionaries, part(progress, 0.0, 0.1))
    token_cards = [cards.top_tokens(handle, item.dictionary, Path(item.path), part(progress, 0.1, 0.6))
                   for item in loaded]
    batch = handle.encode([settings.prompt])
    progress(0.6, "one pass through the model")
    values = read(handle, batch, [item.wiring for item in loaded])
    skip = excluded(handle, batch)[0]
    tokens = token_names(handle, batch.input_ids[0])
    layers = []
    for item, card in zip(loaded, token_cards):
        x, y = values[item.wiring.read][0], values[item.wiring.write][0]  # [pos, width]
        d = item.dictionary
        acts = d.encode(x.to(d.device))
        x_hat = d.decode(acts, x.to(d.device)).to(y)
        fvu = metrics.fvu(kept(y, skip), kept(x_hat, skip)) if int((~skip).sum()) > 1 else float("nan")
        ratio = ((y - x_hat).norm(dim=-1) / y.norm(dim=-1).clamp_min(1e-12)).tolist()
        best = acts.topk(min(settings.top, d.width), dim=-1)
        positions = []
        for left_out, values_p, ids_p in zip(skip.tolist(), best.values.tolist(), best.indices.tolist()):
            # BOS: dictionaries are trained without it (its residual is hundreds of times larger): no features
            positions.append([] if left_out else
                             [Feature(f, a, token_names(handle, card["promoted_ids"][f, : settings.top_tokens]))
                              for a, f in zip(values_p, ids_p) if a > 0])
        layers.append(Layer(item, fvu, ratio, positions))
    progress(1.0, "done")
    return Result(handle.spec, settings, tokens, layers, skip.tolist())


SHIPPED = Path(__file__).resolve().parents[3] / "assets" / "dictionaries"  # one per default model, read-only


def available(handle: ModelHandle) -> list[str]:
    """Folders of this model's dictionaries: trained here ($LAYERSCOPE_HOME/dictionaries/<model>/…, sorted by
    name), then shipped with layerscope (assets/dictionaries/<model>/…), so a first visit has one to read."""
    from core.analyses.sae.analysis import dictionaries_home, model_slug

    found = []
    for home in (dictionaries_home(handle), SHIPPED / model_slug(handle)):
        if home.is_dir():
            found += [str(p) for p in sorted(home.iterdir())
                      if (p / "params.safetensors").is_file() and not p.name.startswith(".")]
    return found

