"""Tiny GGUF files written with ``gguf.GGUFWriter`` in milliseconds: a Llama with GPT-2's byte-level
tokenizer (untied unembedding) and a Gemma 3 with a SentencePiece vocabulary (tied), their
tensors in F32, F16, Q8_0, Q5_0 and Q4_1, laid out and named as llama.cpp writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter
from gguf.quants import quantize

D_MODEL, LAYERS, HEADS, KV_HEADS, HEAD_DIM, FFN = 64, 2, 4, 2, 16, 128
# the quantization of each matrix, cycled so every type meets every kind of weight
QUANTS = (Q.Q8_0, Q.Q5_0, Q.Q4_1, Q.F16, Q.F32)


def byte_alphabet() -> list[str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    spelling = {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}
    return [spelling[b] for b in range(256)]


def _byte_level_vocab():
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merges = ["Ġ t", "h e", "Ġt he", "Ġ c", "a p", "Ġc ap", "i t", "a l", "it al", "Ġcap ital", "o f", "Ġ of",
              "Ġ F", "r a", "Ġ 1", "Ġ 2", "1 2", "ä ¸", "ï ¼", "ï¼ Į"]
    merged = [m.replace(" ", "") for m in merges]
    tokens = specials + byte_alphabet() + list(dict.fromkeys(merged))
    types = [3] * len(specials) + [1] * (len(tokens) - len(specials))
    return tokens, types, merges


def _sentencepiece_vocab():
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
    pieces = ["▁", "  ", "   ", "t", "h", "e", "▁t", "he", "▁the", "c", "a", "p", "i", "l", "▁c", "ap", "▁cap",
              "it", "al", "ital", "▁capital", "o", "f", "▁of", "F", "r", "n", "▁F", "ra", "ance", "1", "2", "▁1",
              "你", "好", "你好", "न", "म", "नम", "<custom>", "\t", "\n", "\n\n"]
    tokens = specials + [f"<0x{b:02X}>" for b in range(256)] + pieces
    types = [3, 3, 3, 2, 3, 3, 3] + [6] * 256 + [4 if p == "<custom>" else 1 for p in pieces]
    return tokens, types


def write_tiny_gguf(path: Path, arch: str, seed: int = 0) -> Path:
    """A file transformers' GGUF loader and ours both read: ``arch`` is "llama" or "gemma3"."""
    rng = np.random.default_rng(seed)
    writer = GGUFWriter(str(path), arch)
    writer.add_name(f"tiny {arch}")
    writer.add_context_length(256)
    writer.add_embedding_length(D_MODEL)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    if arch == "llama":
        tokens, types, merges = _byte_level_vocab()
        writer.add_rope_dimension_count(HEAD_DIM)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("smollm")
        writer.add_token_merges(merges)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_unk_token_id(0)
        writer.add_pad_token_id(2)
        writer.add_add_bos_token(False)
        writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")
    else:
        tokens, types = _sentencepiece_vocab()
        writer.add_key_length(HEAD_DIM)
        writer.add_value_length(HEAD_DIM)
        writer.add_sliding_window(8)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_scores([-float(i) for i in range(len(tokens))])
        writer.add_bos_token_id(2)
        writer.add_eos_token_id(1)
        writer.add_unk_token_id(3)
        writer.add_pad_token_id(0)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
    writer.add_token_list(tokens)
    writer.add_token_types(types)

    count = iter(range(10**6))

    def add(name: str, shape: tuple[int, ...], norm: bool = False):
        if norm:  # RMSNorm weights near 1 (Gemma stores 1 + γ), always F32 as llama.cpp keeps them
            writer.add_tensor(name, (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32))
            return
        values = (0.05 * rng.standard_normal(shape)).astype(np.float32)
        quant = QUANTS[next(count) % len(QUANTS)]
        if quant == Q.F32:
            writer.add_tensor(name, values)
        elif quant == Q.F16:
            writer.add_tensor(name, values.astype(np.float16))
        else:
            writer.add_tensor(name, quantize(values, quant), raw_dtype=quant)

    add("token_embd.weight", (len(tokens), D_MODEL))
    for layer in range(LAYERS):
        block = f"blk.{layer}"
        add(f"{block}.attn_norm.weight", (D_MODEL,), norm=True)
        add(f"{block}.attn_q.weight", (HEADS * HEAD_DIM, D_MODEL))
        add(f"{block}.attn_k.weight", (KV_HEADS * HEAD_DIM, D_MODEL))
        add(f"{block}.attn_v.weight", (KV_HEADS * HEAD_DIM, D_MODEL))
        add(f"{block}.attn_output.weight", (D_MODEL, HEADS * HEAD_DIM))
        add(f"{block}.ffn_norm.weight", (D_MODEL,), norm=True)
        add(f"{block}.ffn_gate.weight", (FFN, D_MODEL))
        add(f"{block}.ffn_up.weight", (FFN, D_MODEL))
        add(f"{block}.ffn_down.weight", (D_MODEL, FFN))
        if arch == "gemma3":
            add(f"{block}.attn_q_norm.weight", (HEAD_DIM,), norm=True)
            add(f"{block}.attn_k_norm.weight", (HEAD_DIM,), norm=True)
            add(f"{block}.post_attention_norm.weight", (D_MODEL,), norm=True)
            add(f"{block}.post_ffw_norm.weight", (D_MODEL,), norm=True)
    add("output_norm.weight", (D_MODEL,), norm=True)
    if arch == "llama":
        add("output.weight", (len(tokens), D_MODEL))  # untied, unlike SmolLM2
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
