"""The lens's narrow interface (``residuals`` + ``decode``) run through nnsight traces, locally or on NDIF.

``through_nnsight(handle)`` gives a handle whose ``residuals`` come from one nnsight trace of the decoder
stack (the lens, translation and arithmetic then run unchanged). On NDIF only reductions may come back:
``lens_reductions`` decodes every layer's residual inside the trace and saves top-k ids and probabilities,
entropy, KL to the final layer and token-set probabilities, never a layer x vocab tensor.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, fields
from typing import Sequence

import torch

from core.errors import UserError
from core.models.handle import Batch, ModelHandle

BACKENDS = ("local", "nnsight", "ndif")
NDIF_TIMEOUT_S = 5.0


def _nnsight():
    try:
        import nnsight
    except ImportError:
        raise UserError("the nnsight backend needs nnsight: pip install nnsight==0.8.1 (it is in requirements.txt)") from None
    return nnsight


@dataclass
class NNsightHandle(ModelHandle):
    """A ``ModelHandle`` whose forward passes are nnsight traces (``remote``: sent to NDIF)."""

    remote: bool = False

    def _traced(self):
        """(wrapped model, envoys of the decoder layers, of the final norm and of the unembedding)."""
        cached = self.__dict__.get("_envoys")
        if cached is None:
            wrapped = _nnsight().NNsight(self.model)
            names = {id(m): n for n, m in self.model.named_modules()}

            def envoy(module):
                e = wrapped
                for part in names[id(module)].split("."):
                    e = e[int(part)] if part.isdigit() else getattr(e, part)
                return e

            layers = [envoy(layer) for layer in self.adapter.layers(self.model)]
            cached = self.__dict__["_envoys"] = (wrapped, layers, envoy(self.adapter.final_norm(self.model)),
                                                  envoy(self.adapter.unembed(self.model)))
        return cached

    def _trace(self, wrapped, batch: Batch):
        inputs = self._inputs(batch)
        return wrapped.trace(**inputs, use_cache=False, remote=self.remote) if self.remote else wrapped.trace(**inputs, use_cache=False)

    def residuals(self, batch: Batch, index: torch.Tensor | None = None, sublayer: bool = False) -> torch.Tensor:
        """As ``ModelHandle.residuals`` (Float[Tensor, "layer batch pos d_model"]), from one nnsight trace."""
        if sublayer:
            raise UserError("sub-layer rows are not available through nnsight yet: use --backend local")
        if self.remote:
            raise UserError("NDIF returns reductions only, not residual streams: this analysis needs --backend local or nnsight")
        wrapped, layers, _, _ = self._traced()
        saved = []
        with self.lock, torch.inference_mode():
            with self._trace(wrapped, batch):
                hidden = layers[0].input
                saved.append(hidden.save())
                for layer in layers:
                    out = layer.output
                    saved.append((out[0] if isinstance(out, tuple) else out).save())
        rows = [s.detach() for s in saved]
        if index is not None:
            rows = [r.gather(1, index.to(r.device).unsqueeze(-1).expand(-1, -1, r.shape[-1])) for r in rows]
        device = rows[-1].device
        return torch.stack([r.to(device) for r in rows])


def through_nnsight(handle: ModelHandle, remote: bool = False) -> NNsightHandle:
    """The same loaded model behind nnsight traces."""
    _nnsight()
    values = {f.name: getattr(handle, f.name) for f in fields(ModelHandle)}
    return NNsightHandle(**values, remote=remote)


# -- reductions: what one request may bring back ----------------------------------------------------------


@dataclass
class LensReductions:
    """The lens at the last position of every prompt, reduced inside the trace (layer 0 = embeddings)."""

    top_ids: torch.Tensor  # [layer, batch, k] int64
    top_probs: torch.Tensor  # [layer, batch, k] float32
    entropy_bits: torch.Tensor  # [layer, batch]
    kl_to_final_bits: torch.Tensor  # [layer, batch]: KL(final || layer)
    token_set_probs: torch.Tensor | None  # [layer, batch, set]: summed probability of each token set

    @property
    def saved_bytes(self) -> int:
        """Bytes of every tensor the trace saved (what one request brings back)."""
        return sum(t.numel() * t.element_size() for t in (self.top_ids, self.top_probs, self.entropy_bits,
                                                           self.kl_to_final_bits, self.token_set_probs) if t is not None)


def lens_reductions(handle: NNsightHandle, prompts: Sequence[str], top_k: int = 5,
                    token_sets: Sequence[Sequence[int]] = ()) -> LensReductions:
    """Decode every layer's last-position residual inside one trace and save only its reductions."""
    wrapped, layers, norm, unembed = handle._traced()
    batch = handle.encode(prompts)
    cap = handle.adapter.softcap(handle.model)
    sets = torch.zeros(len(token_sets), handle.vocab_size)
    for row, ids in enumerate(token_sets):
        sets[row, list(ids)] = 1.0
    log2 = float(torch.log(torch.tensor(2.0)))
    with handle.lock, torch.inference_mode():
        with handle._trace(wrapped, batch):
            hidden = [layers[0].input[:, -1]]
            for layer in layers:
                out = layer.output
                hidden.append((out[0] if isinstance(out, tuple) else out)[:, -1])
            logits = unembed(norm(torch.stack(hidden))).float()  # [layer, batch, vocab]: never saved
            if cap:
                logits = torch.tanh(logits / cap) * cap
            logp = torch.log_softmax(logits, dim=-1)
            probs = logp.exp()
            top = probs.topk(top_k, dim=-1)
            top_ids, top_probs = top.indices.save(), top.values.save()
            entropy = (-(probs * logp).sum(-1) / log2).save()
            kl = ((probs[-1:] * (logp[-1:] - logp)).sum(-1) / log2).save()
            set_probs = (probs @ sets.to(probs.device).T).save() if len(token_sets) else None
    return LensReductions(top_ids, top_probs, entropy, kl, set_probs)


# -- NDIF ----------------------------------------------------------------------------------------------------


def _ndif_reachable(timeout_s: float) -> bool:
    host = os.environ.get("NDIF_HOST", "api.ndif.us")
    try:
        with socket.create_connection((host, 443), timeout_s):
            return True
    except OSError:
        return False


def check_ndif(spec: str, timeout_s: float = NDIF_TIMEOUT_S) -> None:
    """Fail in seconds, in one line, unless NDIF is reachable with a key and hosts ``spec`` right now."""
    key = os.environ.get("NDIF_API_KEY", "").strip()
    if not key:
        raise UserError("--backend ndif needs an NDIF API key in NDIF_API_KEY (get one at https://login.ndif.us)")
    if not _ndif_reachable(timeout_s):
        raise UserError("NDIF cannot be reached from this machine (offline or blocked): use --backend local or nnsight")
    nnsight = _nnsight()
    nnsight.CONFIG.set_default_api_key(key)
    try:
        running = nnsight.is_model_running(spec)
    except Exception as err:  # the service's own errors: one line, never the key
        raise UserError(f"NDIF could not say whether {spec} is running: {str(err).splitlines()[0][:200]}") from None
    if not running:
        raise UserError(f"NDIF is not running {spec} now: pick a model NDIF hosts (see https://nnsight.net/status)")
