"""Training speed and sample efficiency of the default TinyLM on this machine.

Trains the default model (core.analyses.train defaults: the page's and the CLI's) on the default corpus
through the public ``core.analyses.train.run`` and prints, from this one run: training tokens per second, seconds of training until the validation
loss is 25% below the bigram baseline's, and the final validation loss against the baseline.

Targets (issue 6), on the 2-core CPU: >= 20,000 tokens/s, and 25% below bigram within 60 s.
Seconds count optimisation steps only (evaluations are excluded: they are the bench's own probes).

    python bench/train.py [--corpus shakespeare] [--threads N] [--eval-every 25] [--json]
"""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on a shared machine a spinning team steals the
# cores its own busy thread needs (measured here: 10x slower under load). Must precede `import torch`.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from core.analyses import train  # noqa: E402
from core.analyses.train.corpora import DEFAULT_CORPUS  # noqa: E402
from core.analyses.train.trainer import TrainConfig  # noqa: E402

TARGET_FRACTION = 0.75  # val loss at most 75% of the bigram baseline's
TARGET_TOKENS_PER_S = 20_000
TARGET_SECONDS = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--tokenizer", default="char", choices=["char", "bpe"])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch intra-op threads")
    parser.add_argument("--eval-every", type=int, default=25, help="steps between validation checks")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    config = TrainConfig(eval_every=args.eval_every)
    settings = train.Settings(corpus=args.corpus, tokenizer=args.tokenizer, training=config)
    wall_start = time.perf_counter()  # includes reading and tokenizing the corpus (well under a second)
    trained = train.run(None, settings)
    wall_s = time.perf_counter() - wall_start
    history, model = trained.history, trained.trained.model

    target = TARGET_FRACTION * history.bigram_val_loss_nats
    reached = next((e for e in history.evals if e.val_loss_nats <= target), None)
    final = history.evals[-1].val_loss_nats
    result = {
        "corpus": args.corpus,
        "tokenizer": args.tokenizer,
        "model": model.config.to_dict() | {"parameters": model.num_parameters()},
        "train_config": {"steps": config.steps, "batch_size": config.batch_size, "learning_rate": config.learning_rate},
        "threads": args.threads,
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "tokens_per_s": round(history.tokens_per_s),
        "train_seconds": round(history.train_seconds, 1),
        "wall_seconds_with_evals": round(wall_s, 1),
        "bigram_val_loss_nats": round(history.bigram_val_loss_nats, 4),
        "target_val_loss_nats": round(target, 4),
        "seconds_to_target": round(reached.train_seconds, 1) if reached else None,
        "step_at_target": reached.step if reached else None,
        "final_val_loss_nats": round(final, 4),
        "final_vs_bigram": round(final / history.bigram_val_loss_nats, 3),
        "meets_tokens_per_s": history.tokens_per_s >= TARGET_TOKENS_PER_S,
        "meets_time_to_target": bool(reached and reached.train_seconds <= TARGET_SECONDS),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    shape = model.config
    print(f"model: {shape.n_layers} layers x d_model {shape.d_model}, {shape.n_heads} heads, context "
          f"{shape.context_length}, {result['model']['parameters']:,} parameters; batch {config.batch_size}, "
          f"{config.steps} steps, {args.threads} threads (load average {load_before:.1f} before, "
          f"{result['load_average_after']:.1f} after)")
    print(f"tokens/s (training steps only): {result['tokens_per_s']:,}  (target >= {TARGET_TOKENS_PER_S:,})")
    print(f"bigram baseline val loss: {history.bigram_val_loss_nats:.3f} nats; target (-25%): {target:.3f}")
    if reached:
        print(f"25% below bigram after {reached.train_seconds:.1f} s of training (step {reached.step}; "
              f"target <= {TARGET_SECONDS:.0f} s)")
    else:
        print("25% below bigram: not reached in this run")
    print(f"final val loss: {final:.3f} nats = {result['final_vs_bigram']:.0%} of bigram, after "
          f"{history.train_seconds:.1f} s of training ({wall_s:.1f} s with evaluations)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
