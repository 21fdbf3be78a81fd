"""`python -m core quanta`: cluster low-loss tokens by the gradients they induce (Michaud et al. 2023)."""

from __future__ import annotations

from dataclasses import replace

from core.analyses.quanta.analysis import INDUCTION_FILTERS, UNITS, Settings, run as run_analysis
from core.analyses.quanta.corpus import DEFAULT_CORPUS
from core.analyses.quanta.gradients import PARAMETER_SUBSETS
from core.cli import add_model_arguments, load_from_args, progress_of

NAME = "quanta"
HELP = "cluster the tokens a model predicts well by the gradients their losses induce (quanta discovery)"
SAME_NAMES = ("max_length", "tokens", "loss_threshold", "unit", "induction", "documents", "params", "proj_dim", "seed")


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--corpus", default=DEFAULT_CORPUS,
                        help=f"shipped corpus name ({DEFAULT_CORPUS}) or a .txt / .jsonl file (default {DEFAULT_CORPUS})")
    parser.add_argument("--tokens", type=int, default=300, help="cap on the low-loss tokens sampled (default 300)")
    parser.add_argument("--loss-threshold", type=float, default=0.5, help="keep tokens with loss below this (default 0.5)")
    parser.add_argument("--unit", default="nats", choices=UNITS, help="unit of --loss-threshold (default nats)")
    parser.add_argument("--clusters", type=int, default=20, help="number of spectral clusters (default 20)")
    parser.add_argument("--proj-dim", type=int, default=2048, help="dimensions of the gradient sketch (default 2048)")
    parser.add_argument("--seed", type=int, default=0, help="token sampling and clustering seed (default 0)")
    parser.add_argument("--max-length", type=int, default=64, help="tokens kept per document, BOS included (default 64)")
    parser.add_argument("--induction", default="trigram", choices=list(INDUCTION_FILTERS),
                        help="drop tokens completing an n-gram seen earlier in their document (default trigram)")
    parser.add_argument("--params", default="all", choices=list(PARAMETER_SUBSETS),
                        help="parameters whose gradient is taken (default all: every non-embedding, non-norm weight)")
    parser.add_argument("--documents", type=int, default=None,
                        help="documents to score (default: until twice --tokens pass the filters)")


def run(args) -> dict:
    settings = Settings(corpus=args.corpus, n_clusters=args.clusters, **{name: getattr(args, name) for name in SAME_NAMES})
    settings.validate()  # bad arguments, then a missing or unreadable corpus, fail before the model loads
    settings = replace(settings, corpus=settings.documents_to_read())
    return run_analysis(load_from_args(args), settings, progress_of(args)).to_json()
