"""Text generation from a TinyLM: greedy (batched, for skill probes) and sampled (temperature, top-k)."""

from __future__ import annotations

import torch

from core.models.tinylm import TinyLM
from core.errors import UserError


def last_position_logits(model: TinyLM, input_ids, attention_mask):
    """Next-token logits [batch, vocab] for left-padded ids [batch, pos], seeing at most the
    model's context (the oldest tokens fall out of the window)."""
    window = model.config.context_length
    input_ids, attention_mask = input_ids[:, -window:], attention_mask[:, -window:]
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return model(input_ids, attention_mask=attention_mask, position_ids=position_ids)[:, -1]


@torch.no_grad()
def greedy_continuations(model: TinyLM, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """The most likely `max_new_tokens`-token continuation of each prompt, decoded (one batch)."""
    was_training = model.training
    model.eval()
    batch = tokenizer(prompts, padding=True, add_special_tokens=False, return_tensors="pt")
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    prompt_len = input_ids.shape[1]
    for _ in range(max_new_tokens):
        next_ids = last_position_logits(model, input_ids, attention_mask).argmax(-1, keepdim=True)
        input_ids = torch.cat([input_ids, next_ids], dim=1)
        attention_mask = torch.cat([attention_mask, torch.ones_like(next_ids)], dim=1)
    model.train(was_training)
    return tokenizer.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)


@torch.no_grad()
def sample_text(
    model: TinyLM,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int = 0,
    seed: int = 0,
) -> str:
    """Continue `prompt` by sampling. temperature 0 = greedy; top_k 0 = the whole vocabulary."""
    if temperature < 0:
        raise UserError(f"temperature must be >= 0, got {temperature}")
    if top_k < 0 or max_new_tokens <= 0:
        raise UserError("top-k must be >= 0 and the number of new tokens > 0")
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    ids = tokenizer(prompt or "\n", add_special_tokens=False, return_tensors="pt")["input_ids"]
    if ids.shape[1] == 0:
        raise UserError("the prompt has no tokens this tokenizer knows")
    mask = torch.ones_like(ids)
    new_ids = []
    for _ in range(max_new_tokens):
        logits = last_position_logits(model, ids, mask)[0]
        logits[tokenizer.pad_token_id] = float("-inf")  # padding is never a real next token
        if temperature == 0:
            next_id = logits.argmax()
        else:
            logits = logits / temperature
            if top_k:
                kth_largest = logits.topk(min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth_largest, float("-inf"))
            next_id = torch.multinomial(logits.softmax(-1), 1, generator=generator)[0]
        new_ids.append(int(next_id))
        ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
        mask = torch.cat([mask, mask[:, :1]], dim=1)
    model.train(was_training)
    return tokenizer.decode(new_ids, skip_special_tokens=True)
