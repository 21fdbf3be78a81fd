"""`python -m core seq`: which heads and MLPs continue a sequence (1 2 3 4 → 5), by ablation or attribution."""

from __future__ import annotations

import sys

from core.analyses.sequences import ABLATIONS, METHODS, TASKS, TEMPLATES, SeqSettings, run_sweep
from core.commands._common import add_model_arguments, load_from_args

NAME = "seq"
HELP = "logit difference after ablating each attention head and MLP on a sequence-continuation task"


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--task", default="numerals", choices=list(TASKS), help="built-in task (default numerals)")
    parser.add_argument("--template", default="bare", choices=TEMPLATES,
                        help="bare sequence ('1 2 3 4 ') or inside sentences ('John was born in 1. …')")
    parser.add_argument("--ablation", default="mean", choices=ABLATIONS,
                        help="value an ablated component takes: mean over corrupted prompts (default), zero, or a resampled corrupted prompt's")
    parser.add_argument("--method", default="ablation", choices=[*METHODS, "both"],
                        help="exact ablation of every component (default), attribution patching (one forward/backward "
                             "pair), or both (the JSON is the exact sweep's)")
    parser.add_argument("--n", type=int, default=8, help="prompt pairs (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--length", type=int, default=4, help="members shown before the answer (default 4)")
    parser.add_argument("--first-token", action="store_true",
                        help="score multi-token answers by their first token (for tokenizers that split numbers into digits)")


def run(args) -> dict:
    settings = SeqSettings(task=args.task, template=args.template, n=args.n, seed=args.seed, length=args.length,
                           first_token=args.first_token, ablation=args.ablation)
    settings.validate()  # before loading the model: bad input fails fast
    handle = load_from_args(args)

    def progress(fraction: float, message: str) -> None:
        if not args.json:
            print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)

    result = run_sweep(handle, settings, method=args.method, progress=progress)
    return result.main.to_json()
