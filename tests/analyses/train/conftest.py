"""TinyLM tests run torch on one thread: the models are tiny (threading only adds overhead), and on a
shared 2-core machine an OpenMP team waiting for a descheduled thread can make each op take milliseconds."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def layerscope_home(tmp_path, monkeypatch):
    """Checkpoints go to a fresh folder per test, never to the user's cache."""
    monkeypatch.setenv("LAYERSCOPE_HOME", str(tmp_path / "layerscope-home"))
    return tmp_path / "layerscope-home"
