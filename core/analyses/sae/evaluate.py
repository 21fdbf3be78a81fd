"""How a dictionary does inside the model, on held-out text: FVU, L0, and the next-token loss with it spliced in.

Per batch of held-out sequences, three full passes: clean (recording the dictionary's sites), with the
dictionary's output spliced in at every position but BOS and padding, and with the site zero-ablated there
(for "loss recovered"). The loss is the mean next-token cross-entropy (nats) of the predictions made at those
same positions; decoding goes one sequence at a time (a 262k vocabulary × 128 positions is 134 MB).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.analyses.features.wiring import Wiring, excluded, flat, kept, splice_edit
from core.analyses.sae.corpus import batches
from core.features import Dictionary, metrics
from core.models.handle import Batch, ModelHandle
from core.models.sites import Edit
from core.progress import Progress, quiet


@dataclass
class Scores:
    """Held-out figures of one dictionary (BOS left out of all of them)."""

    tokens: int  # positions scored
    fvu: float
    l0: float
    never_active_fraction: float  # latents that never fired on these tokens
    ce_clean_nats: float
    ce_spliced_nats: float
    ce_zero_nats: float

    @property
    def delta_ce_nats(self) -> float:
        return metrics.delta_ce(self.ce_clean_nats, self.ce_spliced_nats)

    @property
    def loss_recovered(self) -> float:
        return metrics.loss_recovered(self.ce_clean_nats, self.ce_spliced_nats, self.ce_zero_nats)

    def to_json(self) -> dict:
        return {"eval_tokens": self.tokens, "fvu": round(self.fvu, 5), "l0": round(self.l0, 3),
                "never_active_fraction": round(self.never_active_fraction, 5),
                "delta_ce_nats": round(self.delta_ce_nats, 5), "loss_recovered": round(self.loss_recovered, 5),
                "ce_clean_nats": round(self.ce_clean_nats, 5), "ce_spliced_nats": round(self.ce_spliced_nats, 5),
                "ce_zero_nats": round(self.ce_zero_nats, 5)}


def next_token_loss(handle: ModelHandle, batch: Batch, final: torch.Tensor, skip: torch.Tensor) -> tuple[float, int]:
    """(Σ cross-entropy in nats, count) of the predictions made at positions ``skip`` [batch, pos] leaves in, from
    the last block's output ``final`` [batch, pos, d_model] of a right-padded batch."""
    total, count = 0.0, 0
    ids = batch.input_ids
    for row, length in enumerate(batch.lengths):
        keep = ~skip[row, : length - 1]
        if not keep.any():
            continue
        logits = handle.decode(final[row, : length - 1][keep.to(final.device)])  # [n, vocab] float32
        targets = ids[row, 1:length][keep].to(logits.device)
        total += float((logits.logsumexp(-1) - logits.gather(1, targets[:, None])[:, 0]).sum())
        count += int(keep.sum())
    return total, count


@torch.no_grad()
def score(handle: ModelHandle, dictionary: Dictionary, wiring: Wiring, rows: list[list[int]], *,
          batch_size: int = 8, progress: Progress = quiet) -> Scores:
    """Held-out figures of ``dictionary`` wired at ``wiring`` on token rows (each beginning with BOS)."""
    meter, l0_sum, n = metrics.FVUMeter(), 0.0, 0
    fired = torch.zeros(dictionary.width, dtype=torch.bool)
    losses = {"clean": [0.0, 0], "spliced": [0.0, 0], "zero": [0.0, 0]}
    chunks = list(batches(rows, batch_size))
    for i, chunk in enumerate(chunks):
        batch = handle.batch_of(chunk, pad="right")
        skip = excluded(handle, batch)
        clean = handle.run_with_edits(batch, [], read=wiring.sites)
        values = {site: flat(site, clean[site]) for site in wiring.sites}
        x, y = kept(values[wiring.read], skip), kept(values[wiring.write], skip)
        acts = dictionary.encode(x.to(dictionary.device))
        meter.update(y, dictionary.decode(acts, x.to(dictionary.device)).to(y))
        l0_sum += metrics.l0(acts) * len(x)
        n += len(x)
        fired |= metrics.fired(acts).cpu()
        spliced = handle.run_with_edits(batch, [splice_edit(handle, dictionary, wiring, values, skip)])
        zero = values[wiring.write].masked_fill(~skip[..., None].to(values[wiring.write].device), 0.0)
        if wiring.write.kind == "z":
            zero = zero.unflatten(-1, (handle.n_heads, -1))
        zeroed = handle.run_with_edits(batch, [Edit(wiring.write, "replace", zero)])
        for name, final in (("clean", clean.final), ("spliced", spliced.final), ("zero", zeroed.final)):
            loss, count = next_token_loss(handle, batch, final, skip)
            losses[name][0] += loss
            losses[name][1] += count
        progress((i + 1) / len(chunks), f"held-out loss: batch {i + 1}/{len(chunks)}")
    mean = {name: total / max(count, 1) for name, (total, count) in losses.items()}
    return Scores(n, meter.value, l0_sum / max(n, 1), metrics.dead_fraction(fired), mean["clean"], mean["spliced"],
                  mean["zero"])
