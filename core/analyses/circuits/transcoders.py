"""Per-layer transcoders for one model: where they live, reading a set, and training one here on CPU.

A set is a folder with one dictionary folder per block (any layout ``core.features.load_dictionary`` reads;
ours are ``layer_00`` … in Gemma Scope 2's layout), each a transcoder from that block's ``mlp_in`` (after the MLP's
pre-norm) to its ``mlp_out`` (what the MLP adds to the residual, after any post-norm). The dictionaries number
layers as ``core.features`` does (block i is layer i + 1). The default set of a model lives under
``$LAYERSCOPE_HOME/transcoders/<model>-<weights fingerprint>``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from core.errors import UserError
from core.features import Dictionary, TrainConfig, load_dictionary, save_dictionary, train_dictionary
from core.models.gguf_cache import cache_home
from core.models.handle import ModelHandle
from core.models.sites import Site
from core.progress import Progress, part, quiet


@dataclass
class Transcoders:
    """One transcoder per block (``layers[i]`` replaces block i's MLP) and what identifies the set."""

    layers: list[Dictionary]
    scan: str  # a name for the set (its folder's name)
    path: str = ""
    folders: list[str] = field(default_factory=list)  # each block's dictionary folder, where read from files

    def quality(self) -> list[dict]:
        """Per block: what the files say of the held-out fit (fvu, l0, dead_fraction), where they say it."""
        return [{"layer": i, **{k: d.info.get(k) for k in ("fvu", "l0", "dead_fraction", "tokens")}, "width": d.width}
                for i, d in enumerate(self.layers)]


def default_dir(handle: ModelHandle) -> Path:
    """Where this model's own transcoders live: $LAYERSCOPE_HOME/transcoders/<model>-<fingerprint>."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(handle.spec.rstrip("/")).name or handle.spec)[:60]
    return cache_home() / "transcoders" / f"{slug}-{handle.fingerprint()[:12]}"


def available(handle: ModelHandle) -> Path | None:
    """The default set's folder when every block has a transcoder there, else None."""
    folder = default_dir(handle)
    return folder if all((folder / _name(i)).is_dir() for i in range(handle.n_layers)) else None


def _name(block: int) -> str:
    return f"layer_{block:02d}"


def load_transcoders(path, handle: ModelHandle) -> Transcoders:
    """The transcoders in the folder ``path`` for every block of ``handle``'s model; one ``UserError`` line when a file
    is for another model or width, is not a transcoder from mlp_in to mlp_out, or a block has none."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"{path}: no such folder; give the folder holding one transcoder folder per layer")
    found: dict[int, Dictionary] = {}
    where: dict[int, str] = {}
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        d = load_dictionary(child, expect_model=handle.spec, expect_d_model=handle.d_model)
        if d.kind != "transcoder" or d.site != "mlp_in":
            raise UserError(f"{child}: a {d.kind} reading {d.site}; an attribution graph needs transcoders from mlp_in "
                            "to mlp_out (Gemma Scope's 'transcoder' folders)")
        if d.layer is None or not 1 <= d.layer <= handle.n_layers:
            raise UserError(f"{child}: reads layer {d.layer}, which {handle.spec} (blocks 1..{handle.n_layers}) does not "
                            "have: these transcoders are for another model")
        if d.layer - 1 in found:
            raise UserError(f"{child}: a second transcoder for block {d.layer - 1}; keep one per layer in {folder}")
        found[d.layer - 1], where[d.layer - 1] = d, str(child)
    missing = [i for i in range(handle.n_layers) if i not in found]
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (" …" if len(missing) > 8 else "")
        raise UserError(f"{folder}: no transcoder for block{'s' if len(missing) > 1 else ''} {shown} of {handle.spec} "
                        f"({handle.n_layers} blocks): an attribution graph replaces every MLP")
    blocks = range(handle.n_layers)
    return Transcoders([found[i] for i in blocks], folder.name, str(folder), [where[i] for i in blocks])


# -- training -------------------------------------------------------------------------------------------------


def corpus_texts() -> list[str]:
    """The shipped text the default transcoders are trained on: Shakespeare, the mixed quanta corpus, counting lines."""
    import json

    assets = Path(__file__).resolve().parents[3] / "assets"
    texts = [(assets / "corpora" / "shakespeare.txt").read_text(encoding="utf-8")]
    texts += [json.loads(line)["text"] for line in (assets / "quanta" / "corpus.jsonl").read_text(encoding="utf-8")
              .splitlines() if line.strip()]
    texts.append((assets / "corpora" / "synthetic.txt").read_text(encoding="utf-8"))
    return texts


def activations(handle: ModelHandle, texts: Sequence[str], n_tokens: int, context: int = 128, batch: int = 8,
                progress: Progress = quiet) -> tuple[torch.Tensor, torch.Tensor]:
    """Every block's (mlp_in, mlp_out) on ``n_tokens`` tokens of ``texts`` cut into ``context``-token windows (the first
    position of each window, where the residual is huge, left out): float16 [layer, token, d_model] each."""
    ids: list[int] = []
    for text in texts:
        ids += handle.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= n_tokens * context / (context - 1) + context:
            break
    bos = handle.tokenizer.bos_token_id
    windows = [([bos] if bos is not None else []) + ids[i:i + context - 1] for i in range(0, len(ids), context - 1)]
    windows = [w for w in windows if len(w) == len(windows[0])]
    L, d = handle.n_layers, handle.d_model
    x = torch.zeros(L, n_tokens, d, dtype=torch.float16)
    y = torch.zeros(L, n_tokens, d, dtype=torch.float16)
    sites = [Site(kind, i) for i in range(L) for kind in ("mlp_in", "mlp_out")]
    filled = 0
    for start in range(0, len(windows), batch):
        if filled >= n_tokens:
            break
        seen = handle.record(handle.batch_of(windows[start:start + batch]), sites)
        for i in range(L):
            xi = seen[Site("mlp_in", i)][:, 1:].reshape(-1, d)[: n_tokens - filled]
            x[i, filled:filled + len(xi)] = xi.to(torch.float16).cpu()
            y[i, filled:filled + len(xi)] = seen[Site("mlp_out", i)][:, 1:].reshape(-1, d)[: len(xi)].to(torch.float16).cpu()
        filled += len(xi)
        progress(min(filled / n_tokens, 1.0), f"activations: {filled:,} of {n_tokens:,} tokens")
    if filled < n_tokens:
        raise UserError(f"the texts hold only {filled:,} tokens; ask for at most that many")
    return x, y


def train_transcoders(handle: ModelHandle, out: Path | None = None, *, width: int = 2048, k: int = 32,
                      n_tokens: int = 65536, epochs: int = 4, batch_size: int = 1024, seed: int = 0,
                      texts: Sequence[str] | None = None, progress: Progress | None = None) -> Transcoders:
    """Train a TopK transcoder for every block on ``n_tokens`` tokens (``corpus_texts`` by default) and save the set in
    ``out`` (default: ``default_dir``), atomically: a set is complete or absent. -> the set, each dictionary's ``info``
    holding its held-out FVU, L0, dead fraction and training seconds."""
    progress = progress or quiet
    out = Path(out) if out is not None else default_dir(handle)
    started = time.perf_counter()
    x, y = activations(handle, texts or corpus_texts(), n_tokens, progress=part(progress, 0.0, 0.2))
    config = TrainConfig(width=width, k=k, kind="transcoder", batch_size=batch_size, epochs=epochs,
                         buffer_tokens=max(batch_size, n_tokens), held_out_tokens=min(4096, n_tokens // 8),
                         total_tokens=n_tokens, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    layers = []
    try:
        for i in range(handle.n_layers):
            step = part(progress, 0.2 + 0.8 * i / handle.n_layers, 0.2 + 0.8 * (i + 1) / handle.n_layers)
            chunks = [(x[i, s:s + 8192].float(), y[i, s:s + 8192].float()) for s in range(0, n_tokens, 8192)]
            t0 = time.perf_counter()
            result = train_dictionary(chunks, config, site="mlp_in", layer=i + 1, model=handle.spec,
                                      d_model=handle.d_model, progress=step)
            d = replace(result.dictionary, info={**result.dictionary.info, "seconds": round(time.perf_counter() - t0, 1)})
            save_dictionary(d, staging / _name(i))
            layers.append(d)
            step(1.0, f"block {i}: fvu {result.fvu:.3f}, L0 {result.l0:.1f}")
        if out.exists():
            shutil.rmtree(out)
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress(1.0, f"{handle.n_layers} transcoders in {time.perf_counter() - started:.0f} s")
    return Transcoders(layers, out.name, str(out))
