"""What keeping results costs: an analysis's time on the default model next to storing its result, in one process.

  python bench/store.py [--model gemma-3-270m] [--repeats 3]

For the pages' default runs of the Logit lens, the direct logit attribution and the translation lens (10 words):
seconds of the public ``run`` (best of ``--repeats``), seconds of ``ResultStore.put`` of its result (the settings'
key, the equivalent command line, the file written and fsynced, its row inserted: what the app does after each
run; best of ``--repeats``) and of ``get`` (a link's lookup: what the app does instead of the run), the file's
size, and put / run (target ≤ 5%). The store is a temporary one: the user's History is left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core.analyses import attribute, lens, translation  # noqa: E402
from core.models import load_model  # noqa: E402
from core.results.keys import analysis_version, settings_key  # noqa: E402
from core.results.store import ResultStore  # noqa: E402


def best_of(repeats: int, fn) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    handle = load_model(args.model)
    fingerprint = handle.fingerprint()
    cases = [  # the pages' defaults
        ("lens", lens.run, lens.Settings(top_k=5)),
        ("attribute", attribute.run, attribute.Settings()),
        ("translation", translation.run, translation.Settings(limit=10)),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as home:
        store = ResultStore(home)
        for analysis, run, settings in cases:
            run_s, result = best_of(args.repeats, lambda: run(handle, settings))
            put_s, id = best_of(args.repeats, lambda: store.put(analysis, settings, fingerprint, result, run_s,
                                                               model=handle.spec, link="bench"))
            key = settings_key(analysis, settings, analysis_version(analysis))
            get_s, _ = best_of(args.repeats, lambda: store.get(store.find(analysis, key, fingerprint,
                                                                         analysis_version(analysis))))
            rows.append({"analysis": analysis, "run_s": round(run_s, 3), "put_s": round(put_s, 4),
                         "get_s": round(get_s, 4), "file_kb": round(store.entry(id).size_bytes / 1024, 1),
                         "put_over_run": round(put_s / run_s, 4)})
    print(json.dumps({"model": handle.spec, "repeats": args.repeats, "load_average": os.getloadavg()[0],
                      "cases": rows}, indent=1))
    for row in rows:
        print(f"{row['analysis']:12s} run {row['run_s']:7.3f} s · put {row['put_s'] * 1000:6.1f} ms "
              f"({row['put_over_run']:.1%} of the run; target ≤ 5%) · get {row['get_s'] * 1000:6.1f} ms · "
              f"{row['file_kb']} KB", file=sys.stderr)


if __name__ == "__main__":
    main()
