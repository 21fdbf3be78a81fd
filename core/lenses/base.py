"""The lens strategy interface and the logit lens (the identity)."""

from __future__ import annotations

import torch

LENS_NAMES = ("logit", "tuned")


class Lens:
    """Reads residual rows before the frozen final norm and unembedding.

    ``transform(residual)`` takes Float[Tensor, "layer ... d_model"] with layer 0 = the embeddings
    and the last row = the last block's output, and returns rows of the same shape. Sub-layer rows
    (2L + 1) are only meaningful for lenses that say ``reads_sublayers``.
    """

    name = "logit"
    reads_sublayers = True

    def transform(self, residual: torch.Tensor) -> torch.Tensor:
        return residual


class LogitLens(Lens):
    """nostalgebraist's logit lens: decode every layer's residual as if it were the last."""
