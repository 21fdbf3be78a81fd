"""A loaded model, and the one door every analysis uses to look inside it: ``ModelHandle``.

The handle offers, in the field's words and with shapes in each docstring, every operation the analyses
need (``OPERATIONS``): encode; residuals at chosen positions; decode; record named activations (``Site``);
run with edits (``Edit``); gradients of a metric at sites; frozen norm scales; read-only weight views
(``handle.weights``); and the batched interventions built on them (recorded runs resumed with components
replaced, attribution patching, attention patterns, what one head alone writes, greedy generation).

Where the passes run is the handle's *backend*: ``core.interventions`` registers the local one (hooks on
this process's model), ``core.backends`` the nnsight/NDIF one. A backend declares the operations it
supports; asking for another raises one ``UserError`` that names ``--backend local``. Nothing under
``core/models/`` imports the interventions, the lens or an analysis: backends register themselves here.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Hashable, Protocol, Sequence

import torch
from torch import nn

from core.cache import PerModel
from core.errors import UserError
from core.models.adapters import Adapter, in_features
from core.models.sites import Edit, Recording, Site  # noqa: F401 (the door's vocabulary, re-exported)
from core.models.weights import WeightViews

if TYPE_CHECKING:
    from core.progress import Progress

DEFAULT_MAX_PROMPT_TOKENS = 4096

# Every operation of the door, by name: what a backend may declare in ``operations``.
OPERATIONS = (
    "residuals", "decode", "token_logits", "logits", "generate", "record", "run_with_edits", "gradients",
    "frozen_norms", "capture", "record_run", "run_variants", "resume", "forward_with", "attribution",
    "attention_pattern", "head_ov", "after_first_mlp", "linear_gradients", "ablation_sweep", "reduced_lens",
    "tail_variants",
)


def max_prompt_tokens() -> int | None:
    """Longest prompt (in tokens) an analysis accepts: $LAYERSCOPE_MAX_PROMPT_TOKENS (default 4096, 0 = the
    model's context). A pasted book would otherwise keep a shared server busy for many minutes."""
    raw = os.environ.get("LAYERSCOPE_MAX_PROMPT_TOKENS", "").strip()
    try:
        cap = int(raw) if raw else DEFAULT_MAX_PROMPT_TOKENS
    except ValueError:
        raise UserError(f"LAYERSCOPE_MAX_PROMPT_TOKENS must be a whole number of tokens, got '{raw}'") from None
    return cap if cap > 0 else None


@dataclass
class Batch:
    """Prompts tokenized and left-padded so that position -1 is every prompt's last token."""

    input_ids: torch.Tensor  # [batch, pos]
    attention_mask: torch.Tensor  # [batch, pos], 0 on left padding
    lengths: list[int]  # real (unpadded) token count of each prompt

    @property
    def position_ids(self) -> torch.Tensor:
        """Positions counted from each prompt's first real token (left padding gets 0)."""
        return (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def padded_index(self, row: int, position: int) -> int:
        """Index in the padded batch of ``position`` of prompt ``row`` (negative counts from the end)."""
        length = self.lengths[row]
        if not -length <= position < length:
            raise UserError(f"position {position} is outside the prompt ({length} tokens: use 0..{length - 1} or -1)")
        pad = self.input_ids.shape[1] - length
        return pad + (position % length)


def right_padded(rows: Sequence[Sequence[int]], pad_id: int) -> Batch:
    """Token ids right-padded with ``pad_id``; the mask is all ones (causal attention ignores what follows), so
    position ``lengths[i] - 1`` of row i is its last real token."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
    return Batch(ids, torch.ones_like(ids), [len(r) for r in rows])


class Backend(Protocol):
    """Where a handle's passes run. ``operations``: the names (from ``OPERATIONS``) it implements, each as a
    method taking the handle first; ``name`` is what error messages call it."""

    name: str
    operations: frozenset[str]


_BACKENDS: dict[str, Callable[[], Backend]] = {}


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Make ``factory`` the maker of backend ``name`` (``core.interventions`` registers "local" on import)."""
    _BACKENDS[name] = factory


_CACHE = PerModel()


@dataclass
class ModelHandle:
    """A loaded causal LM, what the analyses need to know about it, and the door into it."""

    spec: str  # what the user asked for, e.g. "gemma-3-270m" or a folder
    model: nn.Module  # for backends, adapters and loaders only: analyses use the operations below
    tokenizer: object  # a transformers tokenizer
    adapter: Adapter
    architecture: str  # config.model_type, e.g. "gemma3_text"
    n_layers: int
    n_heads: int
    d_model: int
    vocab_size: int  # rows of the unembedding (may exceed len(tokenizer))
    dtype: str
    device: torch.device
    quantization: str = "none"
    memory_bytes: int = 0
    context_length: int | None = None
    backend: Any = None  # a Backend; None = the registered "local" one
    # Inference on one model is serialized: Streamlit sessions share the handle and hooks are global.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    # -- what the model is ------------------------------------------------------------------------------------

    @property
    def head_dim(self) -> int:
        return in_features(self.adapter.attn_out_proj(self.adapter.layers(self.model)[0])) // self.n_heads

    @property
    def weights(self) -> WeightViews:
        """Read-only views of the weights (``core.models.weights``)."""
        return WeightViews(self)

    def summary(self) -> dict:
        """What the sidebar and the CLI show about the model."""
        names = ("spec", "architecture", "n_layers", "n_heads", "d_model", "vocab_size", "dtype", "quantization")
        return {**{name: getattr(self, name) for name in names}, "device": str(self.device),
                "backend": self.backend_name, "memory_mb": round(self.memory_bytes / 2**20, 1)}

    @property
    def input_device(self) -> torch.device:
        """Where input ids go (the embedding's device when a model is spread over GPUs)."""
        return self.adapter.embed(self.model).weight.device

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    def cached(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per loaded model and ``key`` (weights-only values: Gram matrices, scores…); the entry
        goes with the model."""
        return _CACHE.get(self.model, key, compute)

    def fingerprint(self) -> str:
        """Identifies the weights, not just the spec: spec, sizes, dtype, quantization and a sample of every
        parameter's values, hashed (16 hex digits). Two loads of the same files give the same fingerprint."""
        return self.cached("fingerprint", self._fingerprint)

    def _fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps([self.spec, self.architecture, self.dtype, self.quantization,
                                       self.n_layers, self.d_model, self.vocab_size]).encode())
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                h.update(name.encode())
                h.update(str(tuple(param.shape)).encode())
                sample = param.detach().reshape(-1)[:64]
                h.update(sample.float().cpu().numpy().tobytes() if sample.is_floating_point() else sample.cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    # -- the backend ------------------------------------------------------------------------------------------

    @property
    def backend_name(self) -> str:
        return self._backend().name

    def _backend(self):
        if self.backend is None:
            if "local" not in _BACKENDS:
                raise RuntimeError("no local backend registered: import core.interventions before running an analysis")
            self.backend = _BACKENDS["local"]()
        return self.backend

    def supports(self, operation: str) -> bool:
        """Whether this handle's backend implements ``operation`` (one of ``OPERATIONS``)."""
        return operation in self._backend().operations

    def require(self, operation: str, what: str | None = None) -> None:
        """``UserError`` naming ``--backend local`` unless the backend implements ``operation``."""
        backend = self._backend()
        if operation not in backend.operations:
            thing = what or operation.replace("_", " ")
            reason = getattr(backend, "refusal", None)
            raise UserError(f"{thing}: {reason}" if reason else
                            f"{thing} is not available through the {backend.name} backend: run this with --backend local")

    @property
    def reductions_only(self) -> bool:
        """Whether only reduced statistics come back from this handle's passes (NDIF)."""
        return bool(getattr(self._backend(), "reductions_only", False))

    def _op(self, operation: str):
        self.require(operation)
        return getattr(self._backend(), operation)

    # -- the door ---------------------------------------------------------------------------------------------

    def encode(self, prompts: Sequence[str], add_special_tokens: bool = True) -> Batch:
        """Tokenize and left-pad; refuses empty prompts and prompts longer than the context."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            raise UserError("no prompt given: type at least one prompt")
        ids = []
        for prompt in prompts:
            if not prompt or not prompt.strip():
                raise UserError("the prompt is empty: type some text to look at")
            try:
                prompt.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8 (e.g. a shell argument)
                raise UserError("the prompt is not valid Unicode text (it holds bytes that are not UTF-8): retype it") from None
            row = self.tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
            self.check_length(len(row))
            if not row:
                raise UserError("the prompt produced no tokens: type some text to look at")
            ids.append(row)
        width = max(len(r) for r in ids)
        pad_id = self.pad_token_id
        input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, width - len(row) :] = torch.tensor(row)
            attention_mask[i, width - len(row) :] = 1
        return Batch(input_ids, attention_mask, [len(r) for r in ids])

    def check_length(self, n_tokens: int) -> None:
        """``UserError`` when a prompt of ``n_tokens`` is longer than the context or this installation's cap."""
        if self.context_length and n_tokens > self.context_length:
            raise UserError(f"the prompt is {n_tokens} tokens, longer than the model's context of "
                            f"{self.context_length}: shorten it")
        cap = max_prompt_tokens()
        if cap and n_tokens > cap:
            raise UserError(f"the prompt is {n_tokens} tokens; this installation looks at most {cap} tokens per prompt "
                            f"(LAYERSCOPE_MAX_PROMPT_TOKENS): shorten it")

    def batch_of(self, rows: Sequence[Sequence[int]], pad: str = "left") -> Batch:
        """Token ids (already tokenized) as a batch: left-padded like ``encode`` or right-padded (``right_padded``)."""
        if pad == "right":
            return right_padded(rows, self.pad_token_id)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row):] = torch.as_tensor(list(row), dtype=torch.long)
            mask[i, width - len(row):] = 1
        return Batch(ids, mask, [len(r) for r in rows])

    def residuals(self, batch: Batch, index: torch.Tensor | None = None, sublayer: bool = False) -> torch.Tensor:
        """The residual stream after every layer, from ONE forward pass.

        ``index`` is [batch, n_pos] padded-position indices to keep (None keeps all).
        Returns Float[Tensor, "layer batch pos d_model"] with layer 0 = the embeddings as the first block sees
        them and layer n_layers = the output of the last block (before the final norm). With ``sublayer``,
        2·n_layers + 1 rows: the embeddings, then for each block the residual after its attention and after its
        MLP (the block's output). The unembedding is never run.
        """
        return self._op("residuals")(self, batch, index, sublayer)

    def decode(self, residual: torch.Tensor, differentiable: bool = False, softcap: bool = True) -> torch.Tensor:
        """Final norm + unembedding (+ logit scale, + soft cap) of residual vectors [..., d_model] ->
        Float[Tensor, "... vocab"] (float32). ``differentiable`` keeps the graph; ``softcap=False`` gives the
        logits before the soft cap (what direct logit attribution splits)."""
        return self._op("decode")(self, residual, differentiable, softcap)

    def token_logits(self, residual: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Logits of chosen tokens only, differentiably: ``residual`` [n, d_model]; ``ids`` [n, k] per row or [k]
        shared -> Float[Tensor, "n k"] (final norm, the k unembedding rows, soft cap)."""
        return self._op("token_logits")(self, residual, ids)

    def logits(self, batch: Batch) -> torch.Tensor:
        """The model's own next-token logits Float[Tensor, "batch pos vocab"] (float32)."""
        return self._op("logits")(self, batch)

    def generate(self, batch: Batch, max_new_tokens: int, stop: Sequence[str] = (), *,
                 kv_cache: bool | None = None, edits: Sequence[Edit] = ()) -> list[list[int]]:
        """Greedy continuation ids per row (no prompt; cut at end-of-sequence, and once a ``stop`` string appears).
        ``kv_cache`` forces the cached (True) or the plain one-pass-per-token (False) decoding; both agree.
        ``edits`` (without positions: they apply to every position of every pass) steer the generation."""
        return self._op("generate")(self, batch, max_new_tokens, stop, kv_cache, edits)

    def record(self, batch: Batch, sites: Sequence[Site], *, index: torch.Tensor | None = None,
               edits: Sequence[Edit] = (), norms_at: tuple[int, int | None] | None = None) -> Recording:
        """One pass (no gradient) recording each of ``sites`` (shapes in ``core.models.sites``), with ``edits``
        applied. ``index`` [batch, slot] keeps only those padded positions of position-indexed sites. The pass
        stops after the last layer it needs; ``Recording.final`` is set when it ran to the end. ``norms_at`` =
        (row, padded position) also freezes every norm there, in the same pass (``Recording.norms``:
        ``FrozenNorms``, pre-norms included); (row, None) freezes them at every position of that row (each scale
        then [pos, d_model]: what a replacement model with frozen norm scales needs)."""
        return self._op("record")(self, batch, sites, index, edits, norms_at)

    def run_with_edits(self, batch: Batch, edits: Sequence[Edit], *, read: Sequence[Site] = ()) -> Recording:
        """A full pass with ``edits`` applied (several at once, any rows and positions: batched interventions);
        ``Recording.final`` is the last block's output Float[Tensor, "batch pos d_model"], plus each ``read`` site."""
        return self._op("run_with_edits")(self, batch, edits, read)

    def gradients(self, batch: Batch, sites: Sequence[Site], metric: Callable[[torch.Tensor], torch.Tensor], *,
                  edits: Sequence[Edit] = ()):
        """∂ Σ_prompts metric / ∂ activation at each site: ``metric`` maps the final residual
        Float[Tensor, "batch pos d_model"] to one number per prompt, differentiably. One forward and one backward
        pass; the weights get no gradient. -> ``Gradients`` (metric [batch], values and grads {site: tensor})."""
        return self._op("gradients")(self, batch, sites, metric, edits)

    def frozen_norms(self, batch: Batch, position: int, row: int = 0):
        """Every norm between a component and the logits, frozen at its scale on prompt ``row`` at padded
        ``position`` -> ``core.models.norms.FrozenNorms``."""
        return self._op("frozen_norms")(self, batch, position, row)

    # Batched interventions on heads and MLPs (``core.interventions``: Component, Activations, CleanRun).

    def capture(self, batch: Batch):
        """Every component's activations (heads' z, MLPs' outputs) on equally long prompts -> ``Activations``."""
        return self._op("capture")(self, batch)

    def record_run(self, batch: Batch, edits: Sequence[Edit] = ()):
        """One recorded pass (every layer's call, every component's activations, the final residual at the last
        position) that batched interventions resume from -> ``CleanRun``."""
        return self._op("record_run")(self, batch, edits)

    def run_variants(self, run, values, variants, *, max_tokens: int = 4096, progress: Progress | None = None):
        """The final residual [variant, batch, d_model] at the last position when ``variants[i]``'s components take
        ``values``, many variants per batched pass resuming from ``run``."""
        return self._op("run_variants")(self, run, values, variants, max_tokens=max_tokens, progress=progress)

    def resume(self, run, start: int, copies: int, edits: Sequence[Edit]) -> torch.Tensor:
        """Layers ``start..`` on ``copies`` copies of ``run``'s input to layer ``start`` with ``edits`` (rows of the
        copies) -> the final residual at the last position, Float[Tensor, "copies*batch d_model"]."""
        return self._op("resume")(self, run, start, copies, edits)

    def tail_variants(self, batch: Batch, copies: int, edits: Sequence[Edit], *, tail: int = 1) -> torch.Tensor:
        """Many variants of the prompts' last ``tail`` positions: every earlier position runs once, clean (its keys
        and values cached), the last ``tail`` positions once per copy with ``edits`` (rows index the copies: row
        ``c * n_prompts + p`` is copy c of prompt p; positions are padded positions of ``batch``, among the last
        ``tail``; none given: all of them) -> the last block's output at the last position,
        Float[Tensor, "copies*batch d_model"]. Equal to ``run_with_edits`` on ``copies`` copies of the prompts
        (an edit at the last positions cannot reach an earlier one), at the cost of ``tail`` tokens a copy:
        batched patching and steering of the answer position."""
        return self._op("tail_variants")(self, batch, copies, edits, tail)

    def forward_with(self, batch: Batch, values, components) -> torch.Tensor:
        """One plain pass with ``components`` replaced by ``values`` -> Float[Tensor, "batch d_model"] at the last position."""
        return self._op("forward_with")(self, batch, values, components)

    def attribution(self, batch: Batch, values, metric):
        """Attribution patching of every head and MLP from one forward and one backward pass -> ``Attribution``."""
        return self._op("attribution")(self, batch, values, metric)

    def attention_pattern(self, batch: Batch, layer: int) -> torch.Tensor:
        """Attention weights of every head of ``layer``: Float[Tensor, "batch head query key"] on the CPU."""
        return self._op("attention_pattern")(self, batch, layer)

    def head_ov(self, residual: torch.Tensor, layers: Sequence[int] | None = None) -> torch.Tensor:
        """What each head alone writes when its layer's input is ``residual`` [n, d_model] at a lone position (its
        OV circuit, through the model itself) -> Float[Tensor, "layer head n d_model"]."""
        return self._op("head_ov")(self, residual, layers)

    def after_first_mlp(self, token_ids: Sequence[int]) -> torch.Tensor:
        """Each token alone through layer 0 with its heads zeroed: the embedding plus the first MLP's output
        ("effective embedding") -> Float[Tensor, "token d_model"]."""
        return self._op("after_first_mlp")(self, token_ids)

    def linear_gradients(self, batch: Batch, part: str, loss: Callable[[torch.Tensor], torch.Tensor],
                         on_input: Callable[[str, torch.Tensor], None],
                         on_grad: Callable[[str, torch.Tensor], None]) -> torch.Tensor:
        """Per-token gradients of every linear layer of ``part`` ("all", "attention", "mlp"; names and sizes in
        ``weights.linear_layers``), streamed: the forward pass calls ``on_input(name, x)`` with each layer's input
        [batch, pos, in], the backward pass ``on_grad(name, δ)`` with the gradient at its output [batch, pos, out];
        ``loss(final)`` maps the last block's output [batch, pos, d_model] to Float[Tensor, "batch"], differentiably.
        -> the losses [batch]. The weights get no gradient."""
        return self._op("linear_gradients")(self, batch, part, loss, on_input, on_grad)

    def ablation_sweep(self, clean: Batch, corrupt: Batch, answers: torch.Tensor, variants, ablation: str = "mean",
                       seed: int = 0, *, max_tokens: int = 4096, progress: Progress | None = None):
        """Mean logit difference (``answers`` [prompt, 2]) with each variant's components ablated (mean, zero or
        resample of the corrupted prompts), only the numbers coming back -> ``TracedSweep``."""
        return self._op("ablation_sweep")(self, clean, corrupt, answers, variants, ablation, seed,
                                          max_tokens=max_tokens, progress=progress)

    def reduced_lens(self, prompts, **kwargs):
        """The logit lens computed where the model runs, only its reductions coming back (NDIF) -> ``LensResult``."""
        return self._op("reduced_lens")(self, prompts, **kwargs)
