"""Tuned lens vs logit lens on the default model, and what tracking and sub-layer rows cost, in one process.

  python bench/tuned_lens.py [--model gemma-3-270m] [--out DIR] [--train-tokens 4096] [--steps 80]

1. Trains a tuned lens (or reuses the one in --out) through the public ``run`` of core.analyses.tuned_lens,
   and prints per layer the mean KL(final ‖ layer) of both lenses on the held-out text, with how many of
   layers 1..L-3 the tuned lens at least halves (target: ≥ 80%).
2. Times the page's lens run (every position of a 27-token prompt) plain, with 3 tracked tokens, and with
   sub-layer rows (targets: each ≤ 1.1× plain), best of 5.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core.analyses import lens, tuned_lens  # noqa: E402
from core.models import load_model  # noqa: E402

PROMPT = ("The Eiffel Tower is in the city of Paris, and the Colosseum is in the city of Rome; "
          "both are visited by millions of people every year")


def best_of(n, fn):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--out")
    parser.add_argument("--train-tokens", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--skip-training", action="store_true", help="only the tracking / sub-layer timings")
    args = parser.parse_args()
    handle = load_model(args.model)
    if not args.skip_training:
        started = time.perf_counter()
        result = tuned_lens.run(handle, tuned_lens.Settings(train_tokens=args.train_tokens, steps=args.steps, out=args.out),
                                lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr, flush=True))
        print(f"tuned lens: {'reused' if result.reused else 'trained'} in {time.perf_counter() - started:.1f} s "
              f"({result.train_tokens} training tokens) -> {result.path}")
        print("layer  KL logit (bits)  KL tuned (bits)  tuned/logit")
        for row in result.frames()["layers"].itertuples():
            print(f"{row.layer:5d}  {row.kl_logit_bits:15.3f}  {row.kl_tuned_bits:15.3f}  {row.ratio:11.3f}")
        halved, span = result.layers_at_most_half()
        print(f"tuned KL <= half the logit KL at {halved}/{span} of layers 1..L-3 ({100 * halved / span:.0f}%; target >= 80%)")
    plain = lens.Settings(prompt=PROMPT, top_k=5)
    tracked = lens.Settings(prompt=PROMPT, top_k=5, track=(" Paris", " Rome", " London"))
    sub = lens.Settings(prompt=PROMPT, top_k=5, resolution="sublayer")
    lens.run(handle, plain)  # warm-up
    t_plain = best_of(5, lambda: lens.run(handle, plain))
    t_track = best_of(5, lambda: lens.run(handle, tracked))
    t_sub = best_of(5, lambda: lens.run(handle, sub))
    print(f"lens run, every position: plain {t_plain:.3f} s, 3 tracked tokens {t_track:.3f} s "
          f"({t_track / t_plain:.2f}x), sub-layer rows {t_sub:.3f} s ({t_sub / t_plain:.2f}x; "
          f"{2 * handle.n_layers + 1} rows instead of {handle.n_layers + 1})")


if __name__ == "__main__":
    main()
