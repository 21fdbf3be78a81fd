"""`python -m core <command> ... --json`: every analysis without a browser.

Each analysis package's ``command.py`` (``core/analyses/<name>/command.py``) is one subcommand. It
defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> dict`` (the dict is printed as
JSON), and optionally ``ALIASES`` (older names that keep working). ``run`` raises ``UserError`` for bad
input: printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import json
import os
import pkgutil
import sys
from typing import TYPE_CHECKING

from core.errors import UserError
from core.models.specs import DEFAULT_MODEL, DEVICES, DTYPES, QUANTIZATIONS, LoadOptions
from core.progress import Progress, stderr_printer

if TYPE_CHECKING:
    from core.models import ModelHandle


# -- what every model-using subcommand shares ------------------------------------------------------------

def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model spec (default {DEFAULT_MODEL}): an embedded name, a folder, a .gguf file or a hub id")
    parser.add_argument("--dtype", default="auto", choices=DTYPES)
    parser.add_argument("--quantization", default="none", choices=QUANTIZATIONS)
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--trust-remote-code", action="store_true", help="run custom model code from the model's authors (off by default)")
    parser.add_argument("--backend", default="local", choices=("local", "nnsight", "ndif"),
                        help="where forward passes run: here (local), through nnsight traces here (nnsight), or on NDIF (ndif: needs NDIF_API_KEY)")


def load_from_args(args: argparse.Namespace) -> ModelHandle:
    """Load (or reuse, within one process) the model the arguments name."""
    options = LoadOptions(
        dtype=args.dtype, quantization=args.quantization, device=args.device, trust_remote_code=args.trust_remote_code
    )
    backend = getattr(args, "backend", "local")
    if backend == "ndif":  # before loading anything: offline or without a key this fails in seconds
        from core.backends import NDIF_ANALYSES, check_ndif, ndif_handle

        analysis = getattr(getattr(args, "_run", None), "__module__", "").split(".")[2:3]
        if analysis and analysis[0] not in NDIF_ANALYSES:
            raise UserError(f"{analysis[0]} does not run on NDIF, which brings back reduced statistics only (it runs "
                            f"{', '.join(NDIF_ANALYSES)}): use --backend local or nnsight")
        if options != LoadOptions(trust_remote_code=args.trust_remote_code):
            raise UserError("NDIF runs its models at its own precision and devices: drop --dtype, --quantization and "
                            "--device with --backend ndif")
        check_ndif(args.model)
        return ndif_handle(args.model)  # meta weights here; every trace goes to NDIF, only reductions come back
    handle = _load(args.model, options)
    if backend == "nnsight":
        from core.backends import through_nnsight

        return through_nnsight(handle)
    return handle


@functools.lru_cache(maxsize=2)
def _load(spec: str, options: LoadOptions) -> ModelHandle:
    from core.models.loading import load_model

    return load_model(spec, options, progress=stderr_printer())


def progress_of(args: argparse.Namespace) -> Progress:
    """A command's progress on stderr, silent under --json (stdout then holds only the JSON)."""
    return stderr_printer(not getattr(args, "json", False))


# -- the program ------------------------------------------------------------------------------------------


@functools.cache
def _command_index() -> dict[str, dict]:
    """Every command, read from its source without importing it (importing all of them costs seconds at start-up:
    each pulls in its analysis): an analysis package's ``command.py`` (``core/analyses/<name>/command.py``, keyed
    by the package) and each module of ``core/commands/`` (commands over no one analysis, e.g. ``results``,
    keyed by the module): {key: {"NAME", "HELP", "ALIASES", "loads_model", "module"}}."""
    import ast

    import core.analyses as analyses
    import core.commands as commands

    found = [(info.name, os.path.join(analyses.__path__[0], info.name, "command.py"), f"core.analyses.{info.name}.command")
             for info in pkgutil.iter_modules(analyses.__path__) if info.ispkg]
    found += [(info.name, os.path.join(commands.__path__[0], f"{info.name}.py"), f"core.commands.{info.name}")
              for info in pkgutil.iter_modules(commands.__path__) if not info.ispkg]
    index = {}
    for key, path, module in sorted(found):
        if not os.path.isfile(path) or key in index:
            continue
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        values = {target.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                  for target in node.targets if isinstance(target, ast.Name)}
        if "NAME" not in values:
            continue  # a helper module, not a command
        index[key] = {name: ast.literal_eval(values[name]) if name in values else () for name in ("NAME", "HELP", "ALIASES")}
        index[key]["loads_model"] = any(isinstance(node, ast.Name) and node.id == "add_model_arguments"
                                        for node in ast.walk(tree))
        index[key]["module"] = module
    return index


def _command_modules():
    """Every command's module, in name order (an analysis package without a command.py has no subcommand)."""
    for info in _command_index().values():
        yield importlib.import_module(info["module"])


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: one line, exit 2
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _named_command(argv: list[str]) -> str | None:
    """The analysis package whose command (or alias) is the command line's first word, if any."""
    words = [a for a in argv if not a.startswith("-")][:1]
    return next((package for package, info in _command_index().items()
                 if words and words[0] in (info["NAME"], *info["ALIASES"])), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The CLI's parser. Given the command line, only the command it names is imported (the others are listed
    with their help, read from their source); without one, every command is."""
    parser = _Parser(prog="python -m core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    named = _named_command(argv or [])
    for package, info in _command_index().items():
        p = sub.add_parser(info["NAME"], help=info["HELP"], description=info["HELP"], aliases=list(info["ALIASES"]))
        if argv is not None and package != named:
            continue  # listed for --help; its arguments are added only when it is the one asked for
        module = importlib.import_module(info["module"])
        p.add_argument("--json", action="store_true", help="print the result as one JSON object")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _prefetch_tokenizer(argv: list[str]) -> None:
    """For a command that loads a model, start building its tokenizer in another process now, while this one
    imports torch and transformers (``core.models.prefetch``; about 1 s of a default-model run)."""
    if {"-h", "--help"} & set(argv):
        return
    named = _named_command(argv)
    if named is None or not _command_index()[named]["loads_model"]:
        return
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--model", default=DEFAULT_MODEL)
    options.add_argument("--backend", default="local")
    known, _ = options.parse_known_args(argv)
    if known.backend == "local":  # nnsight wraps the tokenizer it is given: it gets a local one
        from core.models import prefetch

        prefetch.start(known.model)


def main(argv: list[str] | None = None, prefetch: bool = False) -> int:
    """Run one command. ``prefetch`` (``python -m core``): build the model's tokenizer in a second process
    while this one imports torch; off for calls from Python, whose process may hold the model already."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if argv is None else list(argv)
    if prefetch:
        _prefetch_tokenizer(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        result = args._run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":  # torch's, any device
            print("error: out of memory during the analysis: use fewer prompts, a shorter prompt, a smaller model "
                  "or --quantization 4bit", file=sys.stderr)
            return 1
        raise
    indent = None if args.json else 2
    print(json.dumps(result, ensure_ascii=False, indent=indent))
    return 0


def exit_without_teardown(code: int) -> None:
    """End the process once the result is printed, without the interpreter's teardown, which unloads thousands
    of torch and transformers modules and frees the model object by object (1.3 s of a 9.4 s run on 2 cores).
    The exit handlers still run (logging, the tokenizer's child); every command has closed what it wrote."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): nothing more can be said
            pass
    os._exit(code)
