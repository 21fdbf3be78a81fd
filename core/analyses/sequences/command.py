"""`python -m core sequences` (or `seq`): which heads and MLPs continue a sequence (1 2 3 4 → 5), by ablation or attribution."""

from __future__ import annotations

from core.analyses.sequences.analysis import METHODS, Settings, run as run_analysis
from core.analyses.sequences.tasks import TASKS, TEMPLATES
from core.cli import add_model_arguments, load_from_args, progress_of
from core.interventions import ABLATIONS

NAME = "sequences"
ALIASES = ["seq"]
HELP = "logit difference after ablating each attention head and MLP on a sequence-continuation task"


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--task", default="numerals", choices=list(TASKS), help="built-in task (default numerals)")
    parser.add_argument("--template", default="bare", choices=TEMPLATES,
                        help="bare sequence ('1 2 3 4 ') or inside sentences ('John was born in 1. …')")
    parser.add_argument("--ablation", default="mean", choices=ABLATIONS,
                        help="value an ablated component takes: mean over corrupted prompts (default), zero, or a resampled corrupted prompt's")
    parser.add_argument("--method", default="ablation", choices=METHODS,
                        help="exact ablation of every component (default), attribution patching (one forward/backward "
                             "pair), both (the JSON is the exact sweep's), or auto (both, exact ablation of every "
                             "component when it fits a minute here; the JSON is the exact sweep's when it covers every head)")
    parser.add_argument("--top-k", type=int, default=None,
                        help="with both/auto: exact ablation of attribution's top-k heads and MLPs and k random others "
                             "(default: every component for both, 12 for auto when over budget)")
    parser.add_argument("--n", type=int, default=8, help="prompt pairs (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--length", type=int, default=4, help="members shown before the answer (default 4)")
    parser.add_argument("--first-token", action="store_true",
                        help="score multi-token answers by their first token (for tokenizers that split numbers into digits)")


def run(args) -> dict:
    settings = Settings(task=args.task, template=args.template, n=args.n, seed=args.seed, length=args.length,
                        first_token=args.first_token, ablation=args.ablation, method=args.method, top_k=args.top_k)
    settings.validate()  # before loading the model: bad input fails fast
    return run_analysis(load_from_args(args), settings, progress_of(args)).to_json()
