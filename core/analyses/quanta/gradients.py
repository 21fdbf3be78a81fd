"""Per-token gradients, projected on the fly to a few thousand dimensions with a sparse JL sketch.

For one predicted token, the gradient of its loss with respect to a linear layer's weight is
``G = sum_s delta_s x_s^T`` over the positions s of its context (``x_s``: the layer's input,
``delta_s``: the loss's gradient w.r.t. the layer's output; a bias adds a constant-1 input).
We never materialise G (100M numbers per token for Gemma 3 270M). Instead we apply a
CountSketch to it, the sparse Johnson–Lindenstrauss projection with one random ±1 per
coordinate: coordinate (i, j) of G goes to bucket ``(h1[i] + h2[j]) mod dim`` with sign
``s1[i] * s2[j]``. With this product hash the sketch of an outer product is the circular
convolution of the sketches of its factors (Pham & Pagh's TensorSketch), so

    sketch(G) = irfft( sum_s rfft(CS1(delta_s)) * rfft(CS2(x_s)) )

costs O(positions x dim log dim) per layer instead of O(out x in). Each layer has its own
random hashes (seeded by the projection seed and the layer's name), except that layers reading
the same input (q/k/v, gate/up) share the first one's input-side hash, i.e. they are sketched
as one stacked matrix, which saves FFTs. All sketches add up: the result is the CountSketch of
the whole flattened gradient. It is unbiased for inner products, so cosine similarities of
sketches estimate those of the full gradients.

Each token is its own sequence (its context, right-padded in a batch of tokens of similar
length): the samples of a batch are independent, so one backward pass of the summed loss
gives every token's own ``delta``. Autograd is asked only for the gradient w.r.t. the
embedding output, so it skips the weight-gradient products. Embeddings, the (tied)
unembedding and every norm are excluded; the parameters are the attention and/or MLP
linear layers of every block, as the adapter names them.

Quantized layers (bitsandbytes 4-bit / 8-bit) have no weight ``.grad`` at all, and need none: the
sketch only uses each layer's input ``x`` and output gradient ``delta``, so their gradient is that
of the de-quantized layer (``core.models.loading`` keeps their backward differentiable).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from core.analyses.quanta.cache import digest, load_npz, model_fingerprint, quanta_home, save_npz
from core.analyses.quanta.corpus import TokenIndex
from core.errors import UserError
from core.models.handle import ModelHandle
from core.models.weights import LinearLayer

PARAMETER_SUBSETS = {
    "all": "every attention and MLP weight and bias (all but embeddings and norms)",
    "mlp": "the MLP weights and biases of every block",
    "attention": "the attention weights and biases of every block",
}
PROJECTION_SEED = 0  # fixed, so the cached sketches serve every sampling / clustering seed
TOKENS_PER_BATCH = 1024  # context tokens per forward/backward pass
MAX_BATCH = 32


@dataclass
class SketchedLayer:
    """One linear layer whose gradient is sketched, with its CountSketch hashes."""

    name: str  # e.g. "layers.3.mlp.down_proj"
    out_features: int
    in_features: int
    has_bias: bool
    out_bucket: torch.Tensor  # [out] int64 in [0, dim)
    out_sign: torch.Tensor  # [out] ±1.0
    in_bucket: torch.Tensor  # [in (+1 for the bias)] int64
    in_sign: torch.Tensor

    @property
    def n_params(self) -> int:
        return self.out_features * (self.in_features + int(self.has_bias))


def count_sketch(values: torch.Tensor, bucket: torch.Tensor, sign: torch.Tensor, dim: int) -> torch.Tensor:
    """CountSketch of the last axis: [..., n] -> [..., dim], out[r] = sum_{i: bucket[i] = r} sign[i] * values[i]."""
    out = values.new_zeros(values.shape[:-1] + (dim,))
    return out.index_add_(-1, bucket, values * sign)


class GradientSketch:
    """Sketches per-token gradients of one model's chosen parameters into ``dim`` dimensions."""

    def __init__(self, handle: ModelHandle, params: str = "all", dim: int = 2048, seed: int = PROJECTION_SEED):
        if params not in PARAMETER_SUBSETS:
            raise UserError(f"unknown parameter subset '{params}': choose one of {', '.join(PARAMETER_SUBSETS)}")
        if not 16 <= dim <= 65536:
            raise UserError(f"projection dimension {dim} is out of range: use 16 to 65536 (a few thousand is typical)")
        self.handle, self.params, self.dim, self.seed = handle, params, dim, seed
        self.device = handle.input_device
        self.layers = [self._layer(layer) for layer in handle.weights.linear_layers(params)]
        if not self.layers:
            raise UserError(f"the model has no linear layers in its {params} parameters to take gradients of")
        self._by_name = {layer.name: layer for layer in self.layers}
        self.shared_input: dict[str, str] = {}  # layer -> the layer whose input-side hash it shares (set by sketch)

    def _layer(self, layer: LinearLayer) -> SketchedLayer:
        name, n_in, n_out, has_bias = layer.name, layer.in_features, layer.out_features, layer.has_bias
        generator = torch.Generator().manual_seed(int(digest("sketch", self.seed, self.dim, name), 16) % 2**63)

        def hashes(n: int):
            bucket = torch.randint(0, self.dim, (n,), generator=generator)
            sign = torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1
            return bucket, sign

        out_bucket, out_sign = hashes(n_out)
        in_bucket, in_sign = hashes(n_in + int(has_bias))
        parts = [t.to(self.device) for t in (out_bucket, out_sign, in_bucket, in_sign)]
        return SketchedLayer(name, n_out, n_in, has_bias, *parts)

    @property
    def n_params(self) -> int:
        return sum(layer.n_params for layer in self.layers)

    def input_hash(self, layer: SketchedLayer) -> tuple[torch.Tensor, torch.Tensor]:
        """The input-side hash a layer's sketch used: its group leader's (see ``sketch``)."""
        leader = self._by_name[self.shared_input.get(layer.name, layer.name)]
        return leader.in_bucket, leader.in_sign

    def sketch(self, contexts: list[list[int]], targets: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """-> (sketches [token, dim] float32, not normalised; losses [token] in nats) for one batch.

        Token b is ``targets[b]`` predicted from ``contexts[b]``; all are run as one batch. Layers
        that read the same input tensor (q/k/v, gate/up) form a group sharing the first one's
        input-side hash: their sketch is then the sketch of the stacked matrix, so their
        output-side sketches add up and each group needs one pair of FFTs. Positions after a
        token's context (right padding) have exactly zero output gradient and add nothing.
        """
        handle, dim, device = self.handle, self.dim, self.device
        batch = handle.batch_of(contexts, pad="right")
        lengths = torch.as_tensor(batch.lengths)
        spectrum = torch.zeros(len(contexts), dim // 2 + 1, dtype=torch.complex64, device=device)
        groups: dict[tuple[int, int, bool], _Group] = {}
        group_of: dict[str, tuple] = {}

        def on_input(name: str, x: torch.Tensor) -> None:
            layer = self._by_name[name]
            key = (id(x), x.shape[-1], layer.has_bias)  # the group holds x, so its id stays unique
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(layer, x)
            self.shared_input[name] = group.leader.name
            group.expected += 1
            group_of[name] = key

        def on_grad(name: str, grad: torch.Tensor) -> None:
            layer, key = self._by_name[name], group_of[name]
            group = groups[key]
            if group.acc is None:
                group.acc = torch.zeros(grad.shape[:-1] + (dim,), device=device)
            group.acc.index_add_(-1, layer.out_bucket, grad.detach().to(device, torch.float32) * layer.out_sign)
            group.received += 1
            if group.received == group.expected:
                spectrum.add_(group.finish(dim, device))
                groups.pop(key, None)

        def loss(residual: torch.Tensor) -> torch.Tensor:
            last = (lengths - 1).to(residual.device)
            logits = handle.decode(residual[torch.arange(len(contexts), device=residual.device), last], differentiable=True)
            target = torch.as_tensor(targets, device=logits.device)
            return torch.nn.functional.cross_entropy(logits, target, reduction="none")

        losses = handle.linear_gradients(batch, self.params, loss, on_input, on_grad)
        if groups:
            raise RuntimeError(f"{len(groups)} layer group(s) got no gradient: the sketch would be incomplete")
        sketches = torch.fft.irfft(spectrum, n=dim).cpu().numpy().astype(np.float32)
        return sketches, losses.detach().float().cpu().numpy()


class _Group:
    """Layers reading one input tensor: the input, and the running sum of their output-side sketches."""

    def __init__(self, leader: SketchedLayer, x: torch.Tensor):
        self.leader, self.x = leader, x  # the tensor itself, not a detached copy: keeps id(x) from being reused
        self.expected = self.received = 0
        self.acc: torch.Tensor | None = None  # [batch, pos, dim]: sum over layers of CS1(delta)

    def finish(self, dim: int, device) -> torch.Tensor:
        """[batch, dim // 2 + 1]: sum over positions of rfft(sum CS1(delta)) * rfft(CS2(x))."""
        x = self.x.detach().to(device, torch.float32)
        if self.leader.has_bias:
            x = torch.cat([x, x.new_ones(x.shape[:-1] + (1,))], dim=-1)
        inputs = torch.fft.rfft(count_sketch(x, self.leader.in_bucket, self.leader.in_sign, dim))
        product = torch.fft.rfft(self.acc) * inputs
        self.acc = self.x = None
        return product.sum(dim=1)


class GradientStore:
    """Sketched gradients of tokens, cached on disk one chunk file per batch, keyed by (document, position)."""

    def __init__(self, handle: ModelHandle, index: TokenIndex, params: str = "all", dim: int = 2048):
        self.sketcher = GradientSketch(handle, params, dim)
        self.index = index
        self.key = digest("gradients", model_fingerprint(handle), index.corpus.fingerprint, params, dim, PROJECTION_SEED)
        self.folder = quanta_home() / "gradients" / self.key
        self.rows: dict[tuple[int, int], np.ndarray] = {}
        self.losses: dict[tuple[int, int], float] = {}
        self.corrupt_chunks = 0
        for path in sorted(self.folder.glob("chunk-*.npz")):
            saved = load_npz(path, self.key, ("document", "position", "sketch", "loss"))
            if saved is None or saved["sketch"].shape[1:] != (dim,):
                self.corrupt_chunks += 1
                continue
            for doc, pos, row, loss in zip(saved["document"].tolist(), saved["position"].tolist(), saved["sketch"], saved["loss"]):
                self.rows[(doc, pos)] = row
                self.losses[(doc, pos)] = float(loss)

    def key_of(self, i: int) -> tuple[int, int]:
        return int(self.index.document[i]), int(self.index.position[i])

    def missing(self, tokens: np.ndarray) -> list[int]:
        return [int(i) for i in tokens if self.key_of(int(i)) not in self.rows]

    def compute(self, tokens: np.ndarray, counted: Callable[[int, int, str], None] | None = None) -> int:
        """Sketch the gradients of the tokens not cached yet; returns how many were computed."""
        todo = sorted(self.missing(tokens), key=lambda i: (int(self.index.position[i]), i))
        total, done = len(todo), 0
        if counted and total:
            counted(0, total, "token gradients")
        while todo:
            width = int(self.index.position[todo[-1 if len(todo) <= MAX_BATCH else MAX_BATCH - 1]])
            size = max(1, min(MAX_BATCH, TOKENS_PER_BATCH // max(width, 1)))
            chunk, todo = todo[:size], todo[size:]
            contexts = [self.index.context(i) for i in chunk]
            targets = [int(self.index.token_id[i]) for i in chunk]
            sketches, losses = self.sketcher.sketch(contexts, targets)
            keys = [self.key_of(i) for i in chunk]
            save_npz(
                self.folder / f"chunk-{time.time_ns()}-{os.getpid()}.npz",
                self.key,
                document=np.array([k[0] for k in keys], np.int64),
                position=np.array([k[1] for k in keys], np.int64),
                sketch=sketches,
                loss=losses.astype(np.float32),
            )
            for key, row, loss in zip(keys, sketches, losses):
                self.rows[key] = row
                self.losses[key] = float(loss)
            done += len(chunk)
            if counted:
                counted(done, total, "token gradients")
        return total

    def matrix(self, tokens: np.ndarray) -> np.ndarray:
        """Sketches of the given tokens, [token, dim] (all must be computed)."""
        return np.stack([self.rows[self.key_of(int(i))] for i in tokens]) if len(tokens) else np.zeros((0, self.sketcher.dim), np.float32)
