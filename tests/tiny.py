"""Tiny random models and tokenizers built in milliseconds, one per architecture family.

Nothing is downloaded: configs are written here and tokenizers are trained on a few lines
of text with the `tokenizers` library, in the three styles analyses must handle:
SentencePiece with byte fallback (Llama-2), SentencePiece without it (Gemma-like, Metaspace),
and GPT-2's byte-level BPE.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from core.models import ModelHandle, wrap_model

CORPUS = [
    "The capital of France is Paris. The capital of Germany is Berlin.",
    "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15",
    'Français: "fleur" - English: "flower" - 中文: "花" - हिन्दी: "फूल" - தமிழ்: "மலர்"',
    "one two three four five six seven eight nine ten",
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday",
    "def f(x):\n    return x + 1\n",
] * 4
VOCAB_SIZE = 320


@lru_cache(maxsize=None)
def tokenizer(style: str = "llama") -> PreTrainedTokenizerFast:
    """style: "llama" (▁ + byte fallback, adds BOS), "sentencepiece" (▁, no byte fallback), "gpt2" (byte-level)."""
    special = ["<unk>", "<s>", "</s>", "<pad>"]
    if style == "gpt2":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=VOCAB_SIZE, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    else:
        byte_fallback = style == "llama"
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=byte_fallback))
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]) if byte_fallback else normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
        tok.decoder = decoders.Sequence(
            ([decoders.ByteFallback()] if byte_fallback else []) + [decoders.Replace("▁", " "), decoders.Fuse()]
            + ([decoders.Strip(" ", 1, 0)] if byte_fallback else [])
        )
        alphabet = sorted(set("".join(CORPUS).replace(" ", "▁")) - set("花फूलமலர்"))
        byte_tokens = [f"<0x{b:02X}>" for b in range(256)] if byte_fallback else []
        trainer = trainers.BpeTrainer(
            vocab_size=VOCAB_SIZE + len(byte_tokens), special_tokens=special + byte_tokens,
            initial_alphabet=alphabet, limit_alphabet=len(alphabet),
        )
    tok.train_from_iterator(CORPUS, trainer)
    if style == "llama":
        from tokenizers.processors import TemplateProcessing

        tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def config(family: str, vocab_size: int):
    """A small random config of each supported family (2-3 layers, 4 heads)."""
    from transformers import (
        Gemma2Config,
        Gemma3TextConfig,
        GemmaConfig,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
    )

    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    if family == "llama":
        return LlamaConfig(**common)
    if family == "mistral":
        return MistralConfig(**common, sliding_window=None)
    if family == "qwen2":
        return Qwen2Config(**common)
    if family == "gemma":
        return GemmaConfig(**common, head_dim=16)
    if family == "gemma2":
        return Gemma2Config(**common, head_dim=16, final_logit_softcapping=5.0, attn_logit_softcapping=20.0,
                            query_pre_attn_scalar=16, sliding_window=8)
    if family == "gemma3":
        return Gemma3TextConfig(**common, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                                final_logit_softcapping=7.0)
    if family == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=3, n_head=4, n_positions=256, bos_token_id=1, eos_token_id=2)
    if family == "gpt_neox":
        return GPTNeoXConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                             num_attention_heads=4, max_position_embeddings=256)
    raise ValueError(family)


FAMILIES = ("llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3", "gpt2", "gpt_neox")

# One case per supported model_type (core.models.adapters.ARCHITECTURES), plus "<type>/<variant>" cases for the
# other residual layout a config flag selects. Every case: 3 layers, d_model 64, 4 heads; MoE: 4 experts, top-2.
ARCHITECTURE_CASES = (
    "llama", "mistral", "qwen2", "qwen3", "ministral", "phi3", "smollm3", "helium", "glm", "seed_oss", "arcee",
    "apertus", "ernie4_5", "hunyuan_v1_dense", "bitnet",
    "mixtral", "qwen3_moe", "qwen2_moe", "olmoe", "phimoe", "deepseek_v2", "deepseek_v3", "dots1", "glm4_moe",
    "ernie4_5_moe", "hunyuan_v1_moe", "gpt_oss",
    "olmo", "olmo2", "olmo3", "exaone4", "glm4", "gemma", "vaultgemma", "gemma2", "gemma3_text", "gemma3",
    "granite", "granitemoe", "cohere", "cohere2", "nemotron", "stablelm", "stablelm/parallel", "starcoder2",
    "persimmon", "phi", "falcon", "falcon/sequential", "gpt2", "gpt_bigcode", "gpt_neox", "gpt_neox/sequential",
    "tinylm",
)

_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
              head_dim=24, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=3)
# These derive head_dim from hidden_size / heads (or from their MLA ranks) and break when given another.
_OWN_HEAD_DIM = ("bitnet", "olmoe", "deepseek_v2", "deepseek_v3", "stablelm", "persimmon", "falcon")
_ROUTED = dict(n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, moe_intermediate_size=32,
               first_k_dense_replace=1, n_group=1, topk_group=1)  # DeepSeek-style: layer 0 stays dense
_MLA = dict(num_key_value_heads=4, kv_lora_rank=16, q_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=24)
_OVERRIDES = {
    "helium": dict(head_dim=16),  # its o_proj is hidden -> hidden whatever head_dim says
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "phimoe": dict(num_local_experts=4, num_experts_per_tok=2),
    "gpt_oss": dict(num_local_experts=4, num_experts_per_tok=2),
    "olmoe": dict(num_experts=4, num_experts_per_tok=2),
    "qwen3_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, mlp_only_layers=[1]),
    "qwen2_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, mlp_only_layers=[1],
                      shared_expert_intermediate_size=32),
    "hunyuan_v1_moe": dict(num_experts=4, moe_topk=2, moe_intermediate_size=32),
    "ernie4_5_moe": dict(moe_num_experts=4, moe_k=2, moe_intermediate_size=32, moe_num_shared_experts=1,
                         moe_layer_start_index=1),
    "deepseek_v2": {**_ROUTED, **_MLA}, "deepseek_v3": {**_ROUTED, **_MLA}, "dots1": _ROUTED, "glm4_moe": _ROUTED,
    "granite": dict(embedding_multiplier=12.0, residual_multiplier=0.22, logits_scaling=8.0, attention_multiplier=0.1),
    "granitemoe": dict(embedding_multiplier=12.0, residual_multiplier=0.22, logits_scaling=8.0,
                       attention_multiplier=0.1, num_local_experts=4, num_experts_per_tok=2),
    "cohere": dict(logit_scale=0.5), "cohere2": dict(logit_scale=0.5),
    "vaultgemma": dict(final_logit_softcapping=6.0, query_pre_attn_scalar=24),
    "stablelm/parallel": dict(use_parallel_residual=True),
    "falcon/sequential": dict(parallel_attn=False),
}


def config_for(case: str, vocab_size: int):
    """A small random config for one of ARCHITECTURE_CASES ("<model_type>" or "<model_type>/<variant>")."""
    from transformers import AutoConfig, Gemma3Config, GPTNeoXConfig, SiglipVisionConfig

    model_type = case.split("/")[0]
    if model_type in ("llama", "mistral", "qwen2", "gemma", "gemma2", "gpt2"):
        return config(model_type, vocab_size)
    if model_type == "gemma3_text":
        return config("gemma3", vocab_size)
    if model_type == "gpt_neox":
        return GPTNeoXConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                             num_attention_heads=4, max_position_embeddings=256,
                             use_parallel_residual=case != "gpt_neox/sequential")
    if model_type == "gemma3":  # Gemma3ForConditionalGeneration: a tiny vision tower beside the text model
        vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                    image_size=28, patch_size=14)
        return Gemma3Config(text_config=config("gemma3", vocab_size).to_dict(), vision_config=vision.to_dict(),
                            mm_tokens_per_image=4, image_token_id=vocab_size, boi_token_index=1, eoi_token_index=2)
    shape = {k: v for k, v in _SHAPE.items() if not (k == "head_dim" and model_type in _OWN_HEAD_DIM)}
    return AutoConfig.for_model(model_type, vocab_size=vocab_size, **{**shape, **_OVERRIDES.get(case, {})})


def _widened(m, seed: int, norms_too: bool = False):
    """Random init gives near-uniform outputs; widen the weights so distributions are peaked and tests bite.
    ``norms_too`` also moves every vector (norm γ, biases) off its init, so a norm read wrongly shows."""
    if norms_too:
        torch.manual_seed(seed + 1)
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim >= 2:
                p.mul_(8.0)
            elif norms_too and p.is_floating_point():
                p.add_(0.3 * torch.randn_like(p))
    return m.eval()


def model(family: str, seed: int = 0, style: str = "llama"):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    tok = tokenizer(style)
    cfg = config(family, vocab_size=len(tok))
    cfg._attn_implementation = "eager"
    m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return _widened(m, seed), tok


def model_for(case: str, seed: int = 0):
    """A tiny random model of one of ARCHITECTURE_CASES and the llama-style tokenizer it was sized for."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    tok = tokenizer("llama")
    if case == "tinylm":
        from core.models.tinylm import TinyLM, TinyLMConfig

        m = TinyLM(TinyLMConfig(vocab_size=len(tok), n_layers=3, n_heads=4, d_model=64, context_length=256))
    else:
        cfg = config_for(case, vocab_size=len(tok))
        cfg._attn_implementation = "eager"
        m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return _widened(m, seed, norms_too=True), tok


def handle(family: str = "llama", seed: int = 0, style: str = "llama") -> ModelHandle:
    m, tok = model(family, seed, style)
    return wrap_model(m, tok, f"tiny-{family}")


def save(folder, family: str = "llama", seed: int = 0):
    """A tiny random model of ``family`` and its tokenizer saved as a Hugging Face folder (what ``--model`` reads)."""
    m, tok = model(family, seed=seed)
    m.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
