"""`python -m core train`: train a TinyLM from scratch on a corpus and save a checkpoint."""

from __future__ import annotations

from core.analyses.train.analysis import Settings, run as run_analysis
from core.analyses.train.checkpoint import checkpoint_path
from core.analyses.train.corpora import DEFAULT_CORPUS, corpus_names, load_corpus
from core.models.tinylm import POSITIONAL_KINDS, TinyLMConfig
from core.analyses.train.tokenization import DEFAULT_BPE_VOCAB, TOKENIZER_KINDS
from core.analyses.train.trainer import TrainConfig
from core.cli import progress_of
from core.errors import UserError

NAME = "train"
HELP = "train a small transformer from scratch on a corpus and save a checkpoint"
SHAPE = {"n_layers": "layers", "n_heads": "heads", "d_model": "d_model", "context_length": "context",
         "positional": "positional", "dropout": "dropout"}  # TinyLMConfig field <- argument
TRAINING = {"steps": "steps", "batch_size": "batch_size", "learning_rate": "lr", "eval_every": "eval_every",
            "seed": "seed"}  # TrainConfig field <- argument


def add_arguments(parser) -> None:
    shape, opt = TinyLMConfig(), TrainConfig()
    parser.add_argument("--corpus", default=DEFAULT_CORPUS, help=f"{' | '.join(corpus_names())} or a text file path")
    parser.add_argument("--tokenizer", choices=TOKENIZER_KINDS, default="char")
    parser.add_argument("--bpe-vocab", type=int, default=DEFAULT_BPE_VOCAB, help="BPE vocabulary size")
    parser.add_argument("--layers", type=int, default=shape.n_layers)
    parser.add_argument("--heads", type=int, default=shape.n_heads)
    parser.add_argument("--d-model", type=int, default=shape.d_model)
    parser.add_argument("--context", type=int, default=shape.context_length, help="context length in tokens")
    parser.add_argument("--positional", choices=POSITIONAL_KINDS, default=shape.positional)
    parser.add_argument("--dropout", type=float, default=shape.dropout)
    parser.add_argument("--batch-size", type=int, default=opt.batch_size)
    parser.add_argument("--lr", type=float, default=opt.learning_rate, help="peak learning rate")
    parser.add_argument("--steps", type=int, default=opt.steps)
    parser.add_argument("--eval-every", type=int, default=opt.eval_every)
    parser.add_argument("--seed", type=int, default=opt.seed)
    parser.add_argument("--out", default=None, help="checkpoint folder or name (default: a name from the settings)")


def run(args) -> dict:
    if args.bpe_vocab <= 0:
        raise UserError(f"--bpe-vocab must be positive, got {args.bpe_vocab}")
    if args.out:
        checkpoint_path(args.out)  # a bad name fails now, not after training
    settings = Settings(
        corpus=load_corpus(args.corpus),
        tokenizer=args.tokenizer,
        bpe_vocab=args.bpe_vocab,
        shape=TinyLMConfig(**{name: getattr(args, arg) for name, arg in SHAPE.items()}),
        training=TrainConfig(**{name: getattr(args, arg) for name, arg in TRAINING.items()}),
    )
    result = run_analysis(None, settings, progress_of(args))
    result.save(args.out)
    return result.to_json()
