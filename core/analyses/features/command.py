"""`python -m core features`: the strongest dictionary features at every position of a prompt, and steering."""

from __future__ import annotations

from core.analyses.features.analysis import Settings, run as run_analysis
from core.analyses.features.steering import MODES, SteerSettings, steer
from core.cli import add_model_arguments, load_from_args, progress_of
from core.errors import UserError

NAME = "features"
HELP = ("read a prompt through sparse dictionaries (SAEs, transcoders): each layer's strongest features per position "
        "with their top promoted tokens and each site's FVU; optionally steer with one feature")


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--dict", action="append", required=True, metavar="DIR", dest="dicts",
                        help="a dictionary folder (Gemma Scope, SAELens or sparsify layout); repeat for several")
    parser.add_argument("--prompt", required=True, help="the text to read")
    parser.add_argument("--top", type=int, default=5, help="features per position (default 5)")
    parser.add_argument("--steer", type=int, metavar="FEATURE", help="steer with this feature of the first --dict "
                        "(or of --steer-dict)")
    parser.add_argument("--steer-dict", metavar="DIR", help="the dictionary the steered feature belongs to")
    parser.add_argument("--mode", default="add", choices=MODES,
                        help="add: α × the decoder direction at every position; clamp: the activation set to α")
    parser.add_argument("--alpha", type=float, default=10.0, help="the steering amount (default 10)")
    parser.add_argument("--new-tokens", type=int, default=20, help="greedy continuation length (default 20)")


def run(args) -> dict:
    settings = Settings(prompt=args.prompt, dictionaries=tuple(args.dicts), top=args.top)
    settings.validate()  # before loading the model
    steering = None
    if args.steer is not None:
        steering = SteerSettings(prompt=args.prompt, dictionary=args.steer_dict or args.dicts[0], feature=args.steer,
                                 mode=args.mode, alpha=args.alpha, new_tokens=args.new_tokens)
        steering.validate()
    elif args.steer_dict:
        raise UserError("--steer-dict goes with --steer FEATURE")
    handle = load_from_args(args)
    out = run_analysis(handle, settings, progress_of(args)).to_json()
    if steering is not None:
        out["steering"] = steer(handle, steering, progress_of(args)).to_json()
    return out
