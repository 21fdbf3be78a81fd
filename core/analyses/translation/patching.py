"""The answer position under interventions: residuals read there, edits made there at each lens row, and the
probability of words (token sets, as the lens analysis counts them) in the edited model's output.

Lens rows: row 0 is the embeddings as the first block sees them (``Site("resid_pre", 0)``), row ℓ ≥ 1 the output
of block ℓ − 1 (``Site("resid_post", ℓ - 1)``), row n_layers the last block's output, which the final norm and the
unembedding read. An edit at row n_layers therefore sets the output distribution itself.

``word_probs`` runs every prompt in ``n_layers + 2`` copies: copy 0 untouched, copy 1 + ℓ edited at row ℓ of its
last position (``handle.tail_variants``: earlier positions run once, so each copy costs one token's pass). A word
whose first character is split into pieces (UTF-8 bytes) counts as p(first piece) × p(second piece | first): the
second factor comes from the prompt with its first piece appended, the same edit made at the same position.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from core.analyses.translation.prompts import LanguageTokens
from core.models.handle import ModelHandle
from core.models.sites import Edit, Site
from core.progress import Progress, quiet

TOKENS_PER_PASS = 12288  # copies × padded prompt width per batched pass (the cached keys and values are kept per copy)
LOGIT_BUDGET = 64 * 2**20  # floats of logits decoded at once


def row_site(row: int) -> Site:
    """The site holding lens row ``row`` (see the module docstring)."""
    return Site("resid_pre", 0) if row == 0 else Site("resid_post", row - 1)


def prompt_ids(handle: ModelHandle, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids (special tokens included, as ``handle.encode`` adds them), each checked against the context."""
    out = []
    for prompt in prompts:
        ids = list(handle.tokenizer(prompt)["input_ids"])
        handle.check_length(len(ids) + 1)  # + 1: a teacher-forced piece may follow
        out.append(ids)
    return out


def _chunks(lengths: Sequence[int], per_row: int, budget: int = TOKENS_PER_PASS) -> list[list[int]]:
    """Prompt indices grouped by length (little padding), each group within ``budget`` tokens of ``per_row`` copies."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = [[]]
    for i in order:
        width = max([lengths[j] for j in groups[-1]] + [lengths[i]])
        if groups[-1] and (len(groups[-1]) + 1) * width * per_row > budget:
            groups.append([])
        groups[-1].append(i)
    return [g for g in groups if g]


def last_residuals(handle: ModelHandle, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
    """The residual at each prompt's last position at every lens row: Float[Tensor, "row prompt d_model"]."""
    n_rows = handle.n_layers + 1
    sites = [row_site(r) for r in range(n_rows)]
    out = torch.empty(n_rows, len(prompts), handle.d_model)
    for group in _chunks([len(p) for p in prompts], 1):
        batch = handle.batch_of([prompts[i] for i in group])
        index = torch.full((len(group), 1), batch.input_ids.shape[1] - 1, dtype=torch.long)
        recording = handle.record(batch, sites, index=index)
        for r, site in enumerate(sites):
            out[r, group] = recording[site][:, 0].float().cpu()
    return out


def _edits(values: torch.Tensor, op: str, n: int, position: int, onward: bool, n_layers: int) -> list[Edit]:
    """Copy 1 + ℓ of ``n`` prompts takes ``values[ℓ, p]`` at row ℓ (``onward``: at every row ℓ..n_layers − 1; row
    n_layers alone at ℓ = n_layers) at padded ``position``; copy 0 is left alone. ``values``: [row, n, d_model]."""
    cells: dict[int, tuple[list[int], list[int], list[torch.Tensor]]] = {}
    for first in range(n_layers + 1):
        rows = range(first, n_layers) if onward and first < n_layers else (first,)
        for row in rows:
            rows_, positions, vals = cells.setdefault(row, ([], [], []))
            rows_ += [(1 + first) * n + p for p in range(n)]
            positions += [position] * n
            vals.append(values[row])
    return [Edit(row_site(row), op, torch.cat(vals), cells=(tuple(r), tuple(p)))
            for row, (r, p, vals) in sorted(cells.items())]


def _slot_index(slots: Sequence[Sequence[Sequence[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per prompt and slot, the token ids to sum, padded: (ids [prompt, slot, k], mask [prompt, slot, k])."""
    width = max(1, max((len(ids) for prompt in slots for ids in prompt), default=1))
    ids = torch.zeros(len(slots), len(slots[0]), width, dtype=torch.long)
    mask = torch.zeros(ids.shape)
    for p, prompt in enumerate(slots):
        for s, chosen in enumerate(prompt):
            ids[p, s, : len(chosen)] = torch.as_tensor(sorted(chosen), dtype=torch.long)
            mask[p, s, : len(chosen)] = 1.0
    return ids, mask


def slot_probs(handle: ModelHandle, finals: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ p(token) over each slot's ids in the output distribution of each final residual: ``finals`` [row, d_model];
    ``ids``/``mask`` [row, slot, k] -> Float[Tensor, "row slot"] (the whole vocabulary decoded a chunk at a time)."""
    per_chunk = max(1, LOGIT_BUDGET // max(1, handle.vocab_size))
    out = torch.empty(finals.shape[0], ids.shape[1])
    for start in range(0, finals.shape[0], per_chunk):
        stop = start + per_chunk
        logits = handle.decode(finals[start:stop])  # [c, vocab]
        lse = logits.logsumexp(-1)
        picked = logits.gather(1, ids[start:stop].reshape(logits.shape[0], -1).to(logits.device))
        p = (picked.reshape(ids[start:stop].shape) - lse[:, None, None]).exp().cpu() * mask[start:stop]
        out[start:stop] = p.sum(-1)
        del logits
    return out


def edited_finals(handle: ModelHandle, prompts: Sequence[Sequence[int]], values: torch.Tensor, op: str = "replace",
                  onward: bool = False, tail: int = 1) -> torch.Tensor:
    """The last block's output at each prompt's last position in its ``n_layers + 2`` copies (see ``_edits``),
    the edit made at position −``tail``: Float[Tensor, "copy prompt d_model"]. One batch of prompts."""
    n, copies = len(prompts), handle.n_layers + 2
    batch = handle.batch_of(prompts)
    position = batch.input_ids.shape[1] - tail
    edits = _edits(values, op, n, position, onward, handle.n_layers)
    finals = handle.tail_variants(batch, copies, edits, tail=tail)
    return finals.reshape(copies, n, -1).float().cpu()


def word_probs(handle: ModelHandle, prompts: Sequence[Sequence[int]], words: Sequence[Sequence[LanguageTokens]],
               values: torch.Tensor, op: str = "replace", onward: bool = False,
               progress: Progress | None = None) -> np.ndarray:
    """p(word) at the last position of each prompt, untouched and edited at each lens row: ``words[p]`` are prompt
    p's words; ``values`` [row, prompt, d_model] (or [row, 1, d_model]: the same for every prompt) replace (``op``
    "replace") or are added to ("add") the residual -> Float[array, "copy prompt word"], copy 0 untouched, copy
    1 + ℓ edited at row ℓ."""
    progress = progress or quiet
    copies, n_words = handle.n_layers + 2, len(words[0])
    out = np.zeros((copies, len(prompts), n_words))
    if values.shape[1] == 1:
        values = values.expand(-1, len(prompts), -1)
    # Forced jobs: (prompt, first piece) for every distinct first piece among the prompt's split words.
    jobs = sorted({(p, w.lead[0]) for p, ws in enumerate(words) for w in ws if w.lead})
    total = len(prompts) + len(jobs)
    done = 0
    main = torch.zeros(copies, len(prompts), 2 * n_words)  # per word: its whole tokens, then its first piece
    for group in _chunks([len(p) for p in prompts], copies):
        slots = [[w.whole for w in words[p]] + [{w.lead[0]} if w.lead else set() for w in words[p]] for p in group]
        ids, mask = _slot_index(slots)
        finals = edited_finals(handle, [prompts[p] for p in group], values[:, group], op, onward)
        probs = slot_probs(handle, finals.reshape(-1, finals.shape[-1]), ids.repeat(copies, 1, 1), mask.repeat(copies, 1, 1))
        main[:, group] = probs.reshape(copies, len(group), -1)
        done += len(group)
        progress(done / total, f"{done}/{total} prompts patched at every layer")
    out[:] = main[:, :, :n_words].numpy()
    for group in _chunks([len(prompts[p]) + 1 for p, _ in jobs], copies):
        picked = [jobs[j] for j in group]
        forced = [list(prompts[p]) + [first] for p, first in picked]
        slots = [[{w.lead[1]} if w.lead and w.lead[0] == first else set() for w in words[p]] for p, first in picked]
        ids, mask = _slot_index(slots)
        finals = edited_finals(handle, forced, values[:, [p for p, _ in picked]], op, onward, tail=2)
        second = slot_probs(handle, finals.reshape(-1, finals.shape[-1]), ids.repeat(copies, 1, 1),
                            mask.repeat(copies, 1, 1)).reshape(copies, len(picked), n_words)
        for j, (p, first) in enumerate(picked):
            for w, word in enumerate(words[p]):
                if word.lead and word.lead[0] == first:
                    out[:, p, w] += (main[:, p, n_words + w] * second[:, j, w]).numpy()
        done += len(group)
        progress(done / total, f"{done}/{total} prompts patched at every layer")
    return out


def band(values: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over axis 1 and its 95% band, mean ± z·σ/√n clipped to [0, 1]: ``values`` [layer, item]."""
    n = values.shape[1]
    mean = values.mean(axis=1)
    half = z * values.std(axis=1, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(mean)
    return mean, np.clip(mean - half, 0, 1), np.clip(mean + half, 0, 1)
