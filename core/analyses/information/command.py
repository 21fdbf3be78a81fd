"""`python -m core information`: what every layer keeps, on a corpus window and the word list."""

from __future__ import annotations

from core.analyses.information.analysis import DEFAULT_CORPUS, Settings, read_text, run as run_analysis
from core.analyses.translation.wordlist import SHIPPED_LANGUAGES
from core.cli import add_model_arguments, load_from_args, progress_of

NAME = "information"
HELP = ("per layer (0 = embeddings): current/previous/next-token probes and lens, a bound on I(residual; next token), "
        "effective rank, anisotropy, translation retrieval; tokens per word by language")


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--corpus", default=DEFAULT_CORPUS,
                        help=f"a shipped corpus (shakespeare, synthetic), a word-list language code for the parallel "
                             f"story ({', '.join(SHIPPED_LANGUAGES)}) or a text file (default {DEFAULT_CORPUS})")
    parser.add_argument("--tokens", type=int, default=400, help="token positions to read (default 400)")
    parser.add_argument("--seed", type=int, default=0, help="picks the fit/score split and the concepts (default 0)")
    parser.add_argument("--languages", default=",".join(SHIPPED_LANGUAGES),
                        help="word-list languages for translation retrieval, comma-separated (default all nine)")
    parser.add_argument("--concepts", type=int, default=100, help="word-list rows used for translation retrieval (default 100)")
    parser.add_argument("--word", default="water", help="the word whose embedding neighbours are listed (default water)")


def run(args) -> dict:
    settings = Settings(
        corpus=args.corpus, tokens=args.tokens, seed=args.seed,
        languages=tuple(code.strip() for code in args.languages.split(",") if code.strip()),
        concepts=args.concepts, word=args.word,
    )
    settings.validate()  # before loading the model: bad input fails fast
    read_text(settings)
    return run_analysis(load_from_args(args), settings, progress_of(args)).to_json()
