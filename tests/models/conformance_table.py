"""The supported-architectures table, from the conformance suite: ``core/models/verified.json``.

    python -m tests.models.conformance_table           # run every check on every case, print what differs
    python -m tests.models.conformance_table --write   # ... and write core/models/verified.json and the README's
                                                       # table (`python -m core architectures --markdown`)

Every check of ``tests.models.conformance`` runs on every case of ``tests.tiny.ARCHITECTURE_CASES``; the file
records each outcome ("passed", or "failed: " and the first line of what went wrong), the library versions it
was produced with, and per model type: its adapter family and quirks, whether every local check passed
("verified"), and the operations every check exercising them passed on (plus "nnsight" when the nnsight checks
pass). ``python -m core architectures`` prints it; ``tests/models/test_conformance.py`` keeps the two in step.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATH = ROOT / "core" / "models" / "verified.json"
README = ROOT / "README.md"
COMMAND = "python -m tests.models.conformance_table --write"
# The README's supported-architectures table lies between these lines (tests/test_readme.py keeps it current).
TABLE_START, TABLE_END = "<!-- architectures: python -m core architectures --markdown -->", "<!-- end architectures -->"


def readme_table(text: str) -> str:
    """The README's table, between its markers."""
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    return text[start:end].strip("\n")


def write_readme_table() -> None:
    from core.commands.architectures import markdown

    text = README.read_text(encoding="utf-8")
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    README.write_text(text[:start] + "\n" + markdown() + "\n" + text[end:], encoding="utf-8")


def outcome(case: str, name: str) -> str:
    """"passed"; "refused: " + the one-line refusal, where the case does not offer what the check verifies; or
    "failed: " + the first line of the error (assertion message or exception)."""
    from tests.models import conformance

    try:
        refusal = conformance.run(case, name)
    except Exception as err:  # noqa: BLE001 (every failure is an outcome to record)
        line = (str(err).strip().splitlines() or [""])[0]
        if not line:
            where = traceback.extract_tb(err.__traceback__)[-1]
            line = f"at {Path(where.filename).name}:{where.lineno}: {where.line}"
        return f"failed: {type(err).__name__}: {line}"[:300]
    return f"refused: {refusal}"[:300] if refusal else "passed"


def versions() -> dict[str, str]:
    import nnsight
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "nnsight": nnsight.__version__}


def table(outcomes: dict[str, dict[str, str]]) -> dict:
    """verified.json's content from every case's outcomes ({case: {check: outcome}})."""
    from core.models.adapters import ARCHITECTURES
    from tests.models.conformance import CHECKS, verified_operations

    operations = verified_operations()
    by_type: dict[str, list[str]] = {}
    for case in outcomes:
        by_type.setdefault(case.split("/")[0], []).append(case)
    rows = []
    for model_type, cases in by_type.items():
        failed, refused = {}, {}  # operation -> "case check: outcome" (the first that rules it out)
        for case in cases:
            for name, result in outcomes[case].items():
                if result != "passed":
                    for op in CHECKS[name].operations:
                        (failed if result.startswith("failed") else refused).setdefault(op, f"{case} {name}: {result}")
        local = not any(result.startswith("failed") for case in cases for name, result in outcomes[case].items()
                        if CHECKS[name].backend == "local")
        adapter = ARCHITECTURES[model_type]
        rows.append({"model_type": model_type, "family": adapter.family, "quirks": list(adapter.quirks()),
                     "cases": cases, "verified": local,
                     "operations": [op for op in operations if op not in failed and op not in refused],
                     "unverified": failed, "refused": {op: why for op, why in refused.items() if op not in failed}})
    return {"produced_by": COMMAND, "versions": versions(), "operations": list(operations),
            "checks": {name: list(c.operations) for name, c in CHECKS.items()}, "cases": outcomes,
            "architectures": rows}


def run_all(cases=None, checks=None, progress=True) -> dict[str, dict[str, str]]:
    from tests.models.conformance import CASES, CHECKS

    out = {}
    for case in cases or CASES:
        started = time.perf_counter()
        out[case] = {name: outcome(case, name) for name in (checks or CHECKS)}
        if progress:
            bad = [f"{name}: {r}" for name, r in out[case].items() if r != "passed"]
            print(f"{case:22s} {time.perf_counter() - started:5.2f} s  " + ("ok" if not bad else "; ".join(bad)),
                  file=sys.stderr)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write core/models/verified.json and the README's table")
    parser.add_argument("--case", action="append", help="only this case (repeatable; never with --write)")
    parser.add_argument("--check", action="append", help="only this check (repeatable; never with --write)")
    args = parser.parse_args(argv)
    if args.write and (args.case or args.check):
        parser.error("--write runs every check on every case")
    import torch

    torch.set_num_threads(1)  # tiny models: one thread is fastest, and far faster on shared cores
    outcomes = run_all(args.case, args.check)
    if args.write:
        PATH.write_text(json.dumps(table(outcomes), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        write_readme_table()
        print(f"wrote {PATH} and the table in {README}", file=sys.stderr)
        return 0
    if PATH.exists():
        recorded = json.loads(PATH.read_text())["cases"]
        differ = [f"{case} {name}: recorded {recorded.get(case, {}).get(name)!r}, now {result!r}"
                  for case, results in outcomes.items() for name, result in results.items()
                  if recorded.get(case, {}).get(name) != result]
        print("\n".join(differ) or f"every outcome is the one {PATH.name} records")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
