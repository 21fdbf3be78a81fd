"""The tuned lens: one affine translator per layer, read and written in the tuned-lens package's format.

A folder holds ``config.json`` (``base_model_name_or_path``, ``d_model``, ``num_hidden_layers``,
``bias``, ``unembed_hash``, ``lens_type`` = "linear_tuned_lens") and ``params.pt``, the state dict of a
``ModuleList`` of ``num_hidden_layers`` ``Linear(d_model, d_model)`` translators (keys ``"{i}.weight"``,
``"{i}.bias"``) for hidden states 0 (embeddings) .. L-1; translator i maps h to h + W_i h + b_i (added
residually, as tuned-lens does), and the last layer has none. The published Llama-2 lenses load as
they are. We read the format ourselves rather than depend on the ``tuned-lens`` package: its
requirements (wandb, datasets, torchdata, plotly) would pull torch builds that fight this project's
torch pin, for two files of plain tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from core.errors import UserError
from core.lenses.base import LENS_NAMES, Lens
from core.models.gguf_cache import cache_home
from core.models.handle import ModelHandle

CONFIG, PARAMS = "config.json", "params.pt"
LENS_TYPE = "linear_tuned_lens"




def unembed_hash(handle: ModelHandle) -> str:
    """tuned-lens's fingerprint of a model: sha256 of numpy's 1-decimal summary of the unembedding."""

    def compute() -> str:
        weight = handle.weights.unembedding(packed_ok=True)
        with np.printoptions(threshold=1000, edgeitems=3):  # numpy's defaults: the corners of the matrix
            text = np.array_str(weight.float().cpu().numpy(), precision=1)
        return hashlib.sha256(text.encode()).hexdigest()

    return handle.cached("tuned_lens.unembed_hash", compute)


def default_lens_dir(handle: ModelHandle) -> Path:
    """Where this model's trained tuned lens lives: $LAYERSCOPE_HOME/lenses/<model>-<unembedding hash>."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(handle.spec.rstrip("/")).name or handle.spec)[:60]
    return cache_home() / "lenses" / f"{slug}-{unembed_hash(handle)[:12]}"


class TunedLens(Lens):
    """Affine translators [layer, d_model, d_model] + [layer, d_model] for layers 0..L-1."""

    name = "tuned"
    reads_sublayers = False  # translators are trained on the residual after whole blocks

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, config: dict):
        if weight.ndim != 3 or weight.shape[1] != weight.shape[2] or bias.shape != weight.shape[:2]:
            raise ValueError(f"expected weight [L, d, d] and bias [L, d], got {tuple(weight.shape)} and {tuple(bias.shape)}")
        self.weight, self.bias, self.config = weight.float(), bias.float(), dict(config)

    @property
    def n_layers(self) -> int:
        return int(self.weight.shape[0])

    def transform(self, residual: torch.Tensor) -> torch.Tensor:
        if residual.shape[0] != self.n_layers + 1:
            raise ValueError(f"a tuned lens of {self.n_layers} layers reads {self.n_layers + 1} rows, got {residual.shape[0]}")
        h = residual[:-1].float()
        w, b = self.weight.to(h.device), self.bias.to(h.device)
        shape = h.shape
        flat = h.reshape(shape[0], -1, shape[-1])  # [layer, tokens, d]
        translated = flat + torch.baddbmm(b.unsqueeze(1), flat, w.transpose(1, 2))
        return torch.cat([translated.reshape(shape), residual[-1:].float()])

    # -- the tuned-lens format --------------------------------------------------------------------------

    def save(self, folder: Path) -> Path:
        """Write config.json + params.pt atomically (a temporary sibling renamed into place)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            state = {}
            for i in range(self.n_layers):
                state[f"{i}.weight"] = self.weight[i].clone()
                state[f"{i}.bias"] = self.bias[i].clone()
            torch.save(state, work / PARAMS)
            (work / CONFIG).write_text(json.dumps(self.config, indent=1))
            os.chmod(work, 0o755)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(work, folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return folder

    @classmethod
    def identity(cls, handle: ModelHandle) -> "TunedLens":
        """Translators that change nothing (the logit lens), the starting point of training."""
        d, n = handle.d_model, handle.n_layers
        config = {"base_model_name_or_path": handle.spec, "d_model": d, "num_hidden_layers": n, "bias": True,
                  "base_model_revision": None, "unembed_hash": unembed_hash(handle), "lens_type": LENS_TYPE}
        return cls(torch.zeros(n, d, d), torch.zeros(n, d), config)


def load_tuned_lens(folder: Path | str, handle: ModelHandle) -> TunedLens:
    """A tuned lens from a folder in the tuned-lens format, checked against ``handle``'s model."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"tuned lens folder not found: {folder}")
    try:
        config = json.loads((folder / CONFIG).read_text())
    except FileNotFoundError:
        raise UserError(f"{folder} is not a tuned lens: it has no {CONFIG}") from None
    except ValueError:
        raise UserError(f"{folder / CONFIG} is not valid JSON: retrain or re-download the lens") from None
    if config.get("lens_type", LENS_TYPE) != LENS_TYPE:
        raise UserError(f"{folder} holds a '{config.get('lens_type')}' lens; only linear tuned lenses are supported")
    d, n = config.get("d_model"), config.get("num_hidden_layers")
    trained_for = config.get("base_model_name_or_path", "another model")
    if (d, n) != (handle.d_model, handle.n_layers):
        raise UserError(f"this tuned lens was trained for {trained_for} (d_model {d}, {n} layers), not for "
                        f"{handle.spec} (d_model {handle.d_model}, {handle.n_layers} layers)")
    expected = config.get("unembed_hash")
    if expected and expected != unembed_hash(handle):
        raise UserError(f"this tuned lens was trained for {trained_for}, whose unembedding differs from "
                        f"{handle.spec}'s: train one for this model")
    try:
        state = torch.load(folder / PARAMS, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{folder} is not a tuned lens: it has no {PARAMS}") from None
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file
        raise UserError(f"{folder / PARAMS} could not be read ({type(err).__name__}): retrain or re-download the lens") from None
    try:
        weight = torch.stack([state[f"{i}.weight"] for i in range(n)]).float()
        bias = (torch.stack([state[f"{i}.bias"] for i in range(n)]).float() if config.get("bias", True)
                else torch.zeros(n, d))
    except KeyError as err:
        raise UserError(f"{folder / PARAMS} lacks translator {err}: it is not a {n}-layer tuned lens") from None
    return TunedLens(weight, bias, config)


def lens_for(handle: ModelHandle, name: str = "logit", path: Path | str | None = None) -> Lens:
    """The lens called ``name`` for this model: "logit", or "tuned" from ``path`` or this model's trained one."""
    from core.lenses.base import LogitLens

    if name not in LENS_NAMES:
        raise UserError(f"unknown lens '{name}': choose one of {', '.join(LENS_NAMES)}")
    if name == "logit":
        if path is not None:
            raise UserError("--lens-path goes with --lens tuned")
        return LogitLens()
    folder = Path(path) if path is not None else default_lens_dir(handle)
    if path is None and not (folder / CONFIG).is_file():
        raise UserError(f"no tuned lens for {handle.spec} yet: train one with `python -m core tuned-lens --model "
                        f"{handle.spec}` (or on the Logit lens page), or give a folder with --lens-path")
    return load_tuned_lens(folder, handle)
