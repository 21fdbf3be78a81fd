"""The model behind nnsight traces: here (``--backend nnsight``) or on NDIF (``--backend ndif``).

``through_nnsight(handle)`` gives a handle on the same loaded model whose backend is ``NNsightBackend``: its
residual streams come from one nnsight trace of the decoder stack, the lens and the head sweep run inside
traces. ``ndif_handle(spec)`` gives the handle of a model NDIF hosts: weights on the meta device here, every
trace sent with ``remote=True``. That backend is *reductions-only*: nothing but reduced statistics may come
back (``reductions``: the lens; ``sweep``: the head sweep's logit differences), so it declares only those
operations and the handle refuses the rest in one line. ``through_nnsight(handle, remote="local",
reductions_only=True)`` is the same backend on a model loaded here: nnsight serializes each trace as for NDIF,
rebuilds it with this project's modules hidden and runs it here, which tests every line but the network hop.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import fields, replace
from typing import Any

import torch

from core.errors import UserError
from core.interventions import passes
from core.interventions.hooks import model_inputs
from core.models.handle import Batch, ModelHandle

BACKENDS = ("local", "nnsight", "ndif")
NDIF_ANALYSES = ("lens", "translation", "sequences")  # what runs from reductions only (arithmetic: not its greedy answers)
NDIF_TIMEOUT_S = 5.0
REMOTE_ONLY = ("NDIF brings back reduced statistics only (the lens at chosen positions, the head sweep's logit "
               "differences), not residual streams or gradients: run this with --backend local or nnsight")
REDUCTIONS = frozenset({"reduced_lens", "ablation_sweep"})
# Traced here, the model's weights are here too: its outputs may come back whole.
TRACED = REDUCTIONS | {"residuals", "decode", "token_logits", "logits"}


def _nnsight():
    try:
        import nnsight
    except ImportError:
        raise UserError("the nnsight backend needs nnsight: pip install nnsight==0.8.1 (it is in requirements.txt)") from None
    return nnsight


class NNsightBackend:
    """Passes as nnsight traces. ``remote``: False runs traces here, True sends them to NDIF, "local" serializes
    them as for NDIF and runs them here. ``reductions_only``: only reduced statistics come back (NDIF's rule).
    ``wrapped``: the nnsight model (built from the handle's model on first use when not given)."""

    def __init__(self, remote: bool | str = False, reductions_only: bool = False, wrapped: Any = None):
        self.remote = remote
        self.reductions_only = reductions_only
        self.wrapped = wrapped
        self.name = "NDIF" if remote is True else "nnsight"
        self.operations = REDUCTIONS if reductions_only else TRACED
        self.refusal = REMOTE_ONLY if reductions_only else None
        self._envoys = None
        self._names = None

    # -- envoys ---------------------------------------------------------------------------------------------

    def traced(self, handle: ModelHandle):
        """(nnsight model, envoys of the decoder layers, of the final norm and of the unembedding)."""
        if self._envoys is None:
            if self.wrapped is None:
                if self.remote and handle.adapter.family == "tinylm":
                    raise UserError("NDIF runs Hugging Face models only, not a tinylm checkpoint: use --backend local")
                if self.remote:  # remote traces need a model nnsight can name to a server (or simulate one)
                    from nnsight.modeling.transformers import TransformersModel

                    self.wrapped = TransformersModel(handle.model, tokenizer=handle.tokenizer, task="text-generation")
                else:
                    self.wrapped = _nnsight().NNsight(handle.model)
            adapter, model = handle.adapter, handle.model
            self._envoys = (self.wrapped, self.envoys(handle, adapter.layers(model)),
                            self.envoy(handle, adapter.final_norm(model)), self.envoy(handle, adapter.unembed(model)))
        return self._envoys

    def envoy(self, handle: ModelHandle, module):
        """The nnsight envoy of a submodule of the handle's model."""
        if self._names is None:
            self._names = {id(m): n for n, m in handle.model.named_modules()}
        e = self.wrapped if self.wrapped is not None else self.traced(handle)[0]
        for part in self._names[id(module)].split("."):
            if part:
                e = e[int(part)] if part.isdigit() else getattr(e, part)
        return e

    def envoys(self, handle: ModelHandle, modules) -> list:
        return [self.envoy(handle, m) for m in modules]

    def trace(self, handle: ModelHandle, inputs: dict):
        """An nnsight trace of the decoder stack on ``inputs`` (ids, mask, position ids), here or remote."""
        wrapped = self.traced(handle)[0]
        options = {} if handle.adapter.family == "tinylm" else {"use_cache": False}  # tinylm has no KV cache
        if self.remote:
            return wrapped.trace(**inputs, **options, remote=self.remote)
        return wrapped.trace(**inputs, **options)

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

    # -- operations -----------------------------------------------------------------------------------------

    def residuals(self, handle: ModelHandle, batch: Batch, index: torch.Tensor | None = None,
                  sublayer: bool = False) -> torch.Tensor:
        """``ModelHandle.residuals`` from one nnsight trace (whole layers only)."""
        if sublayer:
            raise UserError("sub-layer rows are not available through nnsight yet: use --backend local")
        _, layers, _, _ = self.traced(handle)
        saved = []
        with handle.lock, torch.inference_mode():
            with self.trace(handle, model_inputs(handle, batch)):
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

    # The model's weights are here: decoding a residual is the same computation as the local backend's.
    decode = staticmethod(passes.decode)
    token_logits = staticmethod(passes.token_logits)
    logits = staticmethod(passes.logits)

    def reduced_lens(self, handle: ModelHandle, prompts, **kwargs):
        from core.backends.reductions import reduced_lens

        return reduced_lens(handle, prompts, **kwargs)

    def ablation_sweep(self, handle: ModelHandle, clean, corrupt, answers, variants, ablation="mean", seed=0, *,
                       max_tokens=4096, progress=None):
        from core.backends.sweep import ablation_sweep

        return ablation_sweep(handle, clean, corrupt, answers, variants, ablation, seed, max_tokens=max_tokens,
                              progress=progress)


def nnsight_backend(handle: ModelHandle) -> NNsightBackend | None:
    """The handle's nnsight backend, or None when it runs elsewhere."""
    backend = handle.backend
    return backend if isinstance(backend, NNsightBackend) else None


def through_nnsight(handle: ModelHandle, remote: bool | str = False, reductions_only: bool = False) -> ModelHandle:
    """The same loaded model behind nnsight traces (``remote="local"``: serialized as for NDIF, run here)."""
    _nnsight()
    return replace(handle, backend=NNsightBackend(remote, reductions_only or remote is True))


def ndif_handle(spec: str, remote: bool | str = True, dispatch: bool = False) -> ModelHandle:
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
    values = {f.name: getattr(handle, f.name) for f in fields(ModelHandle) if f.name != "backend"}
    return ModelHandle(**values, backend=NNsightBackend(remote, True, wrapped))


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
