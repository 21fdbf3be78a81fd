"""GGUF file -> safetensors model folder, converted once and cached.

Llama and Gemma 3 files are converted directly (``gguf_direct``: our own header reader,
``gguf.quants`` de-quantization, a ``tokenizers`` tokenizer), about 8 s for the default Gemma 3
270M on a 2-core CPU; any other architecture goes through transformers' GGUF loader, which
gives the same folder in about 80 s. Either way the result is a normal Hugging Face folder
(model + tokenizer) in the user cache, and every later load takes a few seconds.

The folder is written to a temporary sibling and renamed into place, so an interrupted
conversion never leaves a half-written cache; a folder without its completion marker, or with
a file whose size no longer matches it, is rebuilt. Processes converting the same file at the
same time take turns on a lock file: the second waits, then reuses the first one's folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Iterator

from core.errors import UserError
from core.progress import Progress

MARKER = "layerscope-conversion.json"
FORMAT_VERSION = 2  # 2: written by gguf_direct; a version-1 folder (transformers-written) is converted afresh


def cache_home() -> Path:
    """Root of everything layerscope caches (``$LAYERSCOPE_HOME``, default ~/.cache/layerscope)."""
    return Path(os.environ.get("LAYERSCOPE_HOME") or Path.home() / ".cache" / "layerscope")


def _fingerprint(gguf_path: Path) -> str:
    stat = gguf_path.stat()
    key = f"{gguf_path.resolve()}|{stat.st_size}|{int(stat.st_mtime)}|v{FORMAT_VERSION}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def cached_folder(gguf_path: Path) -> Path:
    return cache_home() / "converted" / f"{gguf_path.stem}-{_fingerprint(gguf_path)}"


def is_complete(folder: Path) -> bool:
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
        return all((folder / name).is_file() and (folder / name).stat().st_size == size for name, size in info["files"].items())
    except (ValueError, KeyError, OSError):
        return False


def convert(gguf_path: Path, progress: Progress | None = None) -> Path:
    """Return a safetensors folder for ``gguf_path``, converting it first if needed."""
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise UserError(f"GGUF file not found: {gguf_path}")
    target = cached_folder(gguf_path)
    if is_complete(target):
        return target
    report = _rising(progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _conversion_lock(target, report):
        if is_complete(target):  # another process converted it while we waited
            report(1.0, "converted by another process: reusing its folder")
            return target
        return _convert_locked(gguf_path, target, report)


def _convert_locked(gguf_path: Path, target: Path, report: Progress) -> Path:
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        os.chmod(work, 0o755)  # mkdtemp makes it private; a team server shares the cache
        started = time.monotonic()
        method = convert_into(gguf_path, work, progress=report)
        files = {p.name: p.stat().st_size for p in work.iterdir() if p.is_file()}
        (work / MARKER).write_text(json.dumps({
            "source": str(gguf_path), "format": FORMAT_VERSION, "method": method,
            "seconds": round(time.monotonic() - started, 1), "files": files,
        }))
        report(0.99, "moving the converted folder into the cache")
        if target.exists():  # a stale or broken cache: replace it
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(work, target)
        except OSError:
            if not is_complete(target):  # someone else finished first only if theirs is whole
                raise
        report(1.0, f"converted in {time.monotonic() - started:.0f} s")
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def convert_into(gguf_path: Path, folder: Path, method: str = "auto", progress: Progress | None = None) -> str:
    """Write the Hugging Face files for ``gguf_path`` into the existing ``folder``; no caching.

    ``method``: "direct" (``gguf_direct``), "transformers" (its GGUF loader, the reference the
    direct path is tested against) or "auto" (direct where supported). Returns the one used.
    """
    from core.models import gguf_direct
    from core.models.gguf_reader import UnsupportedGGUF, read_gguf

    gguf_path, folder, report = Path(gguf_path), Path(folder), _rising(progress)
    report(0.0, f"first use of {gguf_path.name}: reading its header")
    header_error, reason = None, None
    if method != "transformers":
        try:
            gguf = read_gguf(gguf_path)
        except UnsupportedGGUF as err:  # transformers may still read it; if not, this is the clearer message
            header_error = reason = str(err)
        except ValueError as err:  # empty, truncated, foreign: no reader would do better
            raise _unreadable(gguf_path, err) from None
        else:
            try:
                reason = gguf_direct.unsupported_reason(gguf)
                if reason is None:
                    gguf_direct.convert_direct(gguf, folder, report)
                    return "direct"
            except (ValueError, KeyError, IndexError, NotImplementedError) as err:
                raise _unreadable(gguf_path, err) from None
            finally:
                gguf.close()
        if method == "direct":
            raise _unreadable(gguf_path, header_error) if header_error else UserError(f"{gguf_path}: {reason}")
    _convert_with_transformers(gguf_path, folder, report, reason, header_error)
    return "transformers"


def _convert_with_transformers(gguf_path: Path, work: Path, report: Progress, reason: str | None,
                               header_error: str | None) -> None:
    """transformers' GGUF loader: every architecture it knows, slowly (about a minute for 262k tokens)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    why = f" ({reason})" if reason and not header_error else ""
    try:
        report(0.02, f"reading the tokenizer with transformers{why}: about a minute, once")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        report(0.45, "de-quantizing the GGUF weights with transformers (about a minute, once)")
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except (ValueError, KeyError, IndexError, OSError, struct.error) as err:  # an empty, truncated or foreign file
        raise _unreadable(gguf_path, header_error or err) from None
    report(0.9, "writing the safetensors cache")
    # The GGUF quantizer marker makes save_pretrained refuse; the weights are plain floats now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(work)
    tokenizer.save_pretrained(work)


def _unreadable(gguf_path: Path, err) -> UserError:
    text = str(err) if isinstance(err, str) else (str(err).splitlines() or [type(err).__name__])[0]
    return UserError(f"{gguf_path} could not be read as a GGUF model ({text}): check the file")


def _rising(progress: Progress | None) -> Progress:
    """The caller's callback, fed fractions in [0, 1] that never go back."""
    if progress is None:
        return lambda fraction, message: None
    highest = 0.0

    def report(fraction: float, message: str) -> None:
        nonlocal highest
        highest = min(1.0, max(highest, fraction))
        progress(highest, message)

    return report


@contextlib.contextmanager
def _conversion_lock(target: Path, report: Progress) -> Iterator[None]:
    """Hold an exclusive lock for ``target``'s conversion, across processes (fcntl; none on Windows).

    The lock files live in their own folder: beside the target they would litter the cache
    folder listing, and deleting them after use would let two processes lock different files.
    """
    try:
        import fcntl
    except ImportError:  # Windows: the rename is still atomic, at worst both convert
        yield
        return
    locks = cache_home() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{target.name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report(0.0, "another process is converting this file: waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
