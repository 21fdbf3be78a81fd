"""TinyLM: a minimal decoder-only transformer in plain PyTorch, small enough to read in one sitting.

Pre-norm blocks (x + attn(ln(x)), then x + mlp(ln(x))), learned or sinusoidal positions,
a final LayerNorm and an unembedding tied to the token embedding. The attribute names
(`tok_emb`, `blocks[i].attn.out_proj`, `blocks[i].mlp`, `ln_f`, `lm_head`) are the ones
the logit-lens adapter reads, so keep them stable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserError

POSITIONAL_KINDS = ("learned", "sinusoidal")


@dataclass(frozen=True)
class TinyLMConfig:
    """Shape of a TinyLM. `d_mlp` 0 means 4 * d_model; `vocab_size` 0 means "not known yet"
    (the trainer sets it from the tokenizer)."""

    model_type: ClassVar[str] = "tinylm"  # how core.models.adapters recognises the family
    # The attention kernel a TinyLM starts with, under Hugging Face's name: core.interventions reads it and
    # switches to "eager" with TinyLM.set_attn_implementation when it needs the attention weights.
    _attn_implementation: ClassVar[str] = "sdpa"

    vocab_size: int = 0  # token ids 0 .. vocab_size - 1
    n_layers: int = 2  # blocks
    n_heads: int = 4  # per block; each reads d_model / n_heads dimensions
    d_model: int = 128  # width of the residual stream
    context_length: int = 64  # tokens a forward pass may see
    positional: str = "learned"  # or "sinusoidal"
    dropout: float = 0.0  # on embeddings, attention weights and residual writes, while training
    d_mlp: int = 0  # hidden width of each MLP

    def __post_init__(self):
        if self.vocab_size < 0:
            raise UserError(f"vocab_size must be positive, got {self.vocab_size}")
        for name in ("n_layers", "n_heads", "d_model", "context_length"):
            if int(getattr(self, name)) <= 0:
                raise UserError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise UserError(
                f"d_model ({self.d_model}) must be divisible by the number of heads ({self.n_heads})"
            )
        if self.positional not in POSITIONAL_KINDS:
            raise UserError(f"positional must be one of {POSITIONAL_KINDS}, got {self.positional!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.d_mlp <= 0:
            object.__setattr__(self, "d_mlp", 4 * self.d_model)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoidal_positions(context_length: int, d_model: int) -> torch.Tensor:
    """The fixed [context_length, d_model] table of Vaswani et al. (sin on even, cos on odd dims)."""
    position = torch.arange(context_length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(context_length, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
    return table


def allowed_keys(seq_len: int, attention_mask: torch.Tensor | None, device) -> torch.Tensor:
    """Boolean [batch or 1, 1, query, key]: True where a query may attend to a key.

    Causal (key <= query) and, with an `attention_mask` [batch, pos] (0 = left padding),
    never a padding key. A padding query may still see itself, so no softmax row is empty
    (an all-masked row would give NaN); real positions are unaffected by that.
    """
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
    if attention_mask is None:
        return causal[None, None]
    real_key = attention_mask.to(torch.bool)[:, None, None, :]
    diagonal = torch.eye(seq_len, dtype=torch.bool, device=device)
    return (causal & real_key) | diagonal


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention. `out_proj` reads the heads' outputs concatenated,
    head h in input slice [h*d_head, (h+1)*d_head)."""

    def __init__(self, config: TinyLMConfig):
        super().__init__()
        self.n_heads, self.d_head = config.n_heads, config.d_head
        self.qkv_proj = nn.Linear(config.d_model, 3 * config.d_model)
        self.out_proj = nn.Linear(config.d_model, config.d_model)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.eager = False  # compute and return the pattern on every call (TinyLM.set_attn_implementation)

    def forward(self, x, attention_mask=None, return_pattern=False):
        """x [batch, pos, d_model] -> (output [batch, pos, d_model], pattern [batch, head, query, key] or None:
        the pattern when ``return_pattern`` or in eager mode)."""
        batch, seq_len, d_model = x.shape
        # q, k, v: [batch, head, pos, d_head]
        q, k, v = (
            t.view(batch, seq_len, self.n_heads, self.d_head).transpose(1, 2)
            for t in self.qkv_proj(x).split(d_model, dim=-1)
        )
        dropout_p = self.attn_dropout if self.training else 0.0
        pattern = None
        if return_pattern or self.eager:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)
            scores = scores.masked_fill(~allowed_keys(seq_len, attention_mask, x.device), float("-inf"))
            pattern = scores.softmax(dim=-1)
            heads = F.dropout(pattern, dropout_p, self.training) @ v
        elif attention_mask is None:
            heads = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            mask = allowed_keys(seq_len, attention_mask, x.device)
            heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        heads = heads.transpose(1, 2).reshape(batch, seq_len, d_model)  # concat heads
        return self.resid_dropout(self.out_proj(heads)), pattern


class MLP(nn.Module):
    """Position-wise feed-forward: d_model -> d_mlp -> GELU -> d_model."""

    def __init__(self, config: TinyLMConfig):
        super().__init__()
        self.in_proj = nn.Linear(config.d_model, config.d_mlp)
        self.out_proj = nn.Linear(config.d_mlp, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.out_proj(F.gelu(self.in_proj(x))))


class Block(nn.Module):
    """One pre-norm transformer block: residual + attn(ln_1(residual)), then + mlp(ln_2(.))."""

    def __init__(self, config: TinyLMConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x, attention_mask=None, return_pattern=False):
        """Residual [batch, pos, d_model] before the block -> residual after it
        (and the attention pattern when `return_pattern`)."""
        attn_out, pattern = self.attn(self.ln_1(x), attention_mask, return_pattern)
        x = x + attn_out
        x = x + self.mlp(self.ln_2(x))
        return (x, pattern) if return_pattern else x


@dataclass
class Trace:
    """One forward pass, kept whole: logits [batch, pos, vocab], residuals (n_layers + 1 tensors
    [batch, pos, d_model]; 0 = embedding output, l = after block l), attention patterns
    (n_layers tensors [batch, head, query, key])."""

    logits: torch.Tensor
    residuals: list[torch.Tensor]
    patterns: list[torch.Tensor]


class TinyLM(nn.Module):
    """Decoder-only transformer language model: token ids [batch, pos] -> next-token logits."""

    def __init__(self, config: TinyLMConfig):
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError("TinyLMConfig.vocab_size must be set (from the tokenizer) before building a model")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        if config.positional == "learned":
            self.pos_emb = nn.Embedding(config.context_length, config.d_model)
        else:
            self.register_buffer(
                "pos_table", sinusoidal_positions(config.context_length, config.d_model), persistent=False
            )
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied unembedding
        self.apply(self._init_weights)
        # GPT-2's scaled init: each residual write has std 0.02 / sqrt(2 * n_layers), so the
        # residual stream's variance does not grow with depth at initialisation.
        for block in self.blocks:
            for proj in (block.attn.out_proj, block.mlp.out_proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_attn_implementation(self, name: str) -> None:
        """"sdpa" (the fused kernel, no weights) or "eager" (explicit softmax: every attention module also
        returns its pattern), the switch Hugging Face models offer under the same name."""
        if name not in ("sdpa", "eager"):
            raise ValueError(f"TinyLM attention is 'sdpa' or 'eager', not {name!r}")
        for block in self.blocks:
            block.attn.eager = name == "eager"

    def embed(self, input_ids, position_ids=None):
        """Residual stream before block 0: token + positional embedding, [batch, pos, d_model].

        position_ids [batch, pos] default to 0..pos-1; negative ids (left padding, from
        cumsum(mask) - 1) are read as 0.
        """
        seq_len = input_ids.shape[-1]
        if seq_len > self.config.context_length:
            raise UserError(
                f"input has {seq_len} tokens but this model's context is {self.config.context_length}; "
                "shorten the prompt"
            )
        if position_ids is None:
            position_ids = torch.arange(seq_len, device=input_ids.device)[None]
        position_ids = position_ids.clamp(min=0)
        if self.config.positional == "learned":
            positions = self.pos_emb(position_ids)
        else:
            positions = self.pos_table[position_ids]
        return self.emb_dropout(self.tok_emb(input_ids) + positions)

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        """input_ids [batch, pos] -> logits [batch, pos, vocab]. attention_mask [batch, pos]: 0 = padding."""
        x = self.embed(input_ids, position_ids)
        for block in self.blocks:
            x = block(x, attention_mask)
        return self.lm_head(self.ln_f(x))

    @torch.no_grad()
    def trace(self, input_ids, attention_mask=None, position_ids=None) -> Trace:
        """Forward pass that also keeps every residual and attention pattern (for the page's plots)."""
        x = self.embed(input_ids, position_ids)
        residuals, patterns = [x], []
        for block in self.blocks:
            x, pattern = block(x, attention_mask, return_pattern=True)
            residuals.append(x)
            patterns.append(pattern)
        return Trace(self.lm_head(self.ln_f(x)), residuals, patterns)
