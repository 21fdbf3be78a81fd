"""The app as users meet it: one `streamlit run` server and one headless Chromium per test session.

The server runs offline (HF_HUB_OFFLINE=1) on 127.0.0.1 at a free port and loads the default
model once; every test opens its own browser context (a fresh session, like a new user).
Chromium is Debian's /usr/bin/chromium driven by Playwright; no browser is ever downloaded.
Screenshots and the server's log go to artifacts/ (git-ignored).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Seconds a page may take to show its results (the first one also waits for the model to load).
PAGE_TIMEOUT_S = float(os.environ.get("LAYERSCOPE_E2E_PAGE_TIMEOUT", "420"))
START_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.read().strip() == b"ok"
    except OSError:
        return False


class Server:
    def __init__(self, url: str, process: subprocess.Popen, log: Path):
        self.url, self.process, self.log = url, process, log

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def rss_bytes(self) -> int:
        """Resident memory of the server process (one process serves every session)."""
        import psutil

        return psutil.Process(self.process.pid).memory_info().rss


HOOKS = Path(__file__).resolve().parent / "hooks"  # sitecustomize.py: slow loads, counted forward passes


@contextlib.contextmanager
def launch(env_extra: dict | None = None, log_name: str = "e2e-server.log", port: int | None = None):
    """`streamlit run streamlit_app.py` on a free port (or ``port``); yields a Server once /_stcore/health says ok.

    ``LAYERSCOPE_E2E_LOAD_DELAY`` (seconds) and ``LAYERSCOPE_E2E_FORWARDS`` (a file) in ``env_extra`` make the
    server's model loads slow and log every forward pass of its models (tests/e2e/hooks/sitecustomize.py)."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    log = ARTIFACTS / log_name
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               **{k: str(v) for k, v in (env_extra or {}).items()})
    if any(k.startswith("LAYERSCOPE_E2E_") for k in env_extra or {}):
        env["PYTHONPATH"] = os.pathsep.join([str(HOOKS), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    command = [
        sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
        "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
        "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
    ]
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(url, process, log)
    server.started = time.monotonic()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if process.poll() is not None:
                pytest.fail(f"streamlit exited with code {process.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit was not healthy after {START_TIMEOUT_S} s:\n{server.log_tail()}")
            time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """The server most browser tests share: the user's converted models, but an empty result store of its own
    (nothing from an earlier run is found)."""
    # Build the default model's safetensors cache here first (a no-op once built), so the first page
    # visit waits only for the model to load. tests/e2e/test_first_contact.py covers the other case.
    from core.models.loading import DEFAULT_MODEL, resolve_spec
    from tests.apptest import fresh_home

    resolve_spec(DEFAULT_MODEL)
    with launch({"LAYERSCOPE_HOME": fresh_home(tmp_path_factory.mktemp("e2e"))}) as server:
        yield server


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium (a fresh temporary profile per launch)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_page(browser):
    """Factory of pages, each in its own context (= its own Streamlit session); all closed afterwards."""
    contexts = []

    def make(width: int = 1400, height: int = 1000):
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(60_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()
