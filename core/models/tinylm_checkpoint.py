"""TinyLM checkpoints on disk: one folder, written atomically so a crash never leaves half of one.

Layout of `<dir>`:
    tinylm.json        {"format", "config": TinyLMConfig fields, ...training metadata}
    model.safetensors  the weights (the tied unembedding stored once)
    tokenizer.json     + tokenizer_config.json, as PreTrainedTokenizerFast.save_pretrained writes them

Default location: $LAYERSCOPE_HOME/checkpoints/<name>, LAYERSCOPE_HOME defaulting to ~/.cache/layerscope.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import load_model, save_model
from transformers import PreTrainedTokenizerFast

from core.errors import UserError
from core.models.tinylm import TinyLM, TinyLMConfig

FORMAT = "layerscope-tinylm/1"
META_FILE = "tinylm.json"
WEIGHTS_FILE = "model.safetensors"


def checkpoints_dir() -> Path:
    home = Path(os.environ.get("LAYERSCOPE_HOME") or Path.home() / ".cache" / "layerscope").expanduser()
    return home / "checkpoints"


def checkpoint_path(name_or_path: str | os.PathLike) -> Path:
    """A bare name (letters, digits, . _ -) means checkpoints_dir()/name; anything with a slash is a path."""
    text = str(name_or_path)
    if "/" in text or os.sep in text:
        return Path(text).expanduser()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", text):
        raise UserError(f"checkpoint name {text!r} may only use letters, digits, '.', '_' and '-'")
    return checkpoints_dir() / text


def list_checkpoints() -> list[Path]:
    """Checkpoint folders under checkpoints_dir(), newest first."""
    root = checkpoints_dir()
    found = [p for p in root.glob(f"*/{META_FILE}")] if root.is_dir() else []
    return [p.parent for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def save_checkpoint(path, model: TinyLM, tokenizer: PreTrainedTokenizerFast, meta: dict | None = None) -> Path:
    """Write model, tokenizer and metadata to `path` (a name or a folder), replacing any old one."""
    target = checkpoint_path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.writing-", dir=target.parent))
    try:
        save_model(model, str(staging / WEIGHTS_FILE))
        tokenizer.model_max_length = model.config.context_length
        tokenizer.save_pretrained(str(staging))
        record = {"format": FORMAT, "config": model.config.to_dict(), **(meta or {})}
        (staging / META_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
        # Directories cannot be replaced in one rename when the target exists: move the old one
        # aside first. At every moment `target` is either the complete old or the complete new one.
        retired = None
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, retired / target.name)
        os.replace(staging, target)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load_checkpoint(path, device: str = "cpu") -> tuple[TinyLM, PreTrainedTokenizerFast, dict]:
    """(model in eval mode, tokenizer, metadata) from a checkpoint folder or name."""
    folder = checkpoint_path(path)
    meta_file = folder / META_FILE
    if not meta_file.is_file():
        raise UserError(f"{str(folder)!r} is not a TinyLM checkpoint (no {META_FILE} in it)")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        model = TinyLM(TinyLMConfig(**meta["config"]))
        load_model(model, str(folder / WEIGHTS_FILE), device=device)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise UserError(f"cannot load checkpoint {str(folder)!r}: {err}") from None
    return model.to(device).eval(), tokenizer, meta
