"""Pages on tiny random models saved as folders (a load takes a second): links, the result store, History and
the queue are the same whatever the model."""

from __future__ import annotations

import threading

import pytest
from streamlit.testing.v1 import AppTest

from tests import tiny
from tests.apptest import APP, private_home  # noqa: F401 (each test its own result store)


def save_tiny(folder, seed: int = 3):
    return tiny.save(folder, seed=seed)


@pytest.fixture
def tiny_folder(tmp_path):
    """A tiny random Llama as an ordinary Hugging Face folder, new for each test (a model no session loaded yet)."""
    return save_tiny(tmp_path / "tiny-llama")


def open_app(params: dict | None = None, page: str | None = None, timeout: float = 120) -> AppTest:
    """A new session (a new visitor) opening the app, at ``page``, with ``params`` in its URL."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    if page:
        at.switch_page(page)
    at.query_params.update(params or {})
    return at.run()


def link_of(at: AppTest) -> dict:
    """The session's URL parameters (what its Copy link holds)."""
    return {k: v for k, v in at.query_params.items()}


def ok(at: AppTest) -> AppTest:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


@pytest.fixture
def restart(monkeypatch):
    """A server restart for the app's models: an empty set of loads, and loads that wait for ``gate``."""
    import ui.model
    from core.models.jobs import ModelLoads

    gate = threading.Event()
    real = ui.model.load_model

    def gated(spec, options, progress=None):
        gate.wait(60)
        return real(spec, options, progress=progress)

    def go():
        monkeypatch.setattr(ui.model, "LOADS", ModelLoads())
        monkeypatch.setattr(ui.model, "load_model", gated)
        return gate

    yield go
    gate.set()
