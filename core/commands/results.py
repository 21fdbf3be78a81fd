"""`python -m core results list|show ID|export ID OUT.zip`: the stored results (the app's History) from a shell."""

from __future__ import annotations

from core.errors import UserError

NAME = "results"
HELP = "list the stored results (the app's History), print one's JSON, or export one as a zip"
ACTIONS = ("list", "show", "export")


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=ACTIONS,
                        help="list: every stored result, newest first; show ID: the result's JSON, as its command "
                             "printed it; export ID OUT.zip: settings, JSON, tables (CSV), charts (PNG, SVG), command")
    parser.add_argument("id", nargs="?", help="a result's id (from `results list`)")
    parser.add_argument("out", nargs="?", help="export: the zip to write")
    parser.add_argument("--page", help="list: only the results of this page (e.g. logit_lens)")
    parser.add_argument("--model", help="list: only the results of this model spec")
    parser.add_argument("--analysis", help="list: only the results of this analysis (e.g. lens)")
    parser.add_argument("--no-charts", action="store_true", help="export: leave the charts out (rendering takes seconds)")


def run(args) -> dict:
    from core.results.store import ResultStore

    wanted = {"list": 0, "show": 1, "export": 2}[args.action]
    given = [a for a in (args.id, args.out) if a is not None]
    if len(given) != wanted:
        usage = {"list": "results list", "show": "results show ID", "export": "results export ID OUT.zip"}[args.action]
        raise UserError(f"usage: python -m core {usage}")
    store = ResultStore()
    if args.action == "list":
        entries = store.list(page=args.page, model=args.model, analysis=args.analysis)
        return {"results": [entry.to_json() for entry in entries]}
    if args.action == "show":
        return store.get(args.id).to_json()
    from core.results.bundle import export_stored

    path, names = export_stored(store, args.id, args.out, charts=not args.no_charts)
    return {"id": args.id, "path": str(path), "files": names}
