"""A sparse dictionary (SAE or transcoder) as plain float32 tensors: encode activations into latents, decode back.

One canonical form for every file format and trainer:

    pre   = x @ W_enc + b_enc                          [..., width]
    acts  = σ(pre)                                     [..., width]  (sparse, stored dense)
    x_hat = acts @ W_dec + b_dec (+ x_in @ W_skip)      [..., d_out]

Formats that encode ``x − b_dec`` (SAELens' ``apply_b_dec_to_input``, EleutherAI's sparsify) are folded
into ``b_enc`` when read (``b_enc − b_dec @ W_enc``), so nothing downstream needs to know.

σ, by ``activation``:
    relu       max(pre, 0)
    jumprelu   relu(pre) where pre > threshold, else 0 (Gemma Scope; ``threshold`` [width])
    topk       the k largest of relu(pre) per token, the rest 0 (Gao et al. 2024; sparsify)
    batchtopk  trained with the top k·B over a batch of B tokens (Bussmann et al. 2024); at inference
               a fixed threshold, exactly like jumprelu: a token's latents never depend on which other
               tokens share its batch (the BatchTopK paper, dictionary_learning, and SAELens, which saves
               BatchTopK SAEs as JumpReLU). Our trainer sets it to the smallest activation the batch rule
               keeps on its last training tokens (see ``training``). ``batch_topk`` is the training-time rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import torch
from torch import Tensor

from core.errors import UserError
from core.features.sites import SITES

ACTIVATIONS = ("topk", "batchtopk", "jumprelu", "relu")
KINDS = ("sae", "transcoder")


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(n) for n in t.shape) + "]"


@dataclass(eq=False)  # tensors do not compare to one bool; compare the fields you mean
class Dictionary:
    """Weights and metadata of one SAE or transcoder.

    Tensors (float32, all on one device):
        W_enc [d_in, width], b_enc [width], W_dec [width, d_out], b_dec [d_out],
        threshold [width] (jumprelu, batchtopk), W_skip [d_in, d_out] (skip transcoders only).
    Metadata: ``kind`` "sae" | "transcoder"; ``site`` the input site and ``site_out`` the output site
    (transcoders: "mlp_in" -> "mlp_out"; SAEs: None, meaning the same as ``site``); ``layer`` in the
    project's numbering (see ``core.features.sites``); ``model`` a model name; ``d_model`` the model's
    width; ``info`` free-form facts kept with the file (e.g. training figures).
    """

    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor
    b_dec: Tensor
    activation: str = "relu"
    k: Optional[int] = None
    threshold: Optional[Tensor] = None
    W_skip: Optional[Tensor] = None
    kind: str = "sae"
    site: Optional[str] = "resid"
    site_out: Optional[str] = None
    layer: Optional[int] = None
    model: Optional[str] = None
    d_model: Optional[int] = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip"):
            tensor = getattr(self, name)
            if tensor is not None:
                setattr(self, name, tensor.detach().to(torch.float32))
        self.validate()

    # -- shapes -----------------------------------------------------------------------------------

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def width(self) -> int:
        return self.W_enc.shape[1]

    @property
    def d_out(self) -> int:
        return self.W_dec.shape[1]

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    def validate(self) -> None:
        """One ``UserError`` line for the first inconsistency: shapes, activation, k, threshold, kind, site."""
        if self.activation not in ACTIVATIONS:
            raise UserError(f"unknown activation {self.activation!r}: use one of {', '.join(ACTIVATIONS)}")
        if self.kind not in KINDS:
            raise UserError(f"unknown kind {self.kind!r}: use 'sae' or 'transcoder'")
        for name in ("site", "site_out"):
            if getattr(self, name) is not None and getattr(self, name) not in SITES:
                raise UserError(f"unknown {name} {getattr(self, name)!r}: use one of {', '.join(SITES)}")
        if self.W_enc.ndim != 2 or self.W_dec.ndim != 2:
            raise UserError(f"W_enc {_shape(self.W_enc)} and W_dec {_shape(self.W_dec)} must be matrices "
                            "[d_in, width] and [width, d_out]")
        width = self.width
        if self.W_dec.shape[0] != width:
            raise UserError(f"width mismatch: W_enc {_shape(self.W_enc)} has {width} latents but W_dec "
                            f"{_shape(self.W_dec)} has {self.W_dec.shape[0]} rows")
        expected = {"b_enc": (width,), "b_dec": (self.d_out,), "threshold": (width,),
                    "W_skip": (self.d_in, self.d_out)}
        for name, shape in expected.items():
            tensor = getattr(self, name)
            if tensor is not None and tuple(tensor.shape) != shape:
                raise UserError(f"{name} is {_shape(tensor)} but W_enc {_shape(self.W_enc)} and W_dec "
                                f"{_shape(self.W_dec)} need [{', '.join(map(str, shape))}]")
        if self.activation in ("jumprelu", "batchtopk") and self.threshold is None:
            raise UserError(f"a {self.activation} dictionary needs a threshold [width] tensor, and this one has none")
        if self.activation in ("topk", "batchtopk") and not (self.k and 0 < self.k <= width):
            raise UserError(f"a {self.activation} dictionary needs k between 1 and its width {width}, not {self.k}")
        if self.W_skip is not None and self.kind != "transcoder":
            raise UserError("only a transcoder has a skip connection W_skip")
        if self.d_in != self.d_out and self.kind == "sae":
            raise UserError(f"an SAE reconstructs its input, but d_in {self.d_in} != d_out {self.d_out}")

    # -- the dictionary as a function ------------------------------------------------------------

    def pre_activations(self, x: Tensor) -> Tensor:
        """x [..., d_in] -> x @ W_enc + b_enc [..., width] (float32, on the dictionary's device)."""
        if x.shape[-1] != self.d_in:
            raise UserError(f"activations of width {x.shape[-1]} given to a dictionary that reads {self.d_in}")
        return x.to(self.W_enc) @ self.W_enc + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        """x [..., d_in] -> latent activations [..., width], zero where a latent is off (inference rule)."""
        pre = self.pre_activations(x)
        if self.activation == "relu":
            return pre.relu()
        if self.activation in ("jumprelu", "batchtopk"):
            return pre.relu() * (pre > self.threshold)
        values, indices = pre.relu().topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, indices, values)

    def decode(self, acts: Tensor, x_in: Optional[Tensor] = None) -> Tensor:
        """acts [..., width] -> x_hat [..., d_out]; a skip transcoder also needs its input x_in [..., d_in]."""
        out = acts.to(self.W_dec) @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x_in is None:
                raise ValueError("a skip transcoder's decode needs its input x_in")
            out = out + x_in.to(self.W_skip) @ self.W_skip
        return out

    def forward(self, x: Tensor) -> Tensor:
        """x [..., d_in] -> the reconstruction (SAE) or the predicted output (transcoder) [..., d_out]."""
        return self.decode(self.encode(x), x)

    __call__ = forward

    def to(self, device) -> "Dictionary":
        """A copy on ``device`` (float32 stays float32)."""
        moved = {name: getattr(self, name).to(device) if getattr(self, name) is not None else None
                 for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip")}
        return replace(self, **moved, info=dict(self.info))

    def metadata(self) -> dict:
        """What the files keep besides tensors (JSON-ready)."""
        return {"kind": self.kind, "site": self.site, "site_out": self.site_out, "layer": self.layer,
                "model": self.model, "d_model": self.d_model, "activation": self.activation, "k": self.k,
                "d_in": self.d_in, "width": self.width, "d_out": self.d_out, "info": self.info}


def batch_topk(pre: Tensor, k: int) -> Tensor:
    """The training-time BatchTopK rule: keep the k·B largest of relu(pre) over a batch pre [B, width]."""
    flat = pre.relu().flatten()
    values, indices = flat.topk(min(k * pre.shape[0], flat.numel()), sorted=False)
    return torch.zeros_like(flat).scatter_(0, indices, values).view_as(pre)
