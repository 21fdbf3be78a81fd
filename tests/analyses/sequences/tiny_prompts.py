"""Hand-made prompt pairs for tiny random models (no model gets a real task right by chance)."""

import torch

from core import interventions as iv
from core.analyses import sequences as sq


def tiny_prompts(handle, n=4, length=6):
    """Hand-made equal-length pairs for a random model: correct = its own top-1 token, incorrect = another."""
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(4, len(handle.tokenizer), (n, length), generator=g)
    corrupt = torch.randint(4, len(handle.tokenizer), (n, length), generator=g)
    batch = iv.Batch(clean, torch.ones_like(clean), [length] * n)
    top = handle.logits(batch)[:, -1].topk(5, dim=-1).indices
    pairs = [sq.PromptPair(handle.tokenizer.decode(c), handle.tokenizer.decode(x), "", "", int(t[0]), int(t[3]))
             for c, x, t in zip(clean, corrupt, top)]
    prompts = sq.PromptSet("tiny", "bare", pairs, n, n, {}, length)
    return prompts, batch, iv.Batch(corrupt, torch.ones_like(corrupt), [length] * n)


def prepared(handle, ablation="mean"):
    prompts, batch, corrupt = tiny_prompts(handle)
    run = handle.record_run(batch)
    values = iv.replacement(ablation, handle.capture(corrupt), len(prompts.pairs))
    return sq.Prepared(prompts, batch, run, values, prompts.answer_ids())
