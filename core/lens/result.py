"""What the lens reads off the residual stream: ``LensResult`` (per layer x prompt x position)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class LensResult:
    """Per layer x prompt x position: what the lens reads off the residual stream.

    Arrays are indexed [layer, prompt, slot, ...]; ``positions[p][slot]`` is the token position
    (0-based within prompt p) that a slot decodes, and ``slot_mask[p, slot]`` is False for
    padding slots when prompts asked for different numbers of positions.
    """

    model: str
    n_layers: int
    lens: str  # "logit" | "tuned"
    sites: list[tuple[int, str]] | None  # per row (block, "embed"|"attn"|"mlp") when sub-layer rows were decoded
    tokens: list[list[str]]  # each prompt's tokens, as text
    token_ids: list[list[int]]
    positions: list[list[int]]
    slot_mask: np.ndarray  # [prompt, slot] bool
    top_ids: np.ndarray  # [layer, prompt, slot, k] int64
    top_tokens: list  # same nesting as top_ids, token text
    top_probs: np.ndarray  # [layer, prompt, slot, k]
    entropy_bits: np.ndarray  # [layer, prompt, slot]
    kl_to_final_bits: np.ndarray  # [layer, prompt, slot], KL(final || layer)
    target_probs: np.ndarray | None = None  # [layer, prompt, slot, target]
    target_ranks: np.ndarray | None = None  # [layer, prompt, slot, target], 1 = top
    set_probs: np.ndarray | None = None  # [layer, prompt, slot, set]: probability mass of each token set
    energy: np.ndarray | None = None  # [layer, prompt, slot]
    extras: dict = field(default_factory=dict)

    @property
    def layers(self) -> range:
        """Row indices: layers 0..n_layers, or 0..2·n_layers with sub-layer rows."""
        return range(len(self.top_ids))

    def layers_json(self, prompt: int = 0, slot: int = 0) -> list[dict]:
        """The CLI contract's "layers" list for one prompt and position (with sub-layer rows, each has a "site")."""
        return [
            {
                "layer": self.layer_of(layer),
                **({"site": self.sites[layer][1]} if self.sites else {}),
                "top": [
                    {"token": tok, "id": int(i), "prob": float(p)}
                    for tok, i, p in zip(
                        self.top_tokens[layer][prompt][slot],
                        self.top_ids[layer, prompt, slot],
                        self.top_probs[layer, prompt, slot],
                    )
                ],
                "entropy_bits": float(self.entropy_bits[layer, prompt, slot]),
                "kl_to_final_bits": float(self.kl_to_final_bits[layer, prompt, slot]),
            }
            for layer in self.layers
        ]

    def layer_of(self, row: int) -> int:
        """The layer (block) number of a row: the row itself, or its block with sub-layer rows."""
        return self.sites[row][0] if self.sites else row

    def row_label(self, row: int) -> str:
        """How charts name a row: "12", or "12 attn" / "12 mlp" / "0 embed" with sub-layer rows."""
        return f"{self.sites[row][0]} {self.sites[row][1]}" if self.sites else str(row)

    def tracked_json(self, names: Sequence[str], prompt: int = 0, slot: int = 0) -> list[dict]:
        """The CLI's "tracked" list: per tracked target (``targets`` of ``run_lens``), prob and rank at every row."""
        if self.target_probs is None:
            return []
        out = []
        for t, name in enumerate(names):
            out.append({
                "token": name,
                "id": int(self.extras["target_ids"][prompt][t]),
                "layers": [
                    {"layer": self.layer_of(row), **({"site": self.sites[row][1]} if self.sites else {}),
                     "prob": float(self.target_probs[row, prompt, slot, t]),
                     "rank": int(self.target_ranks[row, prompt, slot, t])}
                    for row in self.layers
                ],
            })
        return out

    def frame(self, prompt: int = 0) -> pd.DataFrame:
        """Long table for one prompt: one row per (row, position, rank).

        Columns: row, layer, site ("embed", "block", or with sub-layer rows "attn"/"mlp"), position,
        input_token, rank, token, token_id, prob, entropy_bits, kl_to_final_bits.
        """
        rows = []
        for layer in self.layers:
            for slot, position in enumerate(self.positions[prompt]):
                for rank, (tok, tid, p) in enumerate(
                    zip(
                        self.top_tokens[layer][prompt][slot],
                        self.top_ids[layer, prompt, slot],
                        self.top_probs[layer, prompt, slot],
                    ),
                    start=1,
                ):
                    rows.append(
                        (
                            layer,
                            self.layer_of(layer),
                            self.sites[layer][1] if self.sites else ("embed" if layer == 0 else "block"),
                            position,
                            self.tokens[prompt][position],
                            rank,
                            tok,
                            int(tid),
                            float(p),
                            float(self.entropy_bits[layer, prompt, slot]),
                            float(self.kl_to_final_bits[layer, prompt, slot]),
                        )
                    )
        import pandas as pd  # here, not at start-up: pandas costs a CLI run ~0.4 s

        return pd.DataFrame(
            rows,
            columns=[
                "row", "layer", "site", "position", "input_token", "rank", "token", "token_id", "prob",
                "entropy_bits", "kl_to_final_bits",
            ],
        )
