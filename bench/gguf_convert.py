"""First start of the default model on an empty cache: GGUF conversion, model load, first lens.

  python bench/gguf_convert.py [--model gemma-3-270m] [--old]

Each measurement runs in a fresh process with an empty temporary LAYERSCOPE_HOME, so imports
and the conversion are paid as a user's first start pays them:
(1) ``gguf_cache.convert`` (the direct path: ``gguf_direct``),
(2) the following ``load_model(model)``, which reads the converted folder,
(3) a first ``run_lens`` of one prompt.
``--old`` also times transformers' GGUF path (``convert_into(..., method="transformers")``) and
prints the ratio old / new. Prints JSON: wall and CPU seconds per step (CPU seconds are the
figure to trust on a busy shared machine), ratios, peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIRST_START = """
import json, os, sys, time
def clock():  # (wall, CPU of this process): CPU seconds stay meaningful on a shared, busy machine
    t = os.times()
    return time.perf_counter(), t.user + t.system
marks = [clock()]
from core.lens import run_lens
from core.models import gguf_cache, load_model
from core.models.loading import EMBEDDED
marks.append(clock())
gguf = EMBEDDED[sys.argv[1]][1]()
folder = gguf_cache.convert(gguf)
marks.append(clock())
handle = load_model(sys.argv[1])
marks.append(clock())
run_lens(handle, "The capital of France is")
marks.append(clock())
result = {"method": json.loads((folder / gguf_cache.MARKER).read_text())["method"]}
for name, (w0, c0), (w1, c1) in zip(("imports", "convert", "load_model", "first_lens"), marks, marks[1:]):
    result[name + "_s"], result[name + "_cpu_s"] = w1 - w0, c1 - c0
import resource
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""

OLD_CONVERT = """
import json, os, resource, sys, tempfile, time
def clock():
    t = os.times()
    return time.perf_counter(), t.user + t.system
w0, c0 = clock()
from core.models import gguf_cache
from core.models.loading import EMBEDDED
w1, c1 = clock()
gguf = EMBEDDED[sys.argv[1]][1]()
with tempfile.TemporaryDirectory(dir=gguf_cache.cache_home()) as folder:
    gguf_cache.convert_into(gguf, folder, method="transformers")
w2, c2 = clock()
print(json.dumps({"imports_s": w1 - w0, "imports_cpu_s": c1 - c0, "convert_s": w2 - w1, "convert_cpu_s": c2 - c1,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def fresh_process(code: str, model: str) -> dict:
    """Run ``code`` in a new interpreter on an empty cache; its JSON line, plus the process's wall time."""
    with tempfile.TemporaryDirectory(prefix="layerscope-bench-") as home:
        env = dict(os.environ, LAYERSCOPE_HOME=home, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   PYTHONPATH=str(ROOT))
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code, model], cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_total_s"] = wall
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m", help="an embedded model (gemma-3-270m, smollm2-135m)")
    parser.add_argument("--old", action="store_true", help="also time transformers' GGUF conversion")
    args = parser.parse_args()

    new = fresh_process(FIRST_START, args.model)
    report = {"model": args.model, "threads": os.cpu_count(), "first_start": new}
    if args.old:
        old = fresh_process(OLD_CONVERT, args.model)
        report["old_transformers_convert"] = old
        report["ratio_convert_old_over_new"] = round(old["convert_s"] / new["convert_s"], 1)
        report["ratio_convert_cpu_old_over_new"] = round(old["convert_cpu_s"] / new["convert_cpu_s"], 1)
        old_first = old["convert_s"] + new["load_model_s"] + new["first_lens_s"]
        new_first = new["convert_s"] + new["load_model_s"] + new["first_lens_s"]
        report["first_start_old_s"] = round(old_first, 1)
        report["first_start_new_s"] = round(new_first, 1)
        report["ratio_first_start_old_over_new"] = round(old_first / new_first, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
