"""Training a tuned lens on the CPU in minutes: least squares, then the KL-to-final objective.

Belrose et al. train each translator to minimise KL(final ‖ translated layer) over every position,
with the model frozen. Over Gemma 3's 262k-token vocabulary a full softmax per layer and token costs
~1 GFLOP with its gradient, hours on two cores. So:

1. one forward pass per batch keeps every layer's residual at every position (``handle.residuals``);
2. the translators start from the least-squares map of each layer's residual onto the last layer's
   (closed form, ridge-regularised), which already removes most of the logit lens's early-layer bias;
3. Adam then minimises the KL to the final distribution restricted to a token set S: the union of
   every training token's top final tokens (a few thousand ids, which carry almost all the final
   distribution's mass), with both distributions renormalised over S.

Evaluation (``evaluate``) always uses the full vocabulary.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from core.lens import run_lens
from core.errors import UserError
from core.lenses.base import Lens
from core.lenses.tuned import TunedLens
from core.models.handle import ModelHandle
from core.progress import Progress, part, quiet

LN2 = math.log(2.0)


@dataclass(frozen=True)
class TrainingOptions:
    train_tokens: int = 4096
    seq_len: int = 128
    steps: int = 80
    batch_tokens: int = 256
    top_final: int = 16  # per training token: its top final tokens join S
    max_vocab: int = 6144  # |S| at most (most frequent first)
    lr: float = 1e-3
    ridge: float = 1e-2  # relative to the mean eigenvalue of each layer's covariance
    seed: int = 0


def _sequences(handle: ModelHandle, texts: list[str], n_tokens: int, seq_len: int) -> list[list[int]]:
    """Token windows of at most ``seq_len``, each beginning as the tokenizer begins a text (BOS)."""
    windows, total = [], 0
    for text in texts:
        if not text.strip():
            continue
        ids = handle.tokenizer(text, add_special_tokens=True)["input_ids"]
        head = ids[:1] if ids and ids[0] == getattr(handle.tokenizer, "bos_token_id", None) else []
        body = ids[len(head):]
        for start in range(0, len(body), seq_len - len(head)):
            window = head + body[start : start + seq_len - len(head)]
            if len(window) < 8:
                continue
            windows.append(window)
            total += len(window)
            if total >= n_tokens:
                return windows
    return windows


def collect(handle: ModelHandle, windows: list[list[int]], progress: Progress = quiet, batch: int = 8):
    """Every layer's residual at every real position: Float[Tensor, "layer token d_model"] (float32)."""
    rows = []
    for start in range(0, len(windows), batch):
        chunk = windows[start : start + batch]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), handle.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, w in enumerate(chunk):
            ids[i, width - len(w):] = torch.tensor(w)
            mask[i, width - len(w):] = 1
        from core.models.handle import Batch

        residual = handle.residuals(Batch(ids, mask, [len(w) for w in chunk]))  # [layer, b, pos, d]
        rows.append(residual[:, mask.bool()].float().cpu())
        progress((start + len(chunk)) / len(windows), f"residuals of {start + len(chunk)}/{len(windows)} windows")
    return torch.cat(rows, dim=1)


def _decode_subset(handle: ModelHandle, h: torch.Tensor, unembed_rows: torch.Tensor, unembed_bias) -> torch.Tensor:
    """Final norm + the unembedding rows of S (+ soft cap): [..., d] -> [..., |S|], differentiable."""
    norm = handle.weights.final_norm()
    frozen = {name: value.detach() for name, value in norm.named_parameters()}  # the model gets no gradients
    logits = torch.func.functional_call(norm, frozen, (h.to(unembed_rows.dtype),)) @ unembed_rows.T
    if unembed_bias is not None:
        logits = logits + unembed_bias
    if handle.weights.logit_scale != 1.0:
        logits = logits * handle.weights.logit_scale
    cap = handle.weights.softcap
    return torch.tanh(logits / cap) * cap if cap else logits


def _least_squares(h: torch.Tensor, target: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """W, b minimising ‖h + h Wᵀ + b − target‖² + λ‖W‖² (per layer: h [tokens, d], target [tokens, d])."""
    mean_h, mean_t = h.mean(0), target.mean(0)
    x, y = (h - mean_h).double(), (target - mean_t - (h - mean_h)).double()
    cov = x.T @ x
    lam = ridge * float(torch.diagonal(cov).mean())
    w = torch.linalg.solve(cov + lam * torch.eye(cov.shape[0], dtype=cov.dtype), x.T @ y).T.float()
    b = mean_t - mean_h - mean_h @ w.T
    return w, b


@dataclass
class _Data:
    """What every translator trains on: the residuals, the token set S and the final distribution over S."""

    h: torch.Tensor  # [L+1, T, d] every layer's residual at every training token
    rows: torch.Tensor  # [|S|, d] the unembedding rows of S
    row_bias: torch.Tensor | None
    final_logp: torch.Tensor  # [T, |S|] the final layer's log-distribution renormalised over S
    vocab: torch.Tensor  # [|S|] token ids


def _prepare(handle: ModelHandle, texts: list[str], options: TrainingOptions, report: Progress) -> _Data:
    windows = _sequences(handle, texts, options.train_tokens, options.seq_len)
    n_tokens = sum(map(len, windows))
    if n_tokens < 256:
        raise UserError(f"the training text gives only {n_tokens} tokens: a tuned lens needs at least 256")
    h = collect(handle, windows, part(report, 0.0, 0.35))  # [L+1, T, d]
    weight = handle.weights.unembedding()
    bias = handle.weights.unembedding_bias()

    report(0.35, "the final distribution's top tokens")
    tops, finals = [], []
    with torch.inference_mode():
        for start in range(0, h.shape[1], 256):
            logits = handle.decode(h[-1, start : start + 256])
            tops.append(logits.topk(options.top_final, dim=-1).indices)
    counts = torch.bincount(torch.cat(tops).flatten(), minlength=handle.vocab_size)
    vocab = torch.nonzero(counts).squeeze(-1)
    if len(vocab) > options.max_vocab:
        vocab = counts.topk(options.max_vocab).indices
    rows = weight[vocab.to(weight.device)].float().cpu()
    row_bias = None if bias is None else bias.detach()[vocab.to(bias.device)].float().cpu()
    with torch.inference_mode():
        for start in range(0, h.shape[1], 1024):
            finals.append(torch.log_softmax(_decode_subset(handle, h[-1, start : start + 1024], rows, row_bias), -1))
    return _Data(h, rows, row_bias, torch.cat(finals), vocab)


def _picks(n_tokens: int, options: TrainingOptions) -> list[torch.Tensor]:
    """The training tokens of each KL step (the same for every layer)."""
    generator = torch.Generator().manual_seed(options.seed)
    return [torch.randint(n_tokens, (min(options.batch_tokens, n_tokens),), generator=generator)
            for _ in range(options.steps)]


def train(handle: ModelHandle, texts: list[str], options: TrainingOptions = TrainingOptions(),
          progress: Progress | None = None) -> tuple[TunedLens, dict]:
    """A tuned lens for ``handle`` trained on ``texts``; also returns what was used (tokens, |S|, seconds)."""
    report = progress or quiet
    started = time.perf_counter()
    torch.manual_seed(options.seed)
    data = _prepare(handle, texts, options, report)
    h, rows, row_bias, final_logp = data.h, data.rows, data.row_bias, data.final_logp
    n_layers, n_tokens = h.shape[0] - 1, h.shape[1]

    # The loss is a mean over layers and each translator enters only its own layer's term, so training one
    # layer at a time on the same token picks is the same optimisation (Adam acts elementwise; each layer's
    # term keeps its 1/L weight): one translator, its gradient and its Adam state in memory at a time
    # (7B shape: 0.27 GB instead of 8.6 GB for all 32 at once).
    picks = _picks(n_tokens, options)
    lens = TunedLens.identity(handle)  # filled layer by layer
    losses = [0.0] * options.steps
    for layer in range(n_layers):
        w0, b0 = _least_squares(h[layer], h[-1], options.ridge)
        w, b = torch.nn.Parameter(w0), torch.nn.Parameter(b0)
        optimizer = torch.optim.Adam([w, b], lr=options.lr)
        for step, pick in enumerate(picks):
            x = h[layer, pick]  # [B, d]
            logp = torch.log_softmax(_decode_subset(handle, x + torch.addmm(b, x, w.T), rows, row_bias), -1)
            target = final_logp[pick]
            loss = (target.exp() * (target - logp)).sum(-1).mean() / n_layers  # this layer's share, nats
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[step] += float(loss.detach()) / LN2
        lens.weight[layer], lens.bias[layer] = w.detach(), b.detach()
        report(0.45 + 0.55 * (layer + 1) / n_layers, f"translator {layer + 1}/{n_layers} trained "
               f"({options.steps} KL steps on the top-token set)")
    info = {"train_tokens": int(n_tokens), "vocab_subset": int(len(data.vocab)), "steps": options.steps,
            "seconds": round(time.perf_counter() - started, 1), "final_loss_bits": round(losses[-1], 4) if losses else None}
    return lens, info


def evaluate(handle: ModelHandle, lines: list[str], lenses: dict[str, Lens], progress: Progress | None = None) -> dict:
    """Mean KL(final ‖ layer) in bits per layer and lens, over every position of every line (one sequence
    per line, BOS as the tokenizer adds it), with the full vocabulary."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise UserError("the evaluation text is empty: give a file with at least one line of text")
    out = {}
    for i, (name, lens) in enumerate(lenses.items()):
        result = run_lens(handle, lines, positions="all", top_k=1, lens=lens, batch_size=8,
                          progress=part(progress, i / len(lenses), (i + 1) / len(lenses)))
        kl = torch.from_numpy(result.kl_to_final_bits)  # [layer, prompt, slot]
        mask = torch.from_numpy(result.slot_mask)[None].expand_as(kl)
        out[name] = (kl * mask).sum((1, 2)) / mask.sum((1, 2))
    return {name: [float(v) for v in values] for name, values in out.items()}

