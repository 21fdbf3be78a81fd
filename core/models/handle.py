"""A loaded model and the narrow interface every analysis uses to look inside it.

The interface is three operations, all shape-annotated:
``encode`` (prompts -> left-padded batch), ``residuals`` (one forward pass that captures the
residual stream after every layer at chosen positions) and ``decode`` (final norm +
unembedding + soft cap). Interventions add hooks through ``core.interventions``. A second
backend (remote execution) would implement the same three operations.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from core.errors import UserError
from core.models.adapters import Adapter, in_features

DEFAULT_MAX_PROMPT_TOKENS = 4096


def max_prompt_tokens() -> int | None:
    """Longest prompt (in tokens) an analysis accepts: $LAYERSCOPE_MAX_PROMPT_TOKENS (default 4096, 0 = the
    model's context). A pasted book would otherwise keep a shared server busy for many minutes."""
    raw = os.environ.get("LAYERSCOPE_MAX_PROMPT_TOKENS", "").strip()
    try:
        cap = int(raw) if raw else DEFAULT_MAX_PROMPT_TOKENS
    except ValueError:
        raise UserError(f"LAYERSCOPE_MAX_PROMPT_TOKENS must be a whole number of tokens, got '{raw}'") from None
    return cap if cap > 0 else None


@dataclass
class Batch:
    """Prompts tokenized and left-padded so that position -1 is every prompt's last token."""

    input_ids: torch.Tensor  # [batch, pos]
    attention_mask: torch.Tensor  # [batch, pos], 0 on left padding
    lengths: list[int]  # real (unpadded) token count of each prompt

    @property
    def position_ids(self) -> torch.Tensor:
        """Positions counted from each prompt's first real token (left padding gets 0)."""
        return (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def padded_index(self, row: int, position: int) -> int:
        """Index in the padded batch of ``position`` of prompt ``row`` (negative counts from the end)."""
        length = self.lengths[row]
        if not -length <= position < length:
            raise UserError(f"position {position} is outside the prompt ({length} tokens: use 0..{length - 1} or -1)")
        pad = self.input_ids.shape[1] - length
        return pad + (position % length)


@dataclass
class ModelHandle:
    """A loaded causal LM with what the analyses need to know about it."""

    spec: str  # what the user asked for, e.g. "gemma-3-270m" or a folder
    model: nn.Module
    tokenizer: object  # a transformers tokenizer
    adapter: Adapter
    architecture: str  # config.model_type, e.g. "gemma3_text"
    n_layers: int
    n_heads: int
    d_model: int
    vocab_size: int  # rows of the unembedding (may exceed len(tokenizer))
    dtype: str
    device: torch.device
    quantization: str = "none"
    memory_bytes: int = 0
    context_length: int | None = None
    # Inference on one model is serialized: Streamlit sessions share the handle and hooks are global.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def head_dim(self) -> int:
        return in_features(self.adapter.attn_out_proj(self.adapter.layers(self.model)[0])) // self.n_heads

    def summary(self) -> dict:
        """What the sidebar and the CLI show about the model."""
        names = ("spec", "architecture", "n_layers", "n_heads", "d_model", "vocab_size", "dtype", "quantization")
        return {**{name: getattr(self, name) for name in names}, "device": str(self.device),
                "memory_mb": round(self.memory_bytes / 2**20, 1)}

    # -- the narrow interface -------------------------------------------------------------

    def encode(self, prompts: Sequence[str], add_special_tokens: bool = True) -> Batch:
        """Tokenize and left-pad; refuses empty prompts and prompts longer than the context."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            raise UserError("no prompt given: type at least one prompt")
        ids = []
        for prompt in prompts:
            if not prompt or not prompt.strip():
                raise UserError("the prompt is empty: type some text to look at")
            try:
                prompt.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8 (e.g. a shell argument)
                raise UserError("the prompt is not valid Unicode text (it holds bytes that are not UTF-8): retype it") from None
            row = self.tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
            if self.context_length and len(row) > self.context_length:
                raise UserError(
                    f"the prompt is {len(row)} tokens, longer than the model's context of "
                    f"{self.context_length}: shorten it"
                )
            cap = max_prompt_tokens()
            if cap and len(row) > cap:
                raise UserError(
                    f"the prompt is {len(row)} tokens; this installation looks at most {cap} tokens per prompt "
                    f"(LAYERSCOPE_MAX_PROMPT_TOKENS): shorten it"
                )
            if not row:
                raise UserError("the prompt produced no tokens: type some text to look at")
            ids.append(row)
        width = max(len(r) for r in ids)
        pad_id = self.pad_token_id
        input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, width - len(row) :] = torch.tensor(row)
            attention_mask[i, width - len(row) :] = 1
        return Batch(input_ids, attention_mask, [len(r) for r in ids])

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    @property
    def input_device(self) -> torch.device:
        """Where input ids go (the embedding's device when a model is spread over GPUs)."""
        return self.adapter.embed(self.model).weight.device

    def residuals(self, batch: Batch, index: torch.Tensor | None = None, sublayer: bool = False) -> torch.Tensor:
        """The residual stream after every layer, from ONE forward pass.

        ``index`` is [batch, n_pos] padded-position indices to keep (None keeps all).
        Returns Float[Tensor, "layer batch pos d_model"] with layer 0 = the embeddings as the
        first block sees them and layer n_layers = the output of the last block (before the
        final norm). With ``sublayer``, 2·n_layers + 1 rows: the embeddings, then for each block the
        residual after its attention (block input + what the attention adds) and after its MLP (the
        block's output, so the last row is the same as without ``sublayer``). The unembedding is never run.
        """
        layers = self.adapter.layers(self.model)
        per_block = 2 if sublayer else 1
        captured: list[torch.Tensor | None] = [None] * (per_block * len(layers) + 1)
        block_inputs: list[torch.Tensor | None] = [None] * len(layers)

        def keep(hidden: torch.Tensor) -> torch.Tensor:
            if index is None:
                return hidden.detach()
            gather = index.to(hidden.device).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
            return hidden.detach().gather(1, gather)

        def first(output):
            return output[0] if isinstance(output, tuple) else output

        def before(i):
            def hook(module, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                if i == 0:
                    captured[0] = keep(hidden)
                if sublayer:
                    block_inputs[i] = hidden.detach()
            return hook

        def after(i):
            def hook(module, args, output):
                captured[per_block * (i + 1)] = keep(first(output))

            return hook

        def after_attention(i):
            def hook(module, args, output):
                captured[2 * i + 1] = keep(block_inputs[i] + first(output).to(block_inputs[i].device))

            return hook

        def register() -> list:
            handles = []
            for i, layer in enumerate(layers):
                if i == 0 or sublayer:
                    handles.append(layer.register_forward_pre_hook(before(i), with_kwargs=True))
                handles.append(layer.register_forward_hook(after(i)))
                if sublayer:
                    handles.append(self.adapter.attn_branch(layer).register_forward_hook(after_attention(i)))
            return handles

        self.run_body_hooked(batch, register)
        device = captured[-1].device
        return torch.stack([c.to(device) for c in captured])

    def run_body_hooked(self, batch: Batch, register) -> None:
        """One pass of the decoder stack (no autograd) with the hooks ``register()`` adds and returns.

        Hooks are global to the shared model: they are registered under the lock, or another session's
        forward pass would run them (and this one's would capture theirs), and removed afterwards.
        """
        with self.lock:
            handles = register()
            try:
                with torch.inference_mode():
                    self.run_body(batch)
            finally:
                for h in handles:
                    h.remove()

    def _inputs(self, batch: Batch) -> dict:
        device = self.input_device
        return dict(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            position_ids=batch.position_ids.to(device),
        )

    def run_body(self, batch: Batch):
        """Run the decoder stack (no unembedding) on a batch; hooks see every layer."""
        return self.adapter.run_body(self.model, **self._inputs(batch))

    def decode(self, residual: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
        """Final norm + unembedding (+ soft cap) of residual vectors [..., d_model] -> logits [..., vocab], float32.

        ``differentiable=True`` keeps the autograd graph (for gradients of a loss w.r.t. the residual).
        """
        norm = self.adapter.final_norm(self.model)
        unembed = self.adapter.unembed(self.model)
        with torch.inference_mode(not differentiable):
            weight = getattr(unembed, "weight", None)
            if residual.shape[-1] != self.d_model:
                raise ValueError(f"expected residual vectors of size d_model={self.d_model}, got shape {tuple(residual.shape)}")
            x = residual.to(norm.weight.device if hasattr(norm, "weight") else residual.device)
            logits = unembed(norm(x).to(weight.dtype if weight is not None and weight.is_floating_point() else x.dtype))
            logits = logits.float()
            cap = self.adapter.softcap(self.model)
            if cap:
                logits = torch.tanh(logits / cap) * cap
        return logits

    def logits(self, batch: Batch) -> torch.Tensor:
        """The model's own next-token logits [batch, pos, vocab] (float32), for checks."""
        with self.lock, torch.inference_mode():
            return self.adapter.run_logits(self.model, **self._inputs(batch)).float()
