"""Save the JSON of every CLI command on the default model, or compare two saved runs.

A refactor that must not change any number (the model-boundary work) is checked this way: save before,
save after, compare. Timing fields (``seconds`` and the like) and paths are left out of the comparison;
everything else must be equal, floats to ``--rel`` (default 0: bit-identical).

    python bench/cli_json.py save OUT_DIR [--only lens,attribute]
    python bench/cli_json.py compare BEFORE_DIR AFTER_DIR [--rel 1e-6]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> arguments after ``python -m core``; small sizes, every analysis and its main options.
COMMANDS: dict[str, list[str]] = {
    "lens": ["lens", "--prompt", "The Eiffel Tower is in the city of", "--top-k", "5", "--track", " Paris", " London"],
    "lens_sublayer": ["lens", "--prompt", "The capital of France is", "--resolution", "sublayer", "--top-k", "3"],
    "lens_nnsight": ["lens", "--prompt", "The Eiffel Tower is in the city of", "--backend", "nnsight", "--top-k", "5"],
    "attribute": ["attribute", "--prompt", "The Eiffel Tower is in the city of", "--target", " Paris", "--versus", " London"],
    "translation": ["translation", "--source", "fr", "--target", "zh", "--limit", "12"],
    "translation_tamil": ["translation", "--source", "ta", "--target", "hi", "--limit", "8", "--shots", "2"],
    "arithmetic": ["arithmetic", "--numerals", "devanagari", "--n", "8"],
    "sequences": ["sequences", "--method", "both", "--n", "4"],
    "sequences_auto": ["sequences", "--n", "4", "--task", "months"],
    "lookup_incontext": ["lookup", "--task", "incontext", "--pairs", "4", "--n", "4", "--top-heads", "2"],
    "lookup_facts": ["lookup", "--task", "facts", "--n", "6", "--window", "3"],
    "information": ["information", "--corpus", "shakespeare", "--tokens", "120", "--concepts", "30"],
    "quanta": ["quanta", "--tokens", "24", "--documents", "2", "--clusters", "3", "--proj-dim", "256"],
    "tuned_lens": ["tuned-lens", "--train-tokens", "256", "--steps", "2"],
    "train": ["train", "--steps", "20", "--eval-every", "10", "--layers", "1", "--d-model", "32", "--heads", "2"],
}

VOLATILE = {"seconds", "elapsed_s", "path", "out", "checkpoint", "created", "folder", "cache", "time_s",
            "tokens_per_second", "tokens_per_s", "train_seconds", "eval_seconds"}


def save(out: Path, only: list[str] | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as scratch:
        for name, args in COMMANDS.items():
            if only and name not in only:
                continue
            extra = ["--out", str(Path(scratch) / name)] if args[0] in ("tuned-lens", "train") else []
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "core", *args, *extra, "--json"], cwd=ROOT, env=env,
                                  capture_output=True, text=True)
            seconds = time.perf_counter() - started
            if done.returncode:
                print(f"{name}: exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            (out / f"{name}.json").write_text(done.stdout)
            print(f"{name}: {seconds:.1f} s", file=sys.stderr)


def _diff(a, b, path: str, rel: float, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in VOLATILE:
                continue
            if key not in a or key not in b:
                out.append(f"{path}.{key}: only in {'after' if key in b else 'before'}")
                continue
            _diff(a[key], b[key], f"{path}.{key}", rel, out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} items before, {len(b)} after")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{i}]", rel, out)
    elif isinstance(a, float) and isinstance(b, float):
        same = a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= rel * max(abs(a), abs(b))
        if not same:
            out.append(f"{path}: {a!r} -> {b!r}")
    elif a != b:
        out.append(f"{path}: {a!r} -> {b!r}")


def compare(before: Path, after: Path, rel: float) -> int:
    failures = 0
    for old in sorted(before.glob("*.json")):
        new = after / old.name
        if not new.exists():
            print(f"{old.stem}: missing after")
            failures += 1
            continue
        differences: list[str] = []
        _diff(json.loads(old.read_text()), json.loads(new.read_text()), old.stem, rel, differences)
        print(f"{old.stem}: {'identical' if not differences else f'{len(differences)} differences'}")
        for line in differences[:10]:
            print("   ", line)
        failures += bool(differences)
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    s = sub.add_parser("save")
    s.add_argument("out", type=Path)
    s.add_argument("--only", default="")
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    c.add_argument("--rel", type=float, default=0.0)
    args = parser.parse_args()
    if args.verb == "save":
        save(args.out, [x for x in args.only.split(",") if x] or None)
    else:
        sys.exit(1 if compare(args.before, args.after, args.rel) else 0)


if __name__ == "__main__":
    main()
