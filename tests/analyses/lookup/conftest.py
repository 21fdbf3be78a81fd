"""Tiny random models for the mechanics (one torch thread: they are tiny, and on a shared 2-core machine an
OpenMP team waiting for a descheduled thread makes every op slow); the real default model elsewhere."""

import core  # noqa: F401  (first: it sets OMP_WAIT_POLICY=PASSIVE before torch starts OpenMP)
import pytest
import torch

from tests import tiny

# Llama (o_proj, no bias), Gemma 3 (post-norms around attention and MLP, soft cap), GPT-2 (Conv1D, LayerNorm).
FAMILIES = [("llama", "llama"), ("gemma3", "sentencepiece"), ("gpt2", "gpt2")]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=FAMILIES, ids=[f for f, _ in FAMILIES])
def family(request):
    name, style = request.param
    return tiny.handle(name, style=style)


@pytest.fixture(scope="module")
def llama():
    return tiny.handle("llama")
