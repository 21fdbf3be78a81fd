"""`python -m core arithmetic` (alias `arith`): accuracy and layer profile of few-shot arithmetic written in one numeral system."""

from __future__ import annotations

from core.analyses.arithmetic.analysis import Settings, run as run_analysis
from core.analyses.arithmetic.numerals import SYSTEM_KEYS
from core.analyses.arithmetic.problems import OPS, SURROUNDS
from core.cli import add_model_arguments, load_from_args, progress_of

NAME = "arithmetic"
ALIASES = ["arith"]
HELP = (
    "few-shot arithmetic in one numeral system: greedy accuracy, and per layer the lens probability "
    "of the answer written in every numeral system"
)


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--numerals", default="arabic", choices=SYSTEM_KEYS, help="numeral system of the problems (default arabic)")
    parser.add_argument("--op", default="add", choices=OPS, help="add, sub, mul, or next (a, a+1, a+2 -> a+3); default add")
    parser.add_argument("--digits", type=int, default=1, help="operands with this many digits (default 1: 1..9)")
    parser.add_argument("--min", type=int, default=None, help="smallest operand (overrides --digits)")
    parser.add_argument("--max", type=int, default=None, help="largest operand (overrides --digits)")
    parser.add_argument("--n", type=int, default=50, help="number of problems (default 50)")
    parser.add_argument("--shots", type=int, default=4, help="solved examples before each query (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the problem generator (default 0)")
    parser.add_argument("--surround", default="none", choices=SURROUNDS, help="text around the problems: none, english or hindi")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass (default 16)")


def settings_from_args(args) -> Settings:
    """The problems in ``--numerals``, scored in that system alone; the profile tracks every system."""
    lo, hi = Settings.digit_range(args.digits)
    lo = lo if args.min is None else args.min
    hi = hi if args.max is None else args.max
    return Settings(op=args.op, lo=lo, hi=hi, n=args.n, shots=args.shots, seed=args.seed, surround=args.surround,
                    systems=(args.numerals,), lens_numerals=args.numerals, batch_size=args.batch_size)


def run(args) -> dict:
    settings = settings_from_args(args)
    settings.validate()  # before loading the model: bad input fails fast
    return run_analysis(load_from_args(args), settings, progress_of(args)).to_json()
