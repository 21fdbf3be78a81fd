"""`python -m core architectures [--json | --markdown]`: the supported architectures and what the conformance suite
verified on each, read from ``core/models/verified.json`` (written by ``python -m tests.models.conformance_table
--write``; no torch is imported to print it)."""

from __future__ import annotations

import json
from pathlib import Path

from core.errors import UserError

NAME = "architectures"
HELP = "the supported model types, their adapter family, and the handle operations verified on each"
VERIFIED = Path(__file__).resolve().parents[1] / "models" / "verified.json"


def add_arguments(parser) -> None:
    parser.add_argument("--markdown", action="store_true",
                        help="print the table as Markdown (the README's supported-architectures table) instead of JSON")


def verified() -> dict:
    """verified.json as written by the conformance suite."""
    try:
        return json.loads(VERIFIED.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{VERIFIED} is missing: run `python -m tests.models.conformance_table --write`") from None


def table(record: dict | None = None) -> dict:
    """{"architectures": [{"model_type", "family", "verified", "operations", "unverified", "refused", "quirks"}],
    "versions", "produced_by"}: ``verified`` is true when no local check failed on any case of the type;
    ``operations`` are the handle operations every check exercising them passed on ("nnsight": the nnsight and
    simulated-NDIF checks); ``unverified`` names, per operation a check failed on, the first such check and how;
    ``refused``, per operation the type does not offer (a fused value projection has no ``v``), its one-line
    refusal."""
    record = record or verified()
    keys = ("model_type", "family", "verified", "operations", "unverified", "refused", "quirks")
    return {"architectures": [{key: row[key] for key in keys} for row in record["architectures"]],
            "versions": record["versions"], "produced_by": record["produced_by"]}


def markdown(record: dict | None = None) -> str:
    """The table as Markdown, one row per family and outcome (the README keeps it equal to this)."""
    record = record or verified()
    operations = record["operations"]
    local = [op for op in operations if op != "nnsight"]

    def ops(names) -> str:
        return ", ".join(f"`{op}`" for op in local if op in names)

    groups: dict[tuple, list[str]] = {}
    for row in record["architectures"]:
        key = (row["family"], row["verified"], "nnsight" in row["operations"], ops(row["unverified"]),
               ops(row["refused"]), "; ".join(row["quirks"]))
        groups.setdefault(key, []).append(row["model_type"])
    lines = ["| family | model types | verified | nnsight | failed checks | not offered | quirks |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for (family, ok, traced, failed, refused, quirks), types in groups.items():
        lines.append(f"| {family} | {', '.join(f'`{t}`' for t in types)} | {'yes' if ok else 'partly'} | "
                     f"{'yes' if traced else 'no'} | {failed} | {refused} | {quirks} |")
    versions = ", ".join(f"{name} {version}" for name, version in record["versions"].items())
    lines += ["", f"{len(record['architectures'])} model types. Verified: every operation of the door passes its "
              f"conformance checks ({', '.join(f'`{op}`' for op in local)}); nnsight: the residual stream, the lens "
              f"and the ablation sweep through nnsight traces (and serialized as for NDIF) equal the local backend's; "
              f"not offered: refused in one line, as documented. Tiny random models, {versions} "
              f"(`{record['produced_by']}`)."]
    return "\n".join(lines)


def run(args) -> dict:
    if args.markdown:
        print(markdown())
        raise SystemExit(0)  # the table is the output: no JSON after it
    return table()
