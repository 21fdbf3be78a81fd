"""Random equal-length batches and the architecture families the intervention tests run on."""

import torch

from core.models import Batch

# Llama (o_proj, no bias), GPT-2 (Conv1D c_proj with bias), GPT-NeoX (dense), Gemma 3 (post-attention norm).
FAMILIES = [("llama", "llama"), ("gpt2", "gpt2"), ("gpt_neox", "gpt2"), ("gemma3", "sentencepiece")]


def equal_length_batch(handle, n=4, length=6, seed=0):
    """n random token sequences of exactly ``length`` tokens (ablation compares positions one to one)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, len(handle.tokenizer), (n, length), generator=generator)
    return Batch(ids, torch.ones_like(ids), [length] * n)
