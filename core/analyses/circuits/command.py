"""`python -m core circuit`: the graph from a prompt to its prediction (routes, or an attribution graph with --dict)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from core.analyses.circuits.analysis import Settings, run as run_analysis
from core.cli import add_model_arguments, load_from_args, progress_of
from core.errors import UserError

NAME = "circuit"
HELP = ("the graph from a prompt to its prediction: information-flow routes (one forward pass), or an attribution "
        "graph through per-layer transcoders (--dict) with circuit-tracer's replacement and completeness scores")


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--prompt", required=True, help="the text whose next token the graph explains")
    parser.add_argument("--target", default=None,
                        help="the token to explain (\" Paris\", or an id as #1234; default: the model's prediction)")
    parser.add_argument("--dict", default=None, metavar="DIR",
                        help="a folder of per-layer transcoders (one sub-folder per block, mlp_in -> mlp_out): draw an "
                             "attribution graph instead of the routes")
    parser.add_argument("--threshold", type=float, default=0.04,
                        help="routes: contributions below it are dropped (default 0.04)")
    parser.add_argument("--node-threshold", type=float, default=0.8,
                        help="attribution: keep the nodes holding this share of all influence (default 0.8)")
    parser.add_argument("--edge-threshold", type=float, default=0.98,
                        help="attribution: keep the edges holding this share of the edge influence (default 0.98)")
    parser.add_argument("--export", default=None, metavar="graph.json",
                        help="also write the graph as circuit-tracer's graph JSON (opens in its local frontend)")


def run(args) -> dict:
    settings = Settings(prompt=args.prompt, kind="attribution" if args.dict else "routes", target=args.target,
                        dictionary=args.dict, threshold=args.threshold, node_threshold=args.node_threshold,
                        edge_threshold=args.edge_threshold)
    settings.validate()  # before loading the model: bad input fails fast
    export = Path(args.export).expanduser() if args.export else None
    if export is not None and not export.parent.is_dir():
        raise UserError(f"{export.parent}: no such folder for the exported graph")
    if args.dict and not Path(args.dict).expanduser().is_dir():
        raise UserError(f"{args.dict}: no such folder; give the folder holding one transcoder folder per layer")
    result = run_analysis(load_from_args(args), settings, progress_of(args))
    if export is not None:
        write_json(export, result.graph.to_circuit_tracer(slug=export.stem))
    return result.to_json()


def write_json(path: Path, data: dict) -> None:
    """``data`` as JSON in ``path``, atomically (a temporary sibling, made with the usual permissions, renamed into
    place)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
