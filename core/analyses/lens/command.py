"""`python -m core lens`: the logit lens of one prompt at one position."""

from __future__ import annotations

from core.analyses.lens.analysis import RESOLUTIONS, Settings, run as run_analysis
from core.lenses import LENS_NAMES
from core.cli import add_model_arguments, load_from_args
from core.results.cli import add_store_option, run_and_store

NAME = "lens"
HELP = "decode every layer of one prompt at one position (layer 0 = embeddings, n_layers = output)"


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--prompt", required=True, help="the text to look at")
    parser.add_argument("--top-k", type=int, default=10, help="tokens per layer (default 10)")
    parser.add_argument("--position", type=int, default=-1, help="token position to decode; negative counts from the end (default -1)")
    parser.add_argument("--lens", default="logit", choices=LENS_NAMES, help="logit (default) or tuned (a trained tuned lens)")
    parser.add_argument("--lens-path", help="a tuned lens folder in the tuned-lens format (default: this model's trained lens)")
    parser.add_argument("--track", nargs="+", default=[], metavar="TOKEN",
                        help="tokens or words (' Paris', Paris, #1234) whose probability and rank are printed at every layer")
    parser.add_argument("--resolution", default="layer", choices=RESOLUTIONS,
                        help="layer (default): after each block; sublayer: after each attention and each MLP (2L+1 rows)")
    add_store_option(parser)


def run(args) -> dict:
    settings = Settings(prompt=args.prompt, top_k=args.top_k, position=args.position, all_positions=False,
                        lens=args.lens, lens_path=args.lens_path, track=tuple(args.track), resolution=args.resolution)
    settings.validate()  # before loading the model: bad input fails fast
    return run_and_store(args, "lens", load_from_args(args), settings, run_analysis).to_json()
