"""`python -m core tuned-lens`: train a tuned lens for a model (or reuse one) and compare it with the logit lens."""

from __future__ import annotations

from core.analyses.tuned_lens.analysis import Settings, run as run_analysis
from core.cli import add_model_arguments, load_from_args, progress_of

NAME = "tuned-lens"
HELP = ("train one affine translator per layer (KL to the final layer), saved in the tuned-lens format; "
        "prints each layer's KL for the logit and the tuned lens on a held-out text")


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--out", help="lens folder (default: this model's under $LAYERSCOPE_HOME/lenses); reused if it holds one")
    parser.add_argument("--train-tokens", type=int, default=4096, help="training tokens (default 4096)")
    parser.add_argument("--steps", type=int, default=80, help="KL optimisation steps after the least-squares start (default 80)")
    parser.add_argument("--eval-text", help="held-out text, one sequence per line (default: assets/corpora/lens_eval.txt)")
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> dict:
    settings = Settings(train_tokens=args.train_tokens, steps=args.steps, seed=args.seed, out=args.out,
                        eval_text=args.eval_text)
    settings.validate()  # before loading the model
    return run_analysis(load_from_args(args), settings, progress_of(args)).to_json()
