"""Side by side: two prompts on one model, or one prompt on two models, layer by layer.

Per layer of A, the layer of B at the same fraction of depth (round(ℓ · L_B / L_A)), and KL(A ‖ B) of
their lens distributions at the last position, in bits. A KL needs one vocabulary: two models with
different tokenizers are compared by their top-1 tokens only (``kl_bits`` is NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core.analyses.base import Settings as BaseSettings
from core.errors import UserError
from core.models.handle import ModelHandle
from core.progress import Progress
from core.tokens import token_str

LN2 = math.log(2.0)


@dataclass(frozen=True)
class Settings(BaseSettings):
    prompt_a: str = "The Eiffel Tower is in the city of"
    prompt_b: str = "The Colosseum is in the city of"

    def validate(self) -> None:
        if not self.prompt_a.strip() or not self.prompt_b.strip():
            raise UserError("both prompts must hold some text")


@dataclass
class Result:
    model_a: str
    model_b: str
    same_vocabulary: bool
    layers: pd.DataFrame  # layer_a, layer_b, depth, kl_bits, top_a, top_b

    def to_json(self) -> dict:
        return {"model_a": self.model_a, "model_b": self.model_b, "same_vocabulary": self.same_vocabulary,
                "layers": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                           for row in self.layers.to_dict("records")]}

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"layers": self.layers}


def _last_position_logprobs(handle: ModelHandle, prompt: str) -> torch.Tensor:
    """log p of every layer at the prompt's last position: [layer 0..L, vocab] (float32)."""
    batch = handle.encode([prompt])
    index = torch.tensor([[batch.input_ids.shape[1] - 1]])
    residual = handle.residuals(batch, index)[:, 0, 0]  # [layer, d]
    return torch.log_softmax(handle.decode(residual), dim=-1)


def same_vocabulary(a: ModelHandle, b: ModelHandle) -> bool:
    return a.vocab_size == b.vocab_size and a.tokenizer.get_vocab() == b.tokenizer.get_vocab()


def run(handle_a: ModelHandle, settings: Settings, progress: Progress | None = None,
        handle_b: ModelHandle | None = None) -> Result:
    settings.validate()
    handle_b = handle_b or handle_a
    logp_a = _last_position_logprobs(handle_a, settings.prompt_a)
    logp_b = _last_position_logprobs(handle_b, settings.prompt_b)
    shared = handle_b is handle_a or same_vocabulary(handle_a, handle_b)
    rows = []
    for layer_a in range(handle_a.n_layers + 1):
        layer_b = round(layer_a * handle_b.n_layers / handle_a.n_layers)
        a, b = logp_a[layer_a], logp_b[layer_b]
        kl = float((a.exp() * (a - b)).sum() / LN2) if shared else float("nan")  # exactly 0 for equal rows
        rows.append({"layer_a": layer_a, "layer_b": layer_b, "depth": layer_a / handle_a.n_layers,
                     "kl_bits": max(kl, 0.0) if not np.isnan(kl) else kl,
                     "top_a": token_str(handle_a.tokenizer, int(a.argmax())),
                     "top_b": token_str(handle_b.tokenizer, int(b.argmax()))})
    return Result(handle_a.spec, handle_b.spec, shared, pd.DataFrame(rows))
