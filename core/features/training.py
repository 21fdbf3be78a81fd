"""Train a TopK / BatchTopK SAE or transcoder on CPU (or any device) from a stream of activation batches.

Why our own trainer: EleutherAI's sparsify (MIT) is the reference, but its ``Trainer`` takes a Hugging Face
``PreTrainedModel`` and a tokenized ``datasets.Dataset`` and registers its own hooks on the model's modules
(our models are reached only through the model handle, some are GGUF-backed), its CLI places the model on
``cuda:{rank}`` and starts NCCL, and its modules import ``datasets``, ``schedulefree``, ``simple_parsing``,
``natsort``, ``einops`` and ``accelerate`` unconditionally, none of which our pins include. Its SparseCoder
itself would run on a CPU (Triton and bitsandbytes are optional), so this trainer follows the same recipe
(Gao et al. 2024, "Scaling and evaluating sparse autoencoders") on an iterator of activations instead.

Recipe:
- inputs optionally scaled so that E‖x‖² = d_in (and E‖y‖² = d_out), folded back into the saved weights;
- b_dec at the geometric median (or mean) of the first buffer; W_dec rows random unit vectors, W_enc = W_decᵀ
  (transcoders with d_in != d_out: an independent random encoder); SAEs encode x − b_dec (Gao et al.),
  transcoders start with centred pre-activations (b_enc = −W_encᵀ·mean x);
- TopK (k per token) or BatchTopK (k·B per batch; for inference, the threshold that keeps k per token on
  the last 8192 training tokens with the final weights);
- loss = FVU of the minibatch + α·AuxK, α = 1/32: the top k_aux = d_in/2 dead latents (no fire in the last
  ``dead_after_tokens`` tokens) predict the residual error, scaled by min(dead / k_aux, 1) as in sparsify;
- Adam (β 0.9/0.999, ε 6.25e-10), lr = 2e-4 / sqrt(width / 2¹⁴) unless given, linear warmup, constant,
  linear decay to 0 over the last 20% of steps (when the stream's length is known);
- after every step decoder rows are renormalised to unit norm, and before it the gradient component
  parallel to each row is removed;
- the stream is gathered into shuffled buffers of ``buffer_tokens``, each passed over ``epochs`` times;
  the first ``held_out_tokens`` are kept aside for the reported FVU, L0 and dead fraction.
Seeded: the same stream, config and seed give the same weights (on the same device and thread count).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sized
from dataclasses import dataclass, field, replace
from typing import Iterable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from core.errors import UserError
from core.features import metrics
from core.features.dictionary import Dictionary
from core.progress import Progress, quiet

Batch = Union[Tensor, tuple[Tensor, Tensor]]  # [n, d_in], or (x_in [n, d_in], y_out [n, d_out]) for transcoders


@dataclass
class TrainConfig:
    """What to train and how. ``kind`` "sae" takes tensors, "transcoder" takes (x_in, y_out) pairs."""

    width: int
    k: int = 32
    activation: str = "topk"  # "topk" | "batchtopk"
    kind: str = "sae"
    skip: bool = False  # transcoders: also learn an affine skip W_skip [d_in, d_out]
    batch_size: int = 4096  # tokens per optimizer step
    lr: Optional[float] = None  # None: 2e-4 / sqrt(width / 2**14)
    warmup_steps: Optional[int] = None  # None: 5% of the steps, at most 1000
    decay_fraction: float = 0.2
    auxk_alpha: float = 1 / 32
    k_aux: Optional[int] = None  # None: d_in // 2
    dead_after_tokens: Optional[int] = None  # None: min(10M, training tokens / 10)
    normalize_input: bool = True
    b_dec_init: str = "median"  # "median" | "mean" | "zero"
    epochs: int = 1
    buffer_tokens: int = 65536
    held_out_tokens: int = 2048
    total_tokens: Optional[int] = None  # tokens the stream holds; None: counted when it is a list
    seed: int = 0

    def validate(self) -> None:
        if self.activation not in ("topk", "batchtopk"):
            raise UserError(f"the trainer makes topk or batchtopk dictionaries, not {self.activation!r}")
        if self.kind not in ("sae", "transcoder"):
            raise UserError(f"kind must be 'sae' or 'transcoder', not {self.kind!r}")
        if not 0 < self.k <= self.width:
            raise UserError(f"k must be between 1 and the width {self.width}, not {self.k}")
        if self.skip and self.kind != "transcoder":
            raise UserError("only a transcoder has a skip connection: set kind='transcoder' or skip=False")
        if self.batch_size < 1 or self.epochs < 1 or self.buffer_tokens < self.batch_size:
            raise UserError("batch_size and epochs must be positive and buffer_tokens at least batch_size")
        if self.b_dec_init not in ("median", "mean", "zero"):
            raise UserError(f"b_dec_init must be median, mean or zero, not {self.b_dec_init!r}")


@dataclass
class TrainResult:
    """The trained dictionary (on raw activations) and how it did on the held-out tokens."""

    dictionary: Dictionary
    fvu: float  # held-out fraction of variance unexplained
    l0: float  # held-out mean active latents per token (inference rule)
    dead_fraction: float  # latents that did not fire in the last dead_after_tokens training tokens
    dead_fraction_held_out: float  # latents never active on the held-out tokens
    seconds: float
    steps: int
    tokens: int  # training tokens processed, epochs included
    history: list[dict] = field(default_factory=list)  # every few steps: step, tokens, fvu, auxk, dead, lr


def geometric_median(points: Tensor, iterations: int = 50) -> Tensor:
    """Weiszfeld's iteration: the point minimising Σ‖p − m‖ over points [n, d]."""
    median = points.mean(0)
    for _ in range(iterations):
        weights = 1 / (points - median).norm(dim=1).clamp_min(1e-8)
        median = (weights[:, None] * points).sum(0) / weights.sum()
    return median


def _checked(item, label: str, kind: str, dims: Optional[tuple[int, int]]) -> tuple[Tensor, Tensor]:
    """(x, y) float32 from one stream item, or one UserError line saying what is wrong with it."""
    pair = isinstance(item, (tuple, list))
    if pair != (kind == "transcoder") or (pair and len(item) != 2):
        want = "(x_in, y_out) pairs" if kind == "transcoder" else "tensors [n, d_in]"
        raise UserError(f"{label} is a {type(item).__name__}; a {kind} trains on {want}")
    x, y = item if pair else (item, item)
    for t in (x, y):
        if not isinstance(t, Tensor) or t.ndim != 2 or not t.is_floating_point() or t.shape[0] != x.shape[0]:
            raise UserError(f"{label}: expected float tensors [n, d] with the same n, got "
                            f"{[tuple(getattr(t, 'shape', ())) for t in (x, y)]}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise UserError(f"{label} holds NaN or infinite values; drop those tokens (or the batch)")
    if dims is not None and (x.shape[1], y.shape[1]) != dims:
        raise UserError(f"{label} has widths {x.shape[1]}, {y.shape[1]}; earlier batches had {dims}")
    return x.detach().float(), y.detach().float()


def _buffers(batches: Iterable[Batch], config: TrainConfig, held_out: list):
    """Yield (x, y) buffers of at least buffer_tokens rows (whole batches; the last may be smaller).

    The stream's first held_out_tokens rows are appended to ``held_out`` instead.
    """
    xs, ys, n = [], [], 0
    dims = (held_out[0][0].shape[1], held_out[0][1].shape[1]) if held_out else None
    for index, item in enumerate(batches):
        x, y = _checked(item, f"activation batch {index}", config.kind, dims)
        dims = (x.shape[1], y.shape[1])
        need = config.held_out_tokens - sum(len(h[0]) for h in held_out)
        if need > 0:
            held_out.append((x[:need], y[:need]))
            x, y = x[need:], y[need:]
        if len(x):
            xs.append(x)
            ys.append(y)
            n += len(x)
        if n >= config.buffer_tokens:
            yield torch.cat(xs), torch.cat(ys)
            xs, ys, n = [], [], 0
    if n:
        yield torch.cat(xs), torch.cat(ys)


class _Coder(torch.nn.Module):
    """The parameters being trained, in training units (inputs scaled by s_in, targets by s_out).

    enc [width, d_in] (rows: latents; W_enc = encᵀ), b_enc [width], W_dec [width, d_out], b_dec [d_out],
    W_skip [d_in, d_out] or None. SAEs: pre = (x − b_dec)·encᵀ + b_enc; transcoders: pre = x·encᵀ + b_enc.
    """

    def __init__(self, d_in: int, d_out: int, config: TrainConfig, generator: torch.Generator, device):
        super().__init__()
        W_dec = torch.randn(config.width, d_out, generator=generator).to(device)
        enc = W_dec.clone() if d_in == d_out else torch.randn(config.width, d_in, generator=generator).to(device)
        self.W_dec = torch.nn.Parameter(W_dec / W_dec.norm(dim=1, keepdim=True))
        self.enc = torch.nn.Parameter(enc / enc.norm(dim=1, keepdim=True))
        self.b_enc = torch.nn.Parameter(torch.zeros(config.width, device=device))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_out, device=device))
        self.W_skip = torch.nn.Parameter(torch.zeros(d_in, d_out, device=device)) if config.skip else None
        self.sae, self.k, self.batch_topk = config.kind == "sae", config.k, config.activation == "batchtopk"
        self.threshold = 0.0  # BatchTopK's inference threshold, in pre-activation units

    @torch.no_grad()
    def calibrate_threshold(self, x: Tensor) -> None:
        """BatchTopK: the smallest activation the batch rule keeps on tokens x [n, d_in] with the final weights.

        The BatchTopK paper averages this minimum over training batches; taking it once at the end, over a
        large recent sample, uses the weights that will be saved, so the threshold rule keeps ~k per token.
        """
        relu = self.pre_activations(x).relu().flatten()
        self.threshold = float(relu.topk(min(self.k * len(x), relu.numel())).values[-1])

    def pre_activations(self, x: Tensor, rows: Optional[Tensor] = None) -> Tensor:
        """x [B, d_in] -> pre-activations [B, width] (or [B, len(rows)] for the latents ``rows`` only)."""
        enc, b_enc = (self.enc, self.b_enc) if rows is None else (self.enc[rows], self.b_enc[rows])
        bias = b_enc - enc @ self.b_dec if self.sae else b_enc  # (x − b_dec)·encᵀ without a [B, d] gradient
        return torch.addmm(bias, x, enc.T)

    def forward(self, x: Tensor, y: Tensor, dead: Optional[Tensor], k_aux: int):
        """One minibatch: (fvu, auxk loss, latents that fired [nnz])."""
        pre = self.pre_activations(x)
        batch, width = pre.shape
        with torch.no_grad():
            if self.batch_topk:  # flat indices sorted, so each token's latents are contiguous
                flat = pre.relu().flatten().topk(min(self.k * batch, pre.numel()), sorted=False).indices.sort().values
                rows, cols = flat // width, flat % width
                offsets = torch.searchsorted(rows, torch.arange(batch, device=x.device))
            else:
                cols = pre.relu().topk(self.k, dim=-1, sorted=False).indices.flatten()
                rows = torch.arange(batch, device=x.device).repeat_interleave(self.k)
                offsets = torch.arange(0, batch * self.k, self.k, device=x.device)
        values = pre[rows, cols].relu()
        y_hat = F.embedding_bag(cols, self.W_dec, offsets, mode="sum", per_sample_weights=values) + self.b_dec
        if self.W_skip is not None:
            y_hat = y_hat + x @ self.W_skip
        error = y - y_hat
        total_variance = (y - y.mean(0)).pow(2).sum().clamp_min(1e-12)
        fvu = error.pow(2).sum() / total_variance
        auxk = fvu.new_zeros(())
        if dead is not None and bool(dead.any()):
            dead_rows = dead.nonzero().squeeze(1)
            top = self.pre_activations(x, dead_rows).topk(min(k_aux, len(dead_rows)), dim=-1, sorted=False)
            acts = torch.zeros(batch, len(dead_rows), device=x.device).scatter(1, top.indices, top.values.relu())
            auxk = (acts @ self.W_dec[dead_rows] - error.detach()).pow(2).sum() / total_variance
            auxk = auxk * min(len(dead_rows) / k_aux, 1.0)
        return fvu, auxk, cols[values > 0]

    @torch.no_grad()
    def drop_parallel_gradient(self) -> None:
        """Remove from each decoder row's gradient its component along the (unit) row: it would only rescale it."""
        if self.W_dec.grad is not None:
            self.W_dec.grad -= (self.W_dec.grad * self.W_dec).sum(1, keepdim=True) * self.W_dec

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Decoder rows back to unit norm (the latents carry the scale)."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def export(self, s_in: float, s_out: float, config: TrainConfig, **meta) -> Dictionary:
        """The dictionary on raw activations: the input scales and the SAE's b_dec shift folded into the weights."""
        b_enc = self.b_enc - self.enc @ self.b_dec if self.sae else self.b_enc
        threshold = torch.full_like(self.b_enc, self.threshold) if self.batch_topk else None
        return Dictionary(
            W_enc=(self.enc.T * s_in).contiguous(), b_enc=b_enc.clone(), W_dec=self.W_dec / s_out,
            b_dec=self.b_dec / s_out, threshold=threshold,
            W_skip=self.W_skip * (s_in / s_out) if self.W_skip is not None else None,
            activation=config.activation, k=config.k, kind=config.kind, **meta)

    @torch.no_grad()
    def load(self, init: Dictionary, s_in: float, s_out: float) -> None:
        """Start from ``init`` (raw units): the inverse of ``export``."""
        self.W_dec.copy_(init.W_dec * s_out)
        self.b_dec.copy_(init.b_dec * s_out)
        self.enc.copy_(init.W_enc.T / s_in)
        self.b_enc.copy_(init.b_enc + self.enc @ self.b_dec if self.sae else init.b_enc)
        if self.W_skip is not None and init.W_skip is not None:
            self.W_skip.copy_(init.W_skip * (s_out / s_in))
        if init.threshold is not None:
            self.threshold = float(init.threshold.mean())


def _count_tokens(batches, config: TrainConfig) -> Optional[int]:
    if config.total_tokens is not None:
        return config.total_tokens
    if isinstance(batches, Sized) and isinstance(batches, (list, tuple)):
        return sum(len(item[0] if isinstance(item, (tuple, list)) else item) for item in batches)
    return None


def _lr_scale(step: int, warmup: int, total_steps: Optional[int], decay_fraction: float) -> float:
    """Linear warmup, constant, then linear decay to 0 over the last ``decay_fraction`` of the steps."""
    scale = min(1.0, (step + 1) / warmup)
    if total_steps is not None and step >= (1 - decay_fraction) * total_steps:
        scale *= max(0.0, (total_steps - step) / (decay_fraction * total_steps))
    return scale


def _start(buffer_x: Tensor, buffer_y: Tensor, config: TrainConfig, init: Optional[Dictionary],
           generator: torch.Generator, device) -> tuple[_Coder, float, float]:
    """The coder and the input/target scales (s_in, s_out), from the first buffer or from ``init``."""
    d_in, d_out = buffer_x.shape[1], buffer_y.shape[1]
    s_in = s_out = 1.0
    if config.normalize_input and init is None:  # so that E‖x‖² = d_in and E‖y‖² = d_out
        s_in = math.sqrt(d_in / float(buffer_x.pow(2).sum(1).mean().clamp_min(1e-12)))
        s_out = s_in if config.kind == "sae" else \
            math.sqrt(d_out / float(buffer_y.pow(2).sum(1).mean().clamp_min(1e-12)))
    coder = _Coder(d_in, d_out, config, generator, device)
    if init is not None:
        coder.load(init.to(device), s_in, s_out)
        return coder, s_in, s_out
    with torch.no_grad():
        targets = (buffer_y[:4096] * s_out).to(device)
        if config.b_dec_init != "zero":
            coder.b_dec.copy_(geometric_median(targets) if config.b_dec_init == "median" else targets.mean(0))
        if config.kind == "transcoder":  # centred pre-activations
            coder.b_enc.copy_(-coder.enc @ (buffer_x[:4096] * s_in).to(device).mean(0))
    return coder, s_in, s_out


def train_dictionary(batches: Iterable[Batch], config: TrainConfig, *, site: Optional[str] = None,
                     layer: Optional[int] = None, model: Optional[str] = None, d_model: Optional[int] = None,
                     held_out: Optional[Batch] = None, init: Optional[Dictionary] = None,
                     device: Union[str, torch.device] = "cpu", progress: Optional[Progress] = None) -> TrainResult:
    """Train on ``batches`` (tensors [n, d_in], or (x_in, y_out) pairs for a transcoder), streamed once.

    ``held_out``: tokens for the reported figures (default: the stream's first held_out_tokens, not
    trained on). ``init``: start from this dictionary instead of the recipe's initialisation (normalisation
    scales are then 1). site/layer/model/d_model are recorded in the dictionary; ``site`` defaults to
    "resid" for an SAE and "mlp_in" for a transcoder (whose output site is "mlp_out").
    """
    config.validate()
    progress = progress or quiet
    started, generator = time.perf_counter(), torch.Generator().manual_seed(config.seed)
    held = [_checked(held_out, "held_out", config.kind, None)] if held_out is not None else []
    if held_out is not None:
        config = replace(config, held_out_tokens=0)
    total = _count_tokens(batches, config)
    train_tokens = None if total is None else max(total - config.held_out_tokens, 0) * config.epochs
    total_steps = None if train_tokens is None else max(1, math.ceil(train_tokens / config.batch_size))
    warmup = config.warmup_steps or min(1000, max(1, (total_steps or 20_000) // 20))
    dead_after = config.dead_after_tokens or min(10_000_000, max(config.batch_size, (train_tokens or 10**8) // 10))
    log_every = max(1, (total_steps or 1000) // 20)
    coder, step, seen, history = None, 0, 0, []
    for buffer_x, buffer_y in _buffers(batches, config, held):
        if coder is None:
            coder, s_in, s_out = _start(buffer_x, buffer_y, config, init, generator, device)
            k_aux = config.k_aux or max(1, coder.enc.shape[1] // 2)
            lr = config.lr if config.lr is not None else 2e-4 / math.sqrt(config.width / 2**14)
            optimizer = torch.optim.Adam(coder.parameters(), lr=lr, betas=(0.9, 0.999), eps=6.25e-10)
            tokens_since_fired = torch.zeros(config.width, dtype=torch.long, device=device)
        for _ in range(config.epochs):
            order = torch.randperm(len(buffer_x), generator=generator)
            for start in range(0, len(order), config.batch_size):
                pick = order[start:start + config.batch_size]
                x, y = (buffer_x[pick] * s_in).to(device), (buffer_y[pick] * s_out).to(device)
                dead = tokens_since_fired > dead_after if config.auxk_alpha > 0 else None
                fvu, auxk, fired = coder(x, y, dead, k_aux)
                optimizer.zero_grad(set_to_none=True)
                (fvu + config.auxk_alpha * auxk).backward()
                coder.drop_parallel_gradient()
                scale = _lr_scale(step, warmup, total_steps, config.decay_fraction)
                for group in optimizer.param_groups:
                    group["lr"] = lr * scale
                optimizer.step()
                coder.normalise_decoder()
                tokens_since_fired += len(pick)
                tokens_since_fired[fired] = 0
                step, seen = step + 1, seen + len(pick)
                if step % log_every == 0 or step == total_steps:
                    dead_now = float((tokens_since_fired > dead_after).float().mean())
                    history.append({"step": step, "tokens": seen, "fvu": fvu.item(), "auxk": auxk.item(),
                                    "dead_fraction": dead_now, "lr": lr * scale})
                    progress(min(step / total_steps, 1.0) if total_steps else 0.0,
                             f"step {step}{'/' + str(total_steps) if total_steps else ''}: fvu {fvu.item():.3f}, "
                             f"dead {dead_now:.1%}")
    if coder is None:
        raise UserError("no activations to train on: the stream was empty or held only held-out tokens")
    if coder.batch_topk:
        coder.calibrate_threshold((buffer_x[-8192:] * s_in).to(device))
    kind = config.kind
    dictionary = coder.export(s_in, s_out, config, site=site or ("resid" if kind == "sae" else "mlp_in"),
                              site_out="mlp_out" if kind == "transcoder" else None, layer=layer, model=model,
                              d_model=d_model)
    fvu_held, l0_held, never_active = _evaluate(dictionary, held)
    dead_fraction = float((tokens_since_fired > dead_after).float().mean())
    dictionary.info = {"fvu": fvu_held, "l0": l0_held, "dead_fraction": dead_fraction, "tokens": seen,
                       "steps": step, "seed": config.seed}
    return TrainResult(dictionary, fvu_held, l0_held, dead_fraction, never_active,
                       time.perf_counter() - started, step, seen, history)


@torch.no_grad()
def _evaluate(dictionary: Dictionary, held: list) -> tuple[float, float, float]:
    """(fvu, l0, fraction never active) of the exported dictionary on the held-out pairs."""
    if not held:
        return float("nan"), float("nan"), float("nan")
    meter, l0_sum, n, fired = metrics.FVUMeter(), 0.0, 0, torch.zeros(dictionary.width, dtype=torch.bool)
    for x, y in held:
        x, y = x.to(dictionary.device), y.to(dictionary.device)
        acts = dictionary.encode(x)
        meter.update(y, dictionary.decode(acts, x))
        l0_sum += metrics.l0(acts) * len(x)
        n += len(x)
        fired |= metrics.fired(acts).cpu()
    return meter.value, l0_sum / max(n, 1), metrics.dead_fraction(fired)
