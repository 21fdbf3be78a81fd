"""`python -m core lookup`: in-context key–value lookup or stored facts, with heads, layers and causal tracing."""

from __future__ import annotations

from pathlib import Path

from core.analyses.lookup.analysis import Settings, pair_sweep, run as run_analysis
from core.analyses.lookup.heads import ABLATIONS
from core.analyses.lookup.incontext import LISTS
from core.analyses.lookup.tracing import KINDS
from core.cli import add_model_arguments, load_from_args, progress_of
from core.errors import UserError

NAME = "lookup"
HELP = "key-value lookup: accuracy by K and position, retrieval heads; facts: accuracy, causal tracing, MLP neurons"


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--task", choices=("incontext", "facts"), default="incontext")
    parser.add_argument("--pairs", type=int, default=8, help="K, pairs per prompt (in context; swept 1, 2, 4, … K)")
    parser.add_argument("--n", type=int, default=None,
                        help="prompts per K and condition (in context, default 10); facts to score (default 0 = all)")
    parser.add_argument("--list", dest="lists", choices=list(LISTS), default="words", help="in-context pairs (default words)")
    parser.add_argument("--no-perturb", action="store_true", help="in context: skip the collision and typo prompts")
    parser.add_argument("--facts", type=Path, help="a prompt,answer CSV (default: assets/facts.csv)")
    parser.add_argument("--shots", type=int, default=0, help="facts: solved facts before each prompt (default 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-heads", type=int, default=5, help="heads confirmed by ablation (default 5)")
    parser.add_argument("--ablation", choices=ABLATIONS, default="mean")
    parser.add_argument("--trace-fact", type=int, default=-1, help="facts: which fact to trace (default: the first one right)")
    parser.add_argument("--noise", type=float, default=3.0, help="facts: noise, times the embeddings' std (default 3)")
    parser.add_argument("--window", type=int, default=1, help="facts: layers restored together for mlp/attention")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"facts: restorations to trace (default {','.join(KINDS)})")
    parser.add_argument("--subject", default="", help="facts: the traced subject, as text of the traced prompt "
                                                      "(default: the CSV's subject column, else the span found by noising)")
    parser.add_argument("--subject-tokens", help="facts: the traced subject as a token range START:END of the traced prompt")


def _token_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    start, sep, end = text.partition(":")
    if not sep or not start.strip().isdigit() or not end.strip().isdigit():
        raise UserError(f"--subject-tokens takes a token range START:END (e.g. 4:6), got '{text}'")
    return int(start), int(end)


def settings_of(args) -> Settings:
    facts_csv = None
    if args.facts is not None:
        try:
            facts_csv = args.facts.read_bytes()
        except OSError as err:
            raise UserError(f"cannot read the facts file {args.facts}: {err.strerror or err}") from None
    if args.pairs < 1:
        raise UserError(f"--pairs must be at least 1, got {args.pairs}")
    n = args.n if args.n is not None else (10 if args.task == "incontext" else 0)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    return Settings(task=args.task, n=n, seed=args.seed, pairs=pair_sweep(args.pairs), lists=args.lists,
                    perturb=not args.no_perturb, facts_csv=facts_csv, shots=args.shots, top_heads=args.top_heads,
                    ablation=args.ablation, trace_fact=args.trace_fact, noise=args.noise, kinds=kinds,
                    window=args.window, subject=args.subject, subject_tokens=_token_range(args.subject_tokens))


def run(args) -> dict:
    settings = settings_of(args)
    settings.validate()  # before loading the model: bad input fails fast
    return run_analysis(load_from_args(args), settings, progress_of(args)).to_json()
