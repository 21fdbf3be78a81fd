"""`python -m core attribute`: direct logit attribution of one token's logit (or a logit difference)."""

from __future__ import annotations

from core.analyses.attribute.analysis import Settings, run as run_analysis
from core.cli import add_model_arguments, load_from_args, progress_of
from core.results.cli import add_store_option, run_and_store

NAME = "attribute"
HELP = ("split one token's logit (before any soft cap) into what the embeddings, every head and every MLP "
        "add, with the final norm's scale frozen; the values sum to the total")


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--prompt", required=True, help="the text to look at")
    parser.add_argument("--target", required=True,
                        help="one token, with its leading space where it has one (\" Paris\"), or an id as #1234")
    parser.add_argument("--versus", default=None, help="a second token: attribute logit(target) - logit(versus)")
    parser.add_argument("--position", type=int, default=-1,
                        help="token position whose next-token logit is read; negative counts from the end (default -1)")
    add_store_option(parser)


def run(args) -> dict:
    settings = Settings(prompt=args.prompt, target=args.target, versus=args.versus, position=args.position)
    settings.validate()  # before loading the model: bad input fails fast
    return run_and_store(args, "attribute", load_from_args(args), settings, run_analysis, progress_of(args)).to_json()
