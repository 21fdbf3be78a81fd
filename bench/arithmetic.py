"""Numerals and arithmetic on one model: accuracy per numeral system and the layer profile, with timings.

    python bench/arithmetic.py [--model gemma-3-270m] [--n 50] [--shots 4] [--op add] [--digits 1] [--lens devanagari]

Calls the public ``core.analyses.arithmetic.run`` once per ``--lens`` system (each run scores every
``--systems`` system again; the accuracy, which does not depend on ``--lens``, is printed once). Prints the
accuracy table (every system, the same problems), the mean lens probability of the answer's first
character in every system per layer for problems written in each ``--lens`` system, the first layer
where the answer is top-1, and the seconds of each phase measured in this run (the greedy answers
end with the run's last "greedy answers" progress message).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core.analyses.arithmetic import Settings, run  # noqa: E402
from core.analyses.arithmetic.numerals import SYSTEM_KEYS  # noqa: E402
from core.models import load_model  # noqa: E402


def timed_run(handle, settings: Settings):
    """The run, its total seconds and the seconds of its greedy phase (from the progress messages)."""
    start = time.perf_counter()
    greedy_done = [start]

    def progress(fraction: float, message: str) -> None:
        if message.startswith("greedy answers"):
            greedy_done[0] = time.perf_counter()

    result = run(handle, settings, progress)
    end = time.perf_counter()
    return result, end - start, greedy_done[0] - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--op", default="add")
    parser.add_argument("--digits", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--surround", default="none")
    parser.add_argument("--lens", nargs="*", default=["devanagari"], help="prompt systems for the layer profile")
    parser.add_argument("--systems", nargs="*", default=list(SYSTEM_KEYS), help="systems to score")
    args = parser.parse_args()

    start = time.perf_counter()
    handle = load_model(args.model)
    print(f"model {handle.spec}: {handle.n_layers} layers, loaded in {time.perf_counter() - start:.1f} s")
    lo, hi = Settings.digit_range(args.digits)
    settings = Settings(op=args.op, lo=lo, hi=hi, n=args.n, shots=args.shots, seed=args.seed, surround=args.surround,
                        systems=tuple(args.systems))

    for index, numerals in enumerate(args.lens):
        result, seconds, greedy_s = timed_run(handle, replace(settings, lens_numerals=numerals))
        accuracy, profile = result.accuracy, result.profile
        if index == 0:
            print(f"\naccuracy, {args.op} {lo}..{hi}, n={args.n}, {args.shots} shots, surround={args.surround} "
                  f"({greedy_s:.1f} s for {len(args.systems) * args.n} greedy answers)")
            print(accuracy.frame[["system", "n", "correct", "accuracy", "ci_low", "ci_high", "value_accuracy"]]
                  .round(3).to_string(index=False))
            wrong = accuracy.outcomes[~accuracy.outcomes["correct"]]
            print("\nsystems the wrong answers were written in:")
            print(wrong.groupby("system")["parsed_system"].value_counts(dropna=False).to_string())
        print(f"\nlayer profile, problems in {numerals} ({seconds - greedy_s:.1f} s for {args.n} prompts; "
              f"{int(profile.chained.sum())} answer/system pairs teacher-forced through byte tokens)")
        table = profile.frame().pivot(index="layer", columns="system", values="mean")[profile.systems]
        table["top1_rate"] = profile.top1_rate()["top1_rate"].to_numpy()
        print(table.round(3).to_string())
        frame = profile.frame()
        for key in profile.systems:
            mine = frame[frame.system == key]
            best = mine.loc[mine["mean"].idxmax()]
            print(f"  {key:15s} peak {best['mean']:.3f} at layer {int(best['layer'])} "
                  f"(95% band {best['ci_low']:.3f}..{best['ci_high']:.3f})")
        print(f"first layer where the answer is top-1 (median over problems): {profile.first_correct_layer}; "
              f"per problem: {profile.first_top1_layers}")
        print(f"whole run {seconds:.1f} s")


if __name__ == "__main__":
    main()
