"""`python -m core translation` (alias `translate`): latent-language curves of few-shot word translation (Wendler et al. 2024)."""

from __future__ import annotations

from core.analyses.translation.analysis import Settings, run as run_analysis
from core.analyses.translation.prompts import MAX_SHOTS, TASKS
from core.analyses.translation.wordlist import LANGUAGES, read_words
from core.cli import add_model_arguments, load_from_args, progress_of
from core.errors import UserError

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
    parser.add_argument("--causal", action="store_true",
                        help="concept patching (Dumas et al. 2025): the --source → --target prompt's last residual "
                             "patched into --into's prompt at each layer; --limit N pairs (default 100)")
    parser.add_argument("--into", help="the receiving prompt's pair R_IN,R_OUT for --causal (e.g. de,es)")
    parser.add_argument("--onward", action="store_true", help="--causal: patch at every layer from ℓ on")
    parser.add_argument("--steer", help="language steering X,Y: the X − Y direction of mean residuals added to "
                                        "--source → Y prompts at each layer")
    parser.add_argument("--alpha", type=float, default=1.0, help="--steer: strength of the direction (default 1)")


def _pair(text: str | None, option: str) -> tuple[str, str] | None:
    """``"de,es"`` -> ("de", "es"); one-line error for anything but two comma-separated codes."""
    if text is None:
        return None
    codes = tuple(c.strip().lower() for c in text.split(","))
    if len(codes) != 2 or not all(codes):
        raise UserError(f"{option} takes two language codes separated by a comma (e.g. de,es), got '{text}'")
    return codes


def run(args) -> dict:
    settings = Settings(
        source=args.source.strip().lower(), target=args.target.strip().lower(), latent=args.latent.strip().lower(),
        task=args.task, shots=args.shots, seed=args.seed, limit=args.limit, batch_size=args.batch_size,
        words=read_words(args.pairs) if args.pairs else None, causal=args.causal, into=_pair(args.into, "--into"),
        onward=args.onward, steer=_pair(args.steer, "--steer"), alpha=args.alpha,
    )
    settings.validate()  # bad languages or counts fail before the model loads
    return run_analysis(load_from_args(args), settings, progress_of(args)).to_json()
