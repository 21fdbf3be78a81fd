"""`python -m core translation` (alias `translate`): latent-language curves of few-shot word translation (Wendler et al. 2024)."""

from __future__ import annotations

from core.analyses.translation.analysis import Settings, run as run_analysis
from core.analyses.translation.prompts import MAX_SHOTS, TASKS
from core.analyses.translation.wordlist import LANGUAGES, read_words
from core.cli import add_model_arguments, load_from_args, progress_of

NAME = "translation"
ALIASES = ["translate"]
HELP = ("per layer, the probability of the target, latent and source language while the model translates "
        "words (mean over words with a 95%% band)")


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    codes = ", ".join(LANGUAGES)
    parser.add_argument("--source", default="fr", help=f"language of the words given (default fr; one of {codes})")
    parser.add_argument("--target", default="zh", help="language to translate into (default zh)")
    parser.add_argument("--latent", default="en", help="language looked for in the middle layers (default en)")
    parser.add_argument("--pairs", help="CSV whose header names language codes (default: the shipped assets/words.csv)")
    parser.add_argument("--limit", type=int, help="use the first N words of the list (default all)")
    parser.add_argument("--shots", type=int, default=4, help=f"demonstrations per prompt, 0..{MAX_SHOTS} (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed for choosing the demonstrations (default 0)")
    parser.add_argument("--task", default="translation", choices=TASKS,
                        help="translation (default), repetition (target -> target) or cloze")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass (default 16)")


def run(args) -> dict:
    settings = Settings(
        source=args.source.strip().lower(), target=args.target.strip().lower(), latent=args.latent.strip().lower(),
        task=args.task, shots=args.shots, seed=args.seed, limit=args.limit, batch_size=args.batch_size,
        words=read_words(args.pairs) if args.pairs else None,
    )
    settings.validate()  # bad languages or counts fail before the model loads
    return run_analysis(load_from_args(args), settings, progress_of(args)).to_json()
