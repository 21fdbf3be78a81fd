"""The model behind nnsight traces: here (``--backend nnsight``) or on NDIF (``--backend ndif``).

``through_nnsight(handle)`` gives a handle whose ``residuals`` come from one nnsight trace of the decoder
stack (the lens, translation and arithmetic then run unchanged). ``ndif_handle(spec)`` gives the handle of a
model NDIF hosts: weights on the meta device here, every trace sent with ``remote=True``. Such a handle is
*reductions-only*: nothing but reduced statistics may come back (``reductions``: the lens; ``sweep``: the
head sweep's logit differences), so every call that would bring back residual streams or run hooks here
says so in one line. ``through_nnsight(handle, remote="local", reductions_only=True)`` is the same handle on
a model loaded here: nnsight serializes each trace as for NDIF, rebuilds it with this project's modules
hidden and runs it here, which tests every line but the network hop.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from core.errors import UserError
from core.models.handle import Batch, ModelHandle

BACKENDS = ("local", "nnsight", "ndif")
NDIF_ANALYSES = ("lens", "translation", "sequences")  # what runs from reductions only (arithmetic: not its greedy answers)
NDIF_TIMEOUT_S = 5.0
REMOTE_ONLY = ("NDIF brings back reduced statistics only (the lens at chosen positions, the head sweep's logit "
               "differences), not residual streams or gradients: run this with --backend local or nnsight")


def _nnsight():
    try:
        import nnsight
    except ImportError:
        raise UserError("the nnsight backend needs nnsight: pip install nnsight==0.8.1 (it is in requirements.txt)") from None
    return nnsight


def reductions_only(handle: ModelHandle) -> bool:
    """Whether only reduced statistics may come back from this handle's forward passes (NDIF)."""
    return bool(getattr(handle, "reductions_only", False))


@dataclass
class NNsightHandle(ModelHandle):
    """A ``ModelHandle`` whose forward passes are nnsight traces.

    ``remote``: False runs traces here, True sends them to NDIF, "local" serializes them as for NDIF and runs
    them here. ``reductions_only``: residual streams, logits and hooked passes are refused (NDIF's rule).
    ``wrapped``: the nnsight model (built from ``model`` on first use when not given).
    """

    remote: bool | str = False
    reductions_only: bool = False
    wrapped: Any = field(default=None, repr=False, compare=False)

    def _traced(self):
        """(nnsight model, envoys of the decoder layers, of the final norm and of the unembedding)."""
        cached = self.__dict__.get("_envoys")
        if cached is None:
            if self.wrapped is None:
                if self.remote:  # remote traces need a model nnsight can name to a server (or simulate one)
                    from nnsight.modeling.transformers import TransformersModel

                    self.wrapped = TransformersModel(self.model, tokenizer=self.tokenizer, task="text-generation")
                else:
                    self.wrapped = _nnsight().NNsight(self.model)
            cached = self.__dict__["_envoys"] = (self.wrapped, self.envoys(self.adapter.layers(self.model)),
                                                  self.envoy(self.adapter.final_norm(self.model)),
                                                  self.envoy(self.adapter.unembed(self.model)))
        return cached

    def envoy(self, module):
        """The nnsight envoy of a submodule of ``model``."""
        names = self.__dict__.get("_names")
        if names is None:
            names = self.__dict__["_names"] = {id(m): n for n, m in self.model.named_modules()}
        wrapped = self.wrapped if self.wrapped is not None else self._traced()[0]
        e = wrapped
        for part in names[id(module)].split("."):
            if part:
                e = e[int(part)] if part.isdigit() else getattr(e, part)
        return e

    def envoys(self, modules) -> list:
        return [self.envoy(m) for m in modules]

    def trace(self, inputs: dict):
        """An nnsight trace of the decoder stack on ``inputs`` (ids, mask, position ids), here or remote."""
        wrapped = self._traced()[0]
        if self.remote:
            return wrapped.trace(**inputs, use_cache=False, remote=self.remote)
        return wrapped.trace(**inputs, use_cache=False)

    def residuals(self, batch: Batch, index: torch.Tensor | None = None, sublayer: bool = False) -> torch.Tensor:
        """As ``ModelHandle.residuals`` (Float[Tensor, "layer batch pos d_model"]), from one nnsight trace."""
        if self.reductions_only:
            raise UserError(REMOTE_ONLY)
        if sublayer:
            raise UserError("sub-layer rows are not available through nnsight yet: use --backend local")
        _, layers, _, _ = self._traced()
        saved = []
        with self.lock, torch.inference_mode():
            with self.trace(self._inputs(batch)):
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

    @contextmanager
    def remote_errors(self):
        """Around a block holding remote traces: NDIF's own failures (queue, timeout, a server error) as one line."""
        try:
            yield
        except UserError:
            raise
        except Exception as err:
            if self.remote is not True:
                raise
            line = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            key = os.environ.get("NDIF_API_KEY", "").strip()
            raise UserError(f"NDIF could not run the request: {line.replace(key, '***') if key else line}") from None

    # What would run the model here, with hooks, or bring back whole tensors: refused on NDIF.

    def run_body(self, batch: Batch):
        if self.reductions_only:
            raise UserError(REMOTE_ONLY)
        return super().run_body(batch)

    def decode(self, residual: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
        if self.reductions_only:
            raise UserError(REMOTE_ONLY)
        return super().decode(residual, differentiable)

    def logits(self, batch: Batch) -> torch.Tensor:
        if self.reductions_only:
            raise UserError(REMOTE_ONLY)
        return super().logits(batch)


def through_nnsight(handle: ModelHandle, remote: bool | str = False, reductions_only: bool = False) -> NNsightHandle:
    """The same loaded model behind nnsight traces (``remote="local"``: serialized as for NDIF, run here)."""
    _nnsight()
    values = {f.name: getattr(handle, f.name) for f in fields(ModelHandle)}
    return NNsightHandle(**values, remote=remote, reductions_only=reductions_only or remote is True)


def ndif_handle(spec: str, remote: bool | str = True, dispatch: bool = False) -> NNsightHandle:
    """The reductions-only handle of a model NDIF hosts: config and tokenizer from the hub, weights on the meta
    device (``dispatch``: load the weights here, with ``remote="local"``, to run the same traces locally)."""
    _nnsight()
    from nnsight.modeling.transformers import TransformersModel

    from core.models import wrap_model

    try:
        from transformers import AutoTokenizer

        wrapped = TransformersModel(spec, task="text-generation", dispatch=dispatch,
                                    tokenizer=AutoTokenizer.from_pretrained(spec))
    except Exception as err:  # the hub's own errors: one line
        raise UserError(f"could not read {spec}'s config and tokenizer for NDIF: {str(err).splitlines()[0][:200]}") from None
    handle = wrap_model(wrapped._module, wrapped.tokenizer, spec)
    values = {f.name: getattr(handle, f.name) for f in fields(ModelHandle)}
    return NNsightHandle(**values, remote=remote, reductions_only=True, wrapped=wrapped)


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
        raise UserError(f"NDIF could not say whether {spec} is running: {str(err).splitlines()[0][:200].replace(key, '***')}") from None
    if not running:
        raise UserError(f"NDIF is not running {spec} now: pick a model NDIF hosts (see https://nnsight.net/status)")
