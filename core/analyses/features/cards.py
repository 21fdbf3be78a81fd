"""What is known about every feature of a dictionary, computed once per dictionary and model, cached on disk.

Two cards, each one safetensors file written atomically (a temporary sibling renamed into place) under
$LAYERSCOPE_HOME/feature_cards/<weights hash>-<model fingerprint>/:

tokens    each feature's decoder direction read through the logit lens (the model's final norm and
          unembedding, ``handle.decode``): its top promoted and most suppressed tokens. An ``attn_z``
          dictionary's directions are first mapped through the attention's output projection.
          ``promoted_ids``/``suppressed_ids`` [width, TOP] int64, ``promoted_logits``/``suppressed_logits``.
contexts  (one per site and layer the weights are read at) over a fixed sample of the shipped corpora (``CONTEXT_WINDOWS`` windows of ``CONTEXT_LEN`` tokens):
          each feature's top-activating (window, position) pairs, its density (fraction of non-BOS tokens where
          it is active) and a histogram of its activations on log10 bins. ``windows`` [n, len] int64 (−1 pads),
          ``top_acts``/``top_window``/``top_position`` [width, TOP_CONTEXTS], ``density`` [width],
          ``histogram`` [width, BINS], ``bin_edges`` [BINS + 1], ``tokens`` (one number).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch

from core.analyses.features.wiring import excluded, model_site, read, wire
from core.features import Dictionary
from core.models.gguf_cache import cache_home
from core.models.handle import ModelHandle
from core.progress import Progress, quiet

VERSION = 1
TOP = 10
TOP_CONTEXTS = 8
CONTEXT_WINDOWS = 160
CONTEXT_LEN = 64
BINS = 32
LOG_RANGE = (-3.0, 5.0)  # log10 of an activation: bins of a quarter decade
_HASHES: dict = {}


def weights_file(folder: Path) -> Path:
    for name in ("params.safetensors", "params.npz", "sae_weights.safetensors", "sae.safetensors"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(folder)


def dictionary_hash(folder: Path) -> str:
    """sha256 of the dictionary's weight file (16 hex digits), remembered by path, size and modification time."""
    file = weights_file(Path(folder))
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()[:16]
    return _HASHES[key]


def card_dir(handle: ModelHandle, folder: Path) -> Path:
    """The cards of the weights in ``folder`` on this model (the tokens card depends on the decoder only)."""
    return cache_home() / "feature_cards" / f"{dictionary_hash(folder)}-{handle.fingerprint()[:8]}-v{VERSION}"


def contexts_file(handle: ModelHandle, dictionary: Dictionary, folder: Path) -> Path:
    """The contexts card also depends on where the dictionary reads."""
    return card_dir(handle, folder) / f"contexts-{dictionary.site}{dictionary.layer}.safetensors"


def _load(path: Path) -> dict | None:
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception:  # a file damaged by hand: compute it again
        return None


def _save(path: Path, tensors: dict) -> None:
    """Atomic: a temporary file in the same folder, flushed, then renamed over ``path``."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, temporary)
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def directions(handle: ModelHandle, dictionary: Dictionary) -> torch.Tensor:
    """Each feature's decoder direction in the residual stream: Float[Tensor, "width d_model"]."""
    W_dec = dictionary.W_dec
    if dictionary.site_out in (None, dictionary.site) and dictionary.site == "attn_z":
        layer = model_site("attn_z", dictionary.layer, handle.n_layers).layer
        W_O = handle.weights.out_proj(layer)  # [head, head_dim, d_model]
        W_dec = W_dec @ W_O.reshape(-1, W_O.shape[-1]).to(W_dec)
    return W_dec


@torch.no_grad()
def lens_tokens(handle: ModelHandle, rows: torch.Tensor, top: int = TOP) -> dict:
    """Top promoted and suppressed tokens of directions ``rows`` [n, d_model] read through the logit lens."""
    out = {"promoted_ids": [], "promoted_logits": [], "suppressed_ids": [], "suppressed_logits": []}
    for start in range(0, len(rows), 128):
        logits = handle.decode(rows[start:start + 128].to(handle.input_device), softcap=False)[:, : len(handle.tokenizer)]
        high, low = logits.topk(top, dim=-1), logits.topk(top, dim=-1, largest=False)
        out["promoted_ids"].append(high.indices.cpu())
        out["promoted_logits"].append(high.values.cpu())
        out["suppressed_ids"].append(low.indices.cpu())
        out["suppressed_logits"].append(low.values.cpu())
    return {name: torch.cat(parts) for name, parts in out.items()}


def top_tokens(handle: ModelHandle, dictionary: Dictionary, folder: Path, progress: Progress = quiet) -> dict:
    """The tokens card of a dictionary (computed and cached on first use)."""
    path = card_dir(handle, Path(folder)) / "tokens.safetensors"
    cached = _load(path)
    if cached is not None:
        return cached
    rows, parts = directions(handle, dictionary), []
    step = 1024
    for start in range(0, len(rows), step):
        progress(start / len(rows), f"reading {len(rows):,} decoder directions through the logit lens: {start:,}")
        parts.append(lens_tokens(handle, rows[start:start + step]))
    card = {name: torch.cat([p[name] for p in parts]) for name in parts[0]}
    _save(path, card)
    return card


def context_windows(handle: ModelHandle) -> list[list[int]]:
    """The fixed sample of the shipped corpora that contexts are taken from."""
    from core.analyses.sae.corpus import training_windows

    return training_windows(handle, CONTEXT_WINDOWS * CONTEXT_LEN, CONTEXT_LEN, seed=12345)[:CONTEXT_WINDOWS]


@torch.no_grad()
def contexts(handle: ModelHandle, dictionary: Dictionary, folder: Path, progress: Progress = quiet) -> dict:
    """The contexts card of a dictionary (computed and cached on first use): one pass over the sample per batch,
    stopped at the dictionary's layer."""
    path = contexts_file(handle, dictionary, Path(folder))
    cached = _load(path)
    if cached is not None:
        return cached
    wiring = wire(dictionary, handle)
    windows = context_windows(handle)
    width = dictionary.width
    top_acts = torch.zeros(TOP_CONTEXTS, width)
    top_flat = torch.zeros(TOP_CONTEXTS, width, dtype=torch.long)
    counts, histogram, n = torch.zeros(width), torch.zeros(width * BINS), 0
    low, high = LOG_RANGE
    rows_per_batch = max(1, min(16, (1 << 25) // (CONTEXT_LEN * width)))
    for start in range(0, len(windows), rows_per_batch):
        chunk = windows[start:start + rows_per_batch]
        progress(start / len(windows), f"top-activating contexts: window {start}/{len(windows)}")
        batch = handle.batch_of(chunk, pad="right")
        values = read(handle, batch, [wiring])
        skip = excluded(handle, batch)
        acts = dictionary.encode(values[wiring.read].to(dictionary.device)).cpu()  # [b, p, width]
        acts[skip] = 0
        flat = acts.reshape(-1, width)
        n += int((~skip).sum())
        counts += (flat > 0).sum(0)
        rows, cols = flat.nonzero(as_tuple=True)
        bins = ((flat[rows, cols].log10() - low) / (high - low) * BINS).floor().clamp(0, BINS - 1).long()
        histogram.index_add_(0, cols * BINS + bins, torch.ones(len(cols)))
        best = flat.topk(min(TOP_CONTEXTS, len(flat)), dim=0)  # [k, width]
        # flat index over the whole sample: window * CONTEXT_LEN + position (windows are at most CONTEXT_LEN)
        index = best.indices // batch.input_ids.shape[1] * CONTEXT_LEN + best.indices % batch.input_ids.shape[1]
        merged_acts = torch.cat([top_acts, best.values])
        merged_flat = torch.cat([top_flat, index + start * CONTEXT_LEN])
        keep = merged_acts.topk(TOP_CONTEXTS, dim=0).indices
        top_acts, top_flat = merged_acts.gather(0, keep), merged_flat.gather(0, keep)
    padded = torch.full((len(windows), CONTEXT_LEN), -1, dtype=torch.long)
    for i, window in enumerate(windows):
        padded[i, : len(window)] = torch.tensor(window)
    card = {"windows": padded, "top_acts": top_acts.T.contiguous(), "top_window": (top_flat // CONTEXT_LEN).T.contiguous(),
            "top_position": (top_flat % CONTEXT_LEN).T.contiguous(), "density": counts / max(n, 1),
            "histogram": histogram.view(width, BINS), "bin_edges": torch.linspace(low, high, BINS + 1),
            "tokens": torch.tensor([n])}
    _save(path, card)
    progress(1.0, "contexts ready")
    return card


