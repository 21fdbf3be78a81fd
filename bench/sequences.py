"""Speed of the Sequence continuation analysis, measured in one process after the model is loaded.

  python bench/sequences.py [--models gemma-3-270m smollm2-135m] [--prompts 8] [--threads 0] [--naive-heads 6]

Per model, on the numerals task (bare, mean ablation), each a call of the public ``run``:
(a) method "ablation": the prompts, the clean and corrupted runs, and exact ablation of EVERY head and
    MLP (all layers × heads), batched copies resuming from each component's layer;
(b) method "attribution": the same prompts, attribution patching of every head and MLP (one forward
    and one backward pass);
(c) method "auto" (the page's default): attribution, then exact ablation of every component when its
    estimated cost fits a minute;
(d) a naive sweep, one full forward pass per component (core.interventions.forward_with), timed on
    --naive-heads heads and scaled to every head and MLP; its ratio to (a)'s sweep alone (``seconds``
    of the exact sweep, without building the prompts);
(e) the Spearman correlation between (a) and (b) over every head.
Wall seconds and process CPU seconds are both printed: on a shared machine wall time depends on the
load (printed too); CPU seconds with one thread are what an idle core would take.
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

import torch  # noqa: E402

from core import interventions as iv  # noqa: E402
from core.analyses import sequences as sq  # noqa: E402
from core.models import embedded_models, load_model  # noqa: E402


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, round(time.perf_counter() - wall, 2), round(time.process_time() - cpu, 2)


def naive_sweep_s(handle, settings: sq.Settings, n_heads: int) -> tuple[float, float, int]:
    """(wall, cpu) seconds of one full forward pass per head on ``n_heads`` heads, and how many were timed."""
    prep = sq.prepare(handle, sq.build_prompts(handle, settings), settings.ablation, settings.seed)
    heads = iv.heads(handle)
    some = heads[:: max(1, len(heads) // n_heads)][:n_heads]
    _, wall, cpu = timed(lambda: [handle.forward_with(prep.batch, prep.values, [c]) for c in some])
    return wall, cpu, len(some)


def bench(model: str, n_prompts: int, naive_heads: int) -> dict:
    start = time.perf_counter()
    handle = load_model(model)
    load_s = time.perf_counter() - start
    settings = sq.Settings(task="numerals", n=n_prompts)
    sq.run(handle, sq.Settings(task="numerals", n=1, method="attribution"))  # warm-up

    load_before = os.getloadavg()[0]
    exact, exact_wall, exact_cpu = timed(lambda: sq.run(handle, settings))
    attribution, attr_wall, attr_cpu = timed(lambda: sq.run(handle, sq.Settings(task="numerals", n=n_prompts, method="attribution")))
    auto, auto_wall, auto_cpu = timed(lambda: sq.run(handle, sq.Settings(task="numerals", n=n_prompts, method="auto", top_k=12)))
    naive_wall, naive_cpu, measured = naive_sweep_s(handle, settings, naive_heads)
    load_after = os.getloadavg()[0]

    sweep = exact.sweeps.exact
    components = handle.n_layers * (handle.n_heads + 1)
    scale = components / measured
    rho = sq.spearman(sweep.heads["change"], attribution.sweeps.attribution.heads["change"])
    prompts = exact.sweeps.prompts
    return {
        "model": model,
        "heads": f"{handle.n_layers} x {handle.n_heads} = {handle.n_layers * handle.n_heads}",
        "prompt_pairs": len(prompts.pairs),
        "tokens_per_prompt": prompts.n_tokens,
        "kept": prompts.summary(),
        "load_s": round(load_s, 1),
        "a_run_ablation_wall_s": exact_wall,
        "a_run_ablation_cpu_s": exact_cpu,
        "a_exact_sweep_only_wall_s": round(sweep.seconds, 2),
        "b_run_attribution_wall_s": attr_wall,
        "b_run_attribution_cpu_s": attr_cpu,
        "c_run_auto_wall_s": auto_wall,
        "c_run_auto_cpu_s": auto_cpu,
        "c_auto_exact_estimate_s": round(auto.sweeps.exact_estimate_s, 1),
        "c_auto_exact_complete": auto.sweeps.exact_is_complete,
        "d_naive_one_pass_per_component_wall_s": round(naive_wall * scale, 2),
        "d_naive_one_pass_per_component_cpu_s": round(naive_cpu * scale, 2),
        "d_naive_measured_heads": measured,
        "ratio_d_over_a_sweep_wall": round(naive_wall * scale / max(sweep.seconds, 1e-9), 2),
        "e_spearman_heads": round(rho, 3),
        "full_logit_diff": round(sweep.full_logit_diff, 3),
        "top_heads_mean_ablation": [f"{r.component} {r.pct_of_full:.0f}%" for r in sweep.heads.nsmallest(5, "change").itertuples()],
        "headline_head_auto": auto.sweeps.best_head()["component"],
        "loadavg_1min_before_after": [round(load_before, 1), round(load_after, 1)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gemma-3-270m", "smollm2-135m"])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--naive-heads", type=int, default=6)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    installed = set(embedded_models())
    reports = []
    for model in args.models:
        if model in {"gemma-3-270m", "smollm2-135m"} and model not in installed:
            reports.append({"model": model, "skipped": "not installed"})
            continue
        reports.append(bench(model, args.prompts, args.naive_heads))
    print(json.dumps({"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "results": reports}, indent=2,
                     ensure_ascii=False))


if __name__ == "__main__":
    main()
