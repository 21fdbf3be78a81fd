"""`python -m core sae`: train a sparse dictionary (SAE or transcoder) on the loaded model and score it."""

from __future__ import annotations

from core.analyses.sae.analysis import ACTIVATIONS, SITES, Settings, run as run_analysis
from core.cli import add_model_arguments, load_from_args, progress_of

NAME = "sae"
HELP = ("train a TopK sparse autoencoder or transcoder at one layer of the model on the shipped corpora, save it in "
        "Gemma Scope 2's layout, and print FVU, L0, dead latents and ΔCE on held-out text")


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--site", default="resid", choices=SITES,
                        help="resid: the residual after block LAYER; mlp_out: block LAYER's MLP output; transcoder: "
                             "block LAYER's MLP input -> output (default resid)")
    parser.add_argument("--layer", type=int, required=True,
                        help="layer as the lens counts: resid 0 = embeddings, L = after block L (1-based)")
    parser.add_argument("--width", type=int, default=4096, help="latents (default 4096)")
    parser.add_argument("--k", type=int, default=32, help="active latents per token (default 32)")
    parser.add_argument("--tokens", type=int, default=400_000, help="distinct training tokens, BOS excluded (default 400,000)")
    parser.add_argument("--epochs", type=int, default=8, help="passes over each buffer of activations (default 8)")
    parser.add_argument("--activation", default="topk", choices=ACTIVATIONS)
    parser.add_argument("--weighting", default="fisher", choices=("fisher", "none"),
                        help="fisher (default): errors weighted by how much each direction matters to the next-token "
                             "loss as well as by its variance; none: plain mean squared error")
    parser.add_argument("--fisher-weight", type=float, default=8.0,
                        help="λ: how much the loss-weighted error counts beside the plain one (default 8)")
    parser.add_argument("--out", help="folder to write (default: under $LAYERSCOPE_HOME/dictionaries/<model>/)")
    parser.add_argument("--overwrite", action="store_true", help="replace a dictionary already in --out")
    parser.add_argument("--eval-text", nargs="+", default=[], metavar="FILE",
                        help="held-out text, one sequence per line (default: assets/corpora/lens_eval.txt and features_eval.txt)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cards", action="store_true", help="skip the Features page's top tokens and contexts")


def run(args) -> dict:
    settings = Settings(site=args.site, layer=args.layer, width=args.width, k=args.k, tokens=args.tokens,
                        epochs=args.epochs, activation=args.activation, weighting=args.weighting,
                        fisher_weight=args.fisher_weight, out=args.out,
                        overwrite=args.overwrite, eval_text=tuple(args.eval_text), seed=args.seed,
                        cards=not args.no_cards)
    settings.validate()  # before loading the model
    return run_analysis(load_from_args(args), settings, progress_of(args)).to_json()
