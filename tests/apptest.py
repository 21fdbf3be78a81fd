"""Helpers for reading what a page rendered under streamlit.testing.v1.AppTest, and for keeping a test's results
to itself.

A page test that wants its own result store imports the fixture: ``from tests.apptest import private_home  #
noqa: F401`` (pytest applies an autouse fixture to the module it is imported into); likewise
``settled_navigation`` for a page test that clicks buttons."""

from pathlib import Path

import pytest

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")


def chart_specs(at) -> list[str]:
    """The Vega-Lite spec (JSON text) of every Altair chart on the page, in order."""
    specs = []

    def walk(node):
        children = getattr(node, "children", None)
        for child in children.values() if isinstance(children, dict) else []:
            walk(child)
        if getattr(node, "type", "") == "vega_lite_chart":
            specs.append(node.proto.spec)

    walk(at._tree)
    return specs


def widget(widgets, label: str):
    """The widget of ``widgets`` (e.g. ``at.button``) whose label is ``label``."""
    return next(w for w in widgets if w.label == label)


def fresh_home(root: Path) -> Path:
    """An empty LAYERSCOPE_HOME that shares the user's converted models (no conversion again), not their results."""
    from core.models.gguf_cache import cache_home

    home = root / "layerscope-home"
    home.mkdir(parents=True, exist_ok=True)
    converted = cache_home() / "converted"
    if converted.is_dir() and not (home / "converted").exists():
        (home / "converted").symlink_to(converted, target_is_directory=True)
    return home


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """Each test gets its own result store (results of earlier tests, or of the user's app, are not found)."""
    home = fresh_home(tmp_path)
    monkeypatch.setenv("LAYERSCOPE_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def settled_navigation(monkeypatch):
    """AppTest resets ``PagesManager.uses_pages_directory`` before every run, so each run starts in the old
    folder mode and ``ui.shell.require_shell`` reruns it through the app, which drops a button's click. A
    server settles the mode on its first run; so does this (the first run of each test still goes through
    the shell's rerun)."""
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        settled = PagesManager.uses_pages_directory is None and getattr(PagesManager, "_settled_once", False)
        original(self, *args, **kwargs)
        if settled:
            PagesManager.uses_pages_directory = False
        PagesManager._settled_once = True

    monkeypatch.setattr(PagesManager, "__init__", init)
    monkeypatch.setattr(PagesManager, "_settled_once", False, raising=False)
