"""Speed and exactness of direct logit attribution on the default model, measured in one process.

  python bench/attribute.py [--model gemma-3-270m] [--repeats 3]

For a few prompts: seconds of the public ``run`` (best of ``--repeats``) next to one plain transformers
forward of the same prompt (the model's own logits), their ratio, and max |Σ components − total| over all
prompts, with and without ``versus``. Also prints the top 5 components for " Paris" on the first prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core.analyses.attribute import Settings, run  # noqa: E402
from core.models import load_model  # noqa: E402

CASES = [  # prompt, target, versus
    ("The Eiffel Tower is in the city of", " Paris", None),
    ("The Eiffel Tower is in the city of", " Paris", " London"),
    ("The capital of Germany is", " Berlin", None),
    ("1 2 3 4 5 6 7", " ", None),
    ("When Mary and John went to the store, John gave a drink to", " Mary", " John"),
    ("def add(a, b):\n    return a +", " b", None),
]


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    handle = load_model(args.model)
    rows, worst = [], 0.0
    for prompt, target, versus in CASES:
        settings = Settings(prompt=prompt, target=target, versus=versus)
        result = run(handle, settings)
        worst = max(worst, abs(result.gap))
        seconds = best_of(args.repeats, lambda: run(handle, settings))
        batch = handle.encode([prompt])
        forward = best_of(args.repeats, lambda: handle.logits(batch))
        rows.append({"prompt": prompt, "target": target, "versus": versus, "tokens": len(result.tokens),
                     "total": round(result.total, 4), "gap": result.gap, "run_s": round(seconds, 3),
                     "forward_s": round(forward, 3), "ratio": round(seconds / forward, 2)})
        print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    paris = run(handle, Settings(prompt=CASES[0][0], target=CASES[0][1]))
    print(json.dumps({
        "model": args.model,
        "max_abs_sum_minus_total": worst,
        "median_run_s": sorted(r["run_s"] for r in rows)[len(rows) // 2],
        "top5_paris": [{"name": c.name, "value": round(c.value, 3)} for c in paris.top(5)],
    }, ensure_ascii=False))


if __name__ == "__main__":
    main()
