"""The shape of the code, checked: one door into the model, hooks in one place, imports only downward, small files.

Read from the source with ``ast`` (nothing is imported), so a contributor who reaches around the handle, hooks a
module from an analysis or imports upward finds out here, with the file and line.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"

# Layers, lowest first: a module may import its own layer and the layers below (``core.models`` never imports the
# lens, the interventions or an analysis, even inside a function).
LAYERS = [
    {"core.errors", "core.progress", "core.cache", "core.tokens", "core.export", "core.queue", "core"},
    {"core.models"},
    {"core.interventions", "core.lenses"},
    {"core.lens", "core.generate", "core.features", "core.charts"},
    {"core.backends"},
    {"core.analyses"},
    {"core.results"},
    {"core.commands", "core.cli", "core.__main__"},
]


def _layer(module: str) -> int:
    if re.fullmatch(r"core\.analyses\.\w+\.command", module):  # an analysis's CLI subcommand is part of the CLI
        return len(LAYERS) - 1
    best = None
    for rank, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best[1])):
                best = (rank, name)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_structure.py: add it")
    return best[0]


def _modules():
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("core"):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("core") and node.level == 0:
            yield node.lineno, node.module
            if node.module == "core":  # ``from core import interventions``
                for alias in node.names:
                    yield node.lineno, f"core.{alias.name}"


def test_imports_only_go_downward():
    upward = []
    for module, path in _modules():
        rank = _layer(module)
        for line, target in _imports(path):
            if target != "core" and _layer(target) > rank:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def _lines(pattern: str, folders):
    regex = re.compile(pattern)
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if regex.search(line):
                    yield f"{path.relative_to(ROOT)}:{number}: {line.strip()}"


DOOR_USERS = ["core/analyses", "core/lenses", "core/features", "core/results", "ui", "pages"]


def test_analyses_reach_the_model_only_through_the_handle():
    found = list(_lines(r"handle\.(model|adapter)\b", DOOR_USERS))
    assert not found, "reaching around the handle:\n" + "\n".join(found)


def test_hooks_and_module_output_unpacking_live_only_in_the_interventions_and_the_backends():
    outside = [str(p.relative_to(ROOT)) for p in CORE.iterdir() if p.is_dir() and p.name not in ("interventions", "backends")]
    outside += [str(p.relative_to(ROOT)) for p in CORE.glob("*.py")]
    hooks = [line for folder in outside for line in _lines(
        r"register_forward|register_full_backward|register_module_forward|\.register_hook\(|isinstance\(output, tuple\)",
        [folder] if (ROOT / folder).is_dir() else [])]
    hooks += [f"{p}:{n}: {line.strip()}" for p in CORE.glob("*.py")
              for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
              if re.search(r"register_forward|register_hook\(|isinstance\(output, tuple\)", line)]
    assert not hooks, "hooks outside core/interventions and core/backends:\n" + "\n".join(hooks)


@pytest.mark.parametrize("folder", ["core", "pages", "ui"])
def test_no_file_is_longer_than_450_lines(folder):
    long = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > 450:
            long.append(f"{path.relative_to(ROOT)}: {n} lines")
    assert not long, "files over 450 lines:\n" + "\n".join(long)
