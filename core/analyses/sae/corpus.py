"""The text dictionaries are trained and judged on: shipped corpora as token windows, and held-out lines.

Training text is every corpus in ``TRAINING`` (files under ``assets/``; sources and licences in
``assets/corpora/README.md``), cut into windows of ``seq_len`` tokens that each begin as the tokenizer begins a
text (BOS), shuffled across corpora with a seed so that every buffer the trainer shuffles mixes kinds of text.
Evaluation text (``EVAL``) is written apart from all of it, one sequence per line, and never trained on.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterator, Sequence

from core.errors import UserError, read_text
from core.models.handle import ModelHandle

ASSETS = Path(__file__).resolve().parents[3] / "assets"
CORPORA = ASSETS / "corpora"
# name -> file; every kind of text the project ships, for variety (prose, dialogue, code, tables, languages)
TRAINING = {
    "prose": CORPORA / "prose.txt",
    "dialogue": CORPORA / "dialogue.txt",
    "languages": CORPORA / "languages.txt",
    "code": CORPORA / "code.txt",
    "reference": CORPORA / "reference.txt",
    "quanta": ASSETS / "quanta" / "corpus.jsonl",
    "shakespeare": CORPORA / "shakespeare.txt",
    "synthetic": CORPORA / "synthetic.txt",
}
# Held out: everyday sentences of other kinds than the training text (never trained on).
EVAL = (CORPORA / "lens_eval.txt", CORPORA / "features_eval.txt")
# At most this share of the windows from any one corpus (the synthetic arithmetic and Shakespeare would
# otherwise make up most of the stream).
MAX_SHARE = {"synthetic": 0.08, "shakespeare": 0.2, "quanta": 0.2}


def _read(path: Path) -> str:
    text = read_text(path)
    if path.suffix == ".jsonl":  # the quanta corpus: one {"text": …} per line, joined in order
        return "".join(json.loads(line)["text"] for line in text.splitlines() if line.strip())
    return text


def training_texts() -> dict[str, str]:
    """Every training corpus that is present, by name."""
    return {name: _read(path) for name, path in TRAINING.items() if path.is_file()}


def eval_lines(paths: Sequence[str | Path] = ()) -> list[str]:
    """Held-out sequences, one per non-empty line of each file (default: the shipped ``EVAL`` files)."""
    lines = []
    for path in [Path(p).expanduser() for p in paths] or list(EVAL):
        if not path.is_file() and path in EVAL:
            continue
        lines += [line for line in _read(path).splitlines() if line.strip()]
    if not lines:
        raise UserError(f"the evaluation text {', '.join(map(str, paths)) or 'shipped'} is empty: give at least one line")
    return lines


def _bos(handle: ModelHandle) -> list[int]:
    ids = handle.tokenizer("a", add_special_tokens=True)["input_ids"]
    bos = getattr(handle.tokenizer, "bos_token_id", None)
    return ids[:1] if ids and bos is not None and ids[0] == bos else []


def windows_of(handle: ModelHandle, text: str, seq_len: int, offset: int = 0) -> list[list[int]]:
    """``text`` cut into windows of at most ``seq_len`` tokens, each beginning with BOS (when the tokenizer adds
    one); ``offset`` shifts where the cuts fall (a second pass over a corpus sees other windows)."""
    head = _bos(handle)
    body = handle.cached(("sae:tokens", hash(text), len(text)),
                         lambda: handle.tokenizer(text, add_special_tokens=False)["input_ids"])
    step = seq_len - len(head)
    starts = range(offset % step if offset else 0, len(body), step)
    return [head + body[s:s + step] for s in starts if len(body[s:s + step]) >= 8]


def training_windows(handle: ModelHandle, tokens: int, seq_len: int = 128, seed: int = 0) -> list[list[int]]:
    """Shuffled windows from every training corpus holding at least ``tokens`` non-BOS tokens in all.

    Each corpus gives at most its ``MAX_SHARE`` of the windows; when the corpora hold fewer tokens than asked
    for, further passes cut them at other offsets."""
    texts = training_texts()
    if not texts:
        raise UserError(f"no training text found under {CORPORA}")
    rng = random.Random(seed)
    head = len(_bos(handle))
    chosen: list[list[int]] = []
    total, rounds = 0, 0
    while total < tokens and rounds < 8:
        pool: list[tuple[str, list[list[int]]]] = []
        for name, text in texts.items():
            windows = windows_of(handle, text, seq_len, offset=rounds * (seq_len // 3))
            rng.shuffle(windows)
            pool.append((name, windows))
        size = sum(len(w) for _, w in pool)
        batch: list[list[int]] = []
        for name, windows in pool:
            cap = int(MAX_SHARE.get(name, 1.0) * size) if name in MAX_SHARE else len(windows)
            batch += windows[:cap]
        rng.shuffle(batch)
        for window in batch:
            chosen.append(window)
            total += len(window) - head
            if total >= tokens:
                break
        rounds += 1
    return chosen


def batches(rows: list[list[int]], size: int) -> Iterator[list[list[int]]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]
