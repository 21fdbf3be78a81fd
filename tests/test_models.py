"""Loading models from specs: folders, quantization, the GGUF cache, and every failure the user can fix."""

import json

import pytest
import torch

from core.errors import UserError
from core.lens import run_lens
from core.models import LoadOptions, adapter_for, load_model
from core.models import gguf_cache
from tests import tiny


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return tiny.save(tmp_path_factory.mktemp("tiny-llama"))  # a Path here: tests build paths inside it


def test_local_folder_loads_and_describes_itself(tiny_folder):
    handle = load_model(str(tiny_folder), LoadOptions(device="cpu"))
    info = handle.summary()
    assert (info["architecture"], info["n_layers"], info["n_heads"], info["d_model"]) == ("llama", 3, 4, 64)
    assert info["device"] == "cpu" and info["dtype"] == "float32" and info["memory_mb"] > 0
    assert handle.head_dim == 16


def test_4bit_nf4_on_cpu_keeps_the_lens_exact_and_saves_memory(tiny_folder):
    full = load_model(str(tiny_folder))
    quant = load_model(str(tiny_folder), LoadOptions(quantization="4bit", device="cpu"))
    assert type(quant.adapter.attn_out_proj(quant.adapter.layers(quant.model)[0])).__name__ == "Linear4bit"
    assert quant.memory_bytes < full.memory_bytes
    batch = quant.encode(["The capital of France is"])
    model_probs = quant.logits(batch)[0, -1].softmax(-1)
    result = run_lens(quant, "The capital of France is", top_k=5)
    torch.testing.assert_close(torch.from_numpy(result.top_probs[-1, 0, 0]), model_probs.topk(5).values, atol=1e-4, rtol=0)
    # Quantization changes the numbers, but not beyond recognition.
    full_probs = full.logits(batch)[0, -1].softmax(-1)
    assert 0 < (model_probs - full_probs).abs().max() < 0.2


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "no model given"),
        ("./does/not/exist", "not found"),
        ("../no/such/model", "not found"),
        ("/etc/passwd", "not a .gguf"),
    ],
)
def test_bad_specs_say_what_to_fix(spec, message):
    with pytest.raises(UserError, match=message):
        load_model(spec)


def test_folder_that_is_not_a_model_and_file_that_is_not_gguf(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        load_model(str(tmp_path))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UserError, match="not a .gguf"):
        load_model(str(text))


def test_hub_id_offline_fails_fast_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="not in the local Hugging Face cache"):
        load_model("someone/some-model-that-is-not-cached")


def test_remote_code_is_refused_unless_trusted(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "strange_custom_lm", "auto_map": {"AutoConfig": "configuration_x.XConfig",
                                                                    "AutoModelForCausalLM": "modeling_x.XModel"}})
    )
    with pytest.raises(UserError, match="trust_remote_code|custom code"):
        load_model(str(tmp_path))


def test_unknown_options_and_missing_gpu():
    with pytest.raises(UserError, match="unknown dtype"):
        load_model("gemma-3-270m", LoadOptions(dtype="float8"))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            load_model("gemma-3-270m", LoadOptions(device="cuda"))


def test_unsupported_architecture_names_what_is_missing():
    from transformers import AutoModelForCausalLM, GPTJConfig

    model = AutoModelForCausalLM.from_config(GPTJConfig(vocab_size=50, n_embd=32, n_layer=1, n_head=4, rotary_dim=8))
    with pytest.raises(UserError, match="gptj.*not supported.*final norm"):
        adapter_for(model)


def test_gguf_cache_detects_incomplete_or_corrupt_folders(tmp_path):
    folder = tmp_path / "converted"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x" * 100)
    assert not gguf_cache.is_complete(folder)  # no marker: an interrupted conversion
    (folder / gguf_cache.MARKER).write_text(json.dumps({"files": {"model.safetensors": 100}}))
    assert gguf_cache.is_complete(folder)
    (folder / "model.safetensors").write_bytes(b"x" * 50)  # truncated after the fact
    assert not gguf_cache.is_complete(folder)
    (folder / gguf_cache.MARKER).write_text("{not json")
    assert not gguf_cache.is_complete(folder)


def test_default_model_comes_from_the_cache(gemma):
    folder = gguf_cache.cached_folder(gguf_cache.Path(
        __import__("core.models.loading", fromlist=["_gemma_gguf"])._gemma_gguf()))
    assert gguf_cache.is_complete(folder)
    assert gemma.architecture == "gemma3_text" and gemma.n_layers == 18 and gemma.n_heads == 4
    assert gemma.vocab_size == 262144 and gemma.adapter.softcap(gemma.model) is None


def test_hub_id_with_unreachable_hub_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    with pytest.raises(UserError, match="cannot be reached"):
        load_model("someone/another-model-that-is-not-cached")
