"""One result as one zip to hand on: settings, the CLI's JSON, every table as CSV, every chart as PNG and SVG,
and the command line that recomputes it.

Layout of ``<name>.zip``::

    settings.json    {"analysis", "model", "settings": {field: value}, "version", "created", "seconds", "id"}
    result.json      result.to_json(): what `python -m core <analysis> --json` prints
    tables/<name>.csv    each table of result.frames()
    charts/<name>.png, charts/<name>.svg   each chart of core.results.figures (when vl-convert is installed)
    command.txt      the equivalent `python -m core …` line

The zip is written to a temporary file beside ``out`` and renamed into place: no half-written bundle.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import zipfile
from pathlib import Path
from typing import Any

from core.results.keys import settings_json


def _safe(name: str) -> str:
    """A table's or chart's name as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._") or "table"


def write_bundle(out: str | Path, analysis: str, settings: Any, result: Any, model: str, *, command: str = "",
                 info: dict | None = None, charts: bool = True) -> list[str]:
    """Write the bundle of ``result`` to ``out``; the names it holds."""
    from core import export

    out = Path(out)
    files: dict[str, bytes] = {}
    header = {"analysis": analysis, "model": model, "settings": settings_json(settings), **(info or {})}
    files["settings.json"] = json.dumps(header, ensure_ascii=False, indent=2).encode("utf-8")
    files["result.json"] = json.dumps(result.to_json(), ensure_ascii=False, indent=2).encode("utf-8")
    for name, frame in result.frames().items():
        files[f"tables/{_safe(name)}.csv"] = export.csv_bytes(frame)
    if charts and export.can_render():
        from core.results.figures import figures

        for name, chart in figures(analysis, result).items():
            spec = chart.to_json()
            files[f"charts/{_safe(name)}.png"] = export.png_bytes(spec)
            files[f"charts/{_safe(name)}.svg"] = export.svg_bytes(spec)
    files["command.txt"] = (command + "\n").encode("utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in files.items():
                archive.writestr(name, data)
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)
    return list(files)


def export_stored(store, id: str, out: str | Path, charts: bool = True) -> tuple[Path, list[str]]:
    """The bundle of a stored result (``ResultStore``): (path written, names in it)."""
    entry = store.entry(id)
    result = store.get(id)
    settings = getattr(result, "settings", None)
    info = {"id": entry.id, "version": entry.version, "created": entry.to_json()["created"], "seconds": entry.seconds,
            "fingerprint": entry.fingerprint}
    names = write_bundle(out, entry.analysis, settings if settings is not None else entry.settings, result, entry.model,
                         command=entry.cli, info=info, charts=charts)
    return Path(out), names
