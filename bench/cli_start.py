"""A whole `python -m core lens` process against a plain-transformers process doing the least it can.

    python bench/cli_start.py [--repeats 3] [--model gemma-3-270m]

(a) plain transformers: a fresh Python that imports transformers, loads the tokenizer and the model from
    the converted folder the CLI uses (`AutoTokenizer` / `AutoModelForCausalLM.from_pretrained`) and runs
    one forward pass of the lens's default prompt;
(b) `python -m core lens --json --prompt <the same prompt>`: the lens at its last position, every layer;
(c) the same command through `core.cli.main` from `python -c`, which builds the tokenizer in its own process
    instead of a second one (core.models.prefetch), and leaves the same way: what the prefetch saves is c - b;
(d) as (c), leaving through the interpreter's teardown (`sys.exit`): what skipping it saves is d - c.
All run with the same cache already built (the default model's conversion is done beforehand). Prints
the median wall-clock seconds of each over the repeats (runs alternate), and the ratio b/a (target
<= 0.7, issue 17), with the machine's load average, since on a shared machine timings are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PLAIN = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompt = sys.argv[1], sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
with torch.inference_mode():
    model(**tokenizer(prompt, return_tensors="pt"))
"""


def seconds(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from core.analyses.lens import Settings
    from core.models.loading import resolve_spec

    _, folder = resolve_spec(args.model)  # converts once if needed; both processes then read this folder
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    plain_cmd = [sys.executable, "-c", PLAIN, str(folder), Settings().prompt]
    core_cmd = [sys.executable, "-m", "core", "lens", "--json", "--model", args.model, "--prompt", Settings().prompt]
    call = "import sys; from core.cli import main, exit_without_teardown; "
    unprefetched_cmd = [sys.executable, "-c", call + "exit_without_teardown(main(sys.argv[1:]))", *core_cmd[3:]]
    torn_down_cmd = [sys.executable, "-c", call + "sys.exit(main(sys.argv[1:]))", *core_cmd[3:]]
    seconds(core_cmd, env)  # warm the page cache for all (same weights file)
    runs = {"a": [], "b": [], "c": [], "d": []}
    for _ in range(args.repeats):
        for key, cmd in zip(runs, (plain_cmd, core_cmd, unprefetched_cmd, torn_down_cmd)):
            runs[key].append(seconds(cmd, env))
    a, b, c, d = (statistics.median(r) for r in runs.values())
    print(json.dumps({
        "model": args.model, "cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 2),
        "a_plain_transformers_process_s": round(a, 2), "b_core_lens_process_s": round(b, 2),
        "c_without_prefetch_s": round(c, 2), "d_without_prefetch_with_teardown_s": round(d, 2),
        "ratio_b_over_a": round(b / a, 3), "ratio_c_over_a": round(c / a, 3), "ratio_d_over_a": round(d / a, 3),
        **{f"runs_{key}": [round(x, 2) for x in r] for key, r in runs.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
