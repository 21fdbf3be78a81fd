"""The conformance checks: every operation of the door (``ModelHandle``) on a tiny random model of one architecture
case, each asserting an invariant that would be wrong if the case's adapter, or the backend, were wrong.

``CHECKS`` maps each check's name to a ``Check``: the function (taking a case of ``tests.tiny.ARCHITECTURE_CASES``)
and the operations it verifies: names of ``core.models.handle.OPERATIONS``, plus "record.v" (the value-vector site),
"weights", "weights.ov" and "weights.neuron_in" (read-only weight views) and "nnsight" (the nnsight backend, and
the same traces serialized as for NDIF). ``tests/models/test_conformance.py`` runs every check on every case;
``tests/models/conformance_table.py`` writes their outcomes to ``core/models/verified.json``, the table
``python -m core architectures`` prints.

Models are the tiny random ones of ``tests/tiny.py`` (3 layers, d_model 64, 4 heads), built once per case.
Comparisons are relative to the compared values' scale: the tiny models' weights are widened, so activations
reach tens to hundreds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import pytest
import torch

import core.interventions as iv  # registers the local backend
from core.errors import UserError
from core.interventions.hooks import first_tensor, output_tensor
from core.models import Batch, ModelHandle, wrap_model
from core.models.sites import EDITABLE, SITE_KINDS, Edit, Site
from core.models.weights import linear_matrix
from tests import tiny

CASES = tiny.ARCHITECTURE_CASES
PROMPTS = ["The capital of France is Paris. The capital of Germany is", "one two three"]  # unequal: left padding
LAYER = 1  # the middle block: edits there have a block before and after them
TOLERANCE = 1e-4  # float32, relative to the compared values' scale (at least 1)
ANSWERS = (11, 42)  # a logit difference the ablation sweeps measure


@dataclass(frozen=True)
class Check:
    """One invariant: ``run(case)`` raises when it does not hold; ``operations`` are what it verifies. It returns
    a reason when the case does not offer what it checks and the door refuses it as documented (a fused value
    projection has no site ``v``): those operations are then neither verified nor failed, but refused."""

    name: str
    operations: tuple[str, ...]
    run: Callable[[str], str | None]
    backend: str = "local"


CHECKS: dict[str, Check] = {}


def check(*operations: str, backend: str = "local"):
    def register(fn):
        CHECKS[fn.__name__] = Check(fn.__name__, operations, fn, backend)
        return fn
    return register


def run(case: str, name: str) -> str | None:
    """Run check ``name`` on ``case`` (an AssertionError or any exception: it does not hold; a returned reason: the
    case does not offer it, and says so in one line)."""
    return CHECKS[name].run(case)


# -- models ---------------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def handle(case: str, dtype: str = "float32") -> ModelHandle:
    """The case's handle, built by ``wrap_model`` as a real load builds it (float64: the same weights, doubled)."""
    model, tok = tiny.model_for(case)
    if dtype == "float64":
        if hasattr(model, "set_experts_implementation") and model._can_set_experts_implementation():
            model.set_experts_implementation("eager")  # transformers' grouped-mm experts kernel has no float64
        model = model.double()
    return wrap_model(model, tok, f"tiny-{case}")


@lru_cache(maxsize=None)
def traced(case: str, ndif: bool = False) -> ModelHandle:
    """The case's model behind nnsight traces (``ndif``: serialized as for NDIF, reductions only)."""
    from core.backends import through_nnsight

    return through_nnsight(handle(case), remote="local", reductions_only=True) if ndif else through_nnsight(handle(case))


def equal_batch(h: ModelHandle, n: int = 2, length: int = 6, seed: int = 0) -> Batch:
    """``n`` random prompts of exactly ``length`` tokens (component interventions compare positions one to one)."""
    ids = torch.randint(4, len(h.tokenizer), (n, length), generator=torch.Generator().manual_seed(seed))
    return Batch(ids, torch.ones_like(ids), [length] * n)


def lone_tokens(ids) -> Batch:
    """Each token alone, one prompt per token."""
    column = torch.tensor(list(ids), dtype=torch.long)[:, None]
    return Batch(column, torch.ones_like(column), [1] * len(column))


def tiled(batch: Batch, copies: int) -> Batch:
    """``copies`` copies of the prompts in one batch: row ``c * n_prompts + p`` is copy c of prompt p."""
    return Batch(batch.input_ids.repeat(copies, 1), batch.attention_mask.repeat(copies, 1), batch.lengths * copies)


def rows_of(batch: Batch, copy: int) -> tuple[int, ...]:
    n = len(batch.lengths)
    return tuple(range(copy * n, (copy + 1) * n))


def dense(h: ModelHandle, layer: int) -> bool:
    """Whether ``layer``'s MLP is dense (it has neurons: one output projection)."""
    return h.adapter.mlp_out_proj(h.adapter.layers(h.model)[layer]) is not None


def has_values(h: ModelHandle, layer: int) -> bool:
    """Whether ``layer``'s attention has its own value projection (site ``v``)."""
    attention = h.adapter.attention(h.adapter.layers(h.model)[layer])
    return isinstance(getattr(attention, "v_proj", None), torch.nn.Module)


def editable(h: ModelHandle, layer: int) -> list[Site]:
    return [Site(kind, layer) for kind in EDITABLE if kind != "neurons" or dense(h, layer)]


def random_like(t: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return torch.randn(t.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(t.dtype)


def close(a, b, tolerance: float = TOLERANCE, what: str = "") -> None:
    """max |a − b| ≤ tolerance · max(1, max |b|)."""
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    assert a.shape == b.shape, f"{what}: shapes {tuple(a.shape)} and {tuple(b.shape)}"
    scale = max(1.0, float(b.abs().max()) if b.numel() else 1.0)
    worst = float((a - b).abs().max()) if a.numel() else 0.0
    assert worst <= tolerance * scale, f"{what}: max |Δ| = {worst:.3g} (scale {scale:.3g})"


def real(batch: Batch) -> torch.Tensor:
    """[batch, pos] bool: the real (unpadded) positions."""
    return batch.attention_mask.bool()


@torch.no_grad()
def hooked(module: torch.nn.Module, drive: Callable[[], object], output: bool = False) -> torch.Tensor:
    """What ``module`` was called with (or returned) while ``drive()`` ran: the test's own look, not the handle's."""
    seen = {}

    def keep(module, args, *rest):
        if "x" not in seen:
            seen["x"] = (output_tensor(rest[0]) if output else first_tensor(args, rest[0])[0]).detach().clone()

    hook = (module.register_forward_hook(keep) if output else
            module.register_forward_pre_hook(keep, with_kwargs=True))
    try:
        drive()
    finally:
        hook.remove()
    return seen["x"]


# -- the lens -------------------------------------------------------------------------------------------------


@check("residuals", "decode", "logits")
def lens_equals_logits(case):
    """The lens at the last layer is the model's own distribution: KL exactly 0, probabilities = softmax(logits)."""
    from core.lens import run_lens

    h = handle(case)
    batch = h.encode(PROMPTS)
    probs = h.logits(batch).softmax(-1)  # [prompt, pos, vocab]
    decoded = h.decode(h.residuals(batch)[-1]).softmax(-1)
    close(decoded[real(batch)], probs[real(batch)], what="decode(last residual) vs softmax(logits)")
    lens = run_lens(h, PROMPTS, positions="all", top_k=5)
    assert np.all(lens.kl_to_final_bits[-1][lens.slot_mask] == 0.0)
    for p, length in enumerate(batch.lengths):
        own = probs[p, -length:]  # [pos, vocab]
        ids = torch.as_tensor(lens.top_ids[-1, p, :length])
        close(torch.as_tensor(lens.top_probs[-1, p, :length]), own.gather(-1, ids), what=f"lens prompt {p}")
        assert torch.equal(own.gather(-1, ids[:, :1]).squeeze(-1), own.max(-1).values)  # its top is the model's top


@check("residuals", "decode")
def batched_equals_unbatched(case):
    """Left padding changes nothing: every residual and the lens of each prompt equal those of the prompt alone."""
    from core.lens import run_lens

    h = handle(case)
    batch = h.encode(PROMPTS)
    together = h.residuals(batch)  # [layer, prompt, pos, d_model]
    lens = run_lens(h, PROMPTS, positions=(-1,), top_k=5)
    for p, prompt in enumerate(PROMPTS):
        length = batch.lengths[p]
        alone = h.residuals(h.encode([prompt]))[:, 0]
        close(together[:, p, -length:], alone, what=f"residuals of prompt {p}")
        single = run_lens(h, [prompt], positions=(-1,), top_k=5)
        close(torch.as_tensor(lens.top_probs[:, p]), torch.as_tensor(single.top_probs[:, 0]), what=f"lens of prompt {p}")
        close(torch.as_tensor(lens.entropy_bits[:, p]), torch.as_tensor(single.entropy_bits[:, 0]), what="entropy")


@check("token_logits")
def token_logits_equal_decoded_rows(case):
    h = handle(case)
    residual = h.residuals(h.encode(PROMPTS))[-1][:, -1]  # [prompt, d_model]
    full = h.decode(residual)
    per_row = torch.tensor([[5, 9, 40], [7, 7, 100]])
    close(h.token_logits(residual, per_row), full.gather(1, per_row), what="per-row ids")
    shared = torch.tensor([3, 50])
    close(h.token_logits(residual, shared), full[:, shared], what="shared ids")


# -- sites and edits ------------------------------------------------------------------------------------------


@check("record", "run_with_edits")
def replacing_by_the_clean_value_changes_nothing(case):
    """Each editable site of every layer replaced by its own clean value: the output is bit-identical. One pass:
    copy c of the prompts has site c replaced (the batch is the same, so the clean pass is bit-comparable)."""
    h = handle(case)
    batch = h.encode(PROMPTS)
    site = Site("resid_post", LAYER)
    alone = h.record(batch, [site])
    assert torch.equal(h.run_with_edits(batch, [Edit(site, "replace", alone[site])]).final, h.run_with_edits(batch, []).final)
    sites = [site for layer in range(h.n_layers) for site in editable(h, layer)]
    copies = tiled(batch, len(sites))
    clean = h.record(copies, sites)
    assert torch.equal(clean.final, h.run_with_edits(copies, []).final), "recording changed the pass"
    edits = [Edit(site, "replace", clean[site][list(rows_of(batch, c))], rows=rows_of(batch, c))
             for c, site in enumerate(sites)]
    out = h.run_with_edits(copies, edits).final
    changed = [str(site) for c, site in enumerate(sites)
               if not torch.equal(out[list(rows_of(batch, c))], clean.final[list(rows_of(batch, c))])]
    assert not changed, f"replacing by the clean value changed the output at {', '.join(changed)}"


@check("record", "run_with_edits")
def edits_are_live_and_causal(case):
    """Zero, scale and add at layer ℓ change the output; what layers before ℓ record is unchanged. One pass: copy c
    of the prompts takes edit c."""
    h = handle(case)
    batch = h.encode(PROMPTS)
    before = editable(h, 0)
    edits = []
    for site in editable(h, LAYER):
        edits.append(Edit(site, "zero"))
        # Norms undo scaling a whole activation (post-norms after mlp, BitNet's sub-norm inside its MLP): scale
        # some heads or neurons, or a site that adds to the residual stream directly.
        if site.kind in ("z", "neurons"):
            edits.append(Edit(site, "scale", 2.0, units=(0, 2)))
        elif site.kind in ("resid_pre", "resid_post", "attn_out", "mlp_out"):
            edits.append(Edit(site, "scale", 2.0))
        edits.append(Edit(site, "add"))
    copies = tiled(batch, len(edits))
    clean = h.run_with_edits(copies, [], read=before + editable(h, LAYER))
    for c, edit in enumerate(edits):
        rows = rows_of(batch, c)
        if edit.op == "add":
            value = clean[edit.site][list(rows)]
            edit = Edit(edit.site, "add", random_like(value, seed=c) * value.float().std())
        edits[c] = Edit(edit.site, edit.op, edit.value, rows=rows, units=edit.units)
    out = h.run_with_edits(copies, edits).final
    dead = [f"{e.op} {e.site}" for c, e in enumerate(edits)
            if (out[list(rows_of(batch, c))] - clean.final[list(rows_of(batch, c))]).abs().max() <= 1e-3]
    assert not dead, f"edits that changed nothing: {', '.join(dead)}"
    earlier = h.record(copies, before, edits=edits)
    assert earlier.final is None, "recording layer 0 ran the whole model"
    moved = [str(s) for s in before if not torch.equal(earlier[s], clean[s])]
    assert not moved, f"edits at layer {LAYER} changed {', '.join(moved)}"


@check("record", "residuals")
def sites_have_their_shapes_and_add_up(case):
    """Every site kind's shape (``core.models.sites``); residual sites are the residual stream's rows; the branches
    add up to the block output; attention looks neither ahead nor at left padding; ``index`` gathers positions."""
    h = handle(case)
    batch = h.encode(PROMPTS)
    b, p = batch.input_ids.shape
    d, heads = h.d_model, h.n_heads
    unknown = set(SITE_KINDS) - {"resid_pre", "resid_mid", "resid_post", "attn_out", "z", "pattern", "mlp_in", "mlp",
                                 "mlp_out", "neurons", "v"}
    assert not unknown, f"the conformance suite does not know site kinds {sorted(unknown)}: add their invariants"

    def has(kind, layer):
        return {"neurons": dense, "v": has_values}.get(kind, lambda h, layer: kind != "pattern")(h, layer)

    sites = [Site(kind, layer) for layer in range(h.n_layers) for kind in SITE_KINDS if has(kind, layer)]
    seen = h.record(batch, sites)
    # Attention weights need eager attention, which a model loaded with fused kernels switches to for the pass.
    seen.update(h.record(batch, [Site("pattern", layer) for layer in range(h.n_layers)]))
    residuals = h.residuals(batch)
    sublayer = h.residuals(batch, sublayer=True)
    mask = real(batch)
    parallel = h.adapter.parallel(h.model)
    for layer in range(h.n_layers):
        def at(kind):
            return seen[Site(kind, layer)]

        shapes = {"z": (b, p, heads, h.head_dim), "pattern": (b, heads, p, p)}
        if dense(h, layer):
            shapes["neurons"] = (b, p, h.weights.d_mlp(layer))
        if has_values(h, layer):
            shapes["v"] = (b, p, h.weights.value_proj(layer).shape[0], h.head_dim)
        else:
            with pytest.raises(UserError, match="fuses its value projection"):
                h.record(batch, [Site("v", layer)])
        for kind in SITE_KINDS:
            if kind in ("neurons", "v") and kind not in shapes:
                continue
            assert tuple(at(kind).shape) == shapes.get(kind, (b, p, d)), f"{kind}.{layer}: {tuple(at(kind).shape)}"
        assert torch.equal(at("resid_pre"), residuals[layer]), f"resid_pre.{layer} is not residuals row {layer}"
        assert torch.equal(at("resid_post"), residuals[layer + 1]), f"resid_post.{layer}"
        close(at("resid_mid")[mask], sublayer[2 * layer + 1][mask], what=f"resid_mid.{layer} vs sub-layer row")
        assert torch.equal(sublayer[2 * layer + 2], residuals[layer + 1])
        if parallel:
            close((at("resid_pre") + at("attn_out") + at("mlp_out"))[mask], at("resid_post")[mask],
                  what=f"parallel block {layer}")
        else:
            close((at("resid_pre") + at("attn_out"))[mask], at("resid_mid")[mask], what=f"resid_mid.{layer}")
            close((at("resid_mid") + at("mlp_out"))[mask], at("resid_post")[mask], what=f"resid_post.{layer}")
        pattern = at("pattern").float()  # [b, head, query, key]; rows sum to 1: attention_pattern's check
        queries = mask[:, None, :, None].expand_as(pattern)  # real query rows (padding's own rows are anything)
        assert torch.all(pattern.triu(1)[queries] == 0), f"pattern.{layer} looks ahead"
        keys = (~mask)[:, None, None, :].expand_as(pattern) & queries
        assert torch.all(pattern[keys] == 0), f"pattern.{layer} attends to left padding"
    index = torch.tensor([[p - 1, p - 3], [p - 1, p - 2]])
    gathered = h.record(batch, [Site("resid_post", LAYER), Site("z", LAYER), Site("resid_mid", LAYER)], index=index)
    for site in gathered:
        full = seen[site]
        expected = torch.stack([full[row, index[row]] for row in range(b)])
        assert torch.equal(gathered[site], expected), f"index= at {site}"


@check("frozen_norms")
def frozen_norms_reproduce_each_norm(case):
    """The final norm and every post-norm, frozen at one position, give the norm's own output on its input there;
    the pre-norms, frozen, map the residual the attention / the MLP reads onto what it reads (parallel blocks: both
    read the block input)."""
    h = handle(case)
    batch = h.encode(PROMPTS)
    row, position = 0, batch.padded_index(0, -2)
    norms = h.frozen_norms(batch, position, row)
    final = h.residuals(batch)[-1][row, position]
    with torch.no_grad():
        own = h.weights.final_norm()(final)
    close(norms.final(final), own, 1e-5, what="final norm")
    for kind, frozen, module_of in (("attn", norms.attn_post, h.weights.attn_post_norm),
                                    ("mlp", norms.mlp_post, h.weights.mlp_post_norm)):
        assert len(frozen) == h.n_layers
        for layer in range(h.n_layers):
            module = module_of(layer)
            assert (frozen[layer] is None) == (module is None), f"{kind} post-norm {layer}"
            if module is not None:
                drive = lambda: h.run_with_edits(batch, [])  # noqa: E731
                x = hooked(module, drive)[row, position]
                y = hooked(module, drive, output=True)[row, position]
                close(frozen[layer](x), y, 1e-5, what=f"{kind} post-norm {layer}")
    same = h.record(batch, [], norms_at=(row, position)).norms
    assert torch.equal(same.final.scale, norms.final.scale)
    if not getattr(norms, "attn_pre", None):
        return
    # The norms in front of the attention and the MLP: frozen, they map the residual each reads onto its input.
    residuals = h.residuals(batch, sublayer=True)[:, row, position]  # [2 layer + 1, d_model]
    mlp_in = h.record(batch, [Site("mlp_in", layer) for layer in range(h.n_layers)])
    parallel = h.adapter.parallel(h.model)
    for layer in range(h.n_layers):
        attention = h.adapter.attention(h.adapter.layers(h.model)[layer])
        read = hooked(attention, lambda: h.run_with_edits(batch, []))[row, position]
        pre, resid_pre = norms.attn_pre[layer], residuals[2 * layer]
        close(pre(resid_pre) if pre is not None else resid_pre, read, 1e-5, what=f"attention pre-norm {layer}")
        pre, resid = norms.mlp_pre[layer], residuals[2 * layer if parallel else 2 * layer + 1]
        close(pre(resid) if pre is not None else resid, mlp_in[Site("mlp_in", layer)][row, position], 1e-5,
              what=f"MLP pre-norm {layer}")


@check("frozen_norms", "weights")
def direct_logit_attribution_sums_to_the_logit(case):
    """``core.analyses.attribute``: the parts sum to the total, and the total is the model's logit before the soft cap."""
    from core.analyses import attribute

    h = handle(case)
    logits = h.logits(h.encode(PROMPTS[:1]))[0, -1]
    target, versus = [int(i) for i in logits.topk(2).indices]
    cap = h.weights.softcap
    for against in (None, versus):
        result = attribute.run(h, attribute.Settings(prompt=PROMPTS[0], target=f"#{target}",
                                                     versus=None if against is None else f"#{against}"))
        total = result.total
        close(sum(c.value for c in result.components), total, what="sum of the components")
        model = float(logits[target]) - (float(logits[against]) if against is not None else 0.0)
        if not cap:
            close(total, model, what="total vs the model's logit")
        elif against is None:  # the model's logit is the soft cap of the total
            close(cap * math.tanh(total / cap), model, what="soft-capped total vs the model's logit")


# -- weights --------------------------------------------------------------------------------------------------


@check("weights")
def weight_views_reproduce_the_branches(case):
    """``out_proj`` turns ``z`` into what the attention adds (after any post-norm and multiplier); ``neuron_out``
    turns ``neurons`` into the MLP's output (dense MLPs)."""
    h = handle(case)
    batch = h.encode(PROMPTS)
    w = h.weights
    sites = [Site(kind, layer) for layer in range(h.n_layers) for kind in ("z", "attn_out", "mlp")]
    sites += [Site("neurons", layer) for layer in range(h.n_layers) if dense(h, layer)]
    seen = h.record(batch, sites)
    mask = real(batch)
    with torch.no_grad():
        for layer in range(h.n_layers):
            z = seen[Site("z", layer)].float()
            projected = torch.einsum("bphk,hkd->bpd", z, w.out_proj(layer))
            bias = w.out_proj_bias(layer)
            projected = projected + (bias.float() if bias is not None else 0.0)
            post = w.attn_post_norm(layer)
            written = (post(projected) if post is not None else projected) * w.residual_scale
            close(written[mask], seen[Site("attn_out", layer)][mask], what=f"out_proj({layer}) · z")
            if dense(h, layer):
                neurons = seen[Site("neurons", layer)].float()
                out = neurons @ w.neuron_out(layer)
                bias = getattr(w.mlp_out_proj(layer), "bias", None)
                out = out + (bias.float() if bias is not None else 0.0)
                close(out[mask], seen[Site("mlp", layer)][mask], what=f"neuron_out({layer}) · neurons")
            else:
                with pytest.raises(UserError):
                    w.neuron_out(layer)


@check("weights.neuron_in")
def neuron_in_has_a_row_per_neuron(case):
    """``neuron_in``: each neuron's input vector (the up-projection's row), one per neuron of a dense MLP."""
    h = handle(case)
    layers = [layer for layer in range(h.n_layers) if dense(h, layer)]
    for layer in layers:
        assert tuple(h.weights.neuron_in(layer).shape) == (h.weights.d_mlp(layer), h.d_model), f"layer {layer}"
    if not layers:
        with pytest.raises(UserError, match="mixture of experts") as refused:
            h.weights.neuron_out(0)
        return str(refused.value)


def _lone_pass(h: ModelHandle, x: torch.Tensor, layer: int):
    """``x`` [n, d_model] as the input of block ``layer`` at a lone position: (z there [n, head, head_dim], the
    attention's input [n, d_model])."""
    batch = lone_tokens([5] * len(x))
    edit = Edit(Site("resid_pre", layer), "replace", x[:, None])
    attention = h.adapter.attention(h.adapter.layers(h.model)[layer])
    z = {}
    attn_in = hooked(attention, lambda: z.update(h.record(batch, [Site("z", layer)], edits=[edit])))
    return z[Site("z", layer)][:, 0], attn_in[:, 0]


@check("head_ov")
def head_ov_is_what_each_head_writes(case):
    """``head_ov``: what head h alone writes for a lone token = its z through W_O (and any post-norm, multiplier)."""
    h = handle(case)
    x = 3.0 * torch.randn(3, h.d_model, generator=torch.Generator().manual_seed(2))
    out = h.head_ov(x, [LAYER])  # [1, head, n, d_model]
    assert tuple(out.shape) == (1, h.n_heads, 3, h.d_model)
    z, _ = _lone_pass(h, x, LAYER)
    w = h.weights
    w_o, bias, post = w.out_proj(LAYER), w.out_proj_bias(LAYER), w.attn_post_norm(LAYER)
    base = torch.zeros(3, h.d_model) + (bias.float() if bias is not None else 0.0)
    with torch.no_grad():
        for head in range(h.n_heads):
            alone = z[:, head].float() @ w_o[head] + base
            expected = (post(alone) - post(base)) if post is not None else alone - base
            close(out[0, head], expected * w.residual_scale, what=f"head {head}")


@check("weights.ov")
def ov_reads_the_value_and_output_projections(case):
    """``weights.ov(l, h)`` = W_V W_O: for a lone token, the attention's input through it is the head's z through
    W_O (less the value bias). A fused value projection is refused in one line."""
    h = handle(case)
    attention = h.adapter.attention(h.adapter.layers(h.model)[LAYER])
    v_proj = getattr(attention, "v_proj", None)
    if not isinstance(v_proj, torch.nn.Module):
        with pytest.raises(UserError, match="fuses its value projection") as refused:
            h.weights.ov(LAYER, 0)
        return str(refused.value)
    x = 3.0 * torch.randn(3, h.d_model, generator=torch.Generator().manual_seed(3))
    z, attn_in = _lone_pass(h, x, LAYER)
    w_o = h.weights.out_proj(LAYER)
    kv_heads = h.weights.value_proj(LAYER).shape[0]
    v_bias = getattr(v_proj, "bias", None)
    for head in range(h.n_heads):
        kv = head // (h.n_heads // kv_heads)
        b_v = v_bias[kv * h.head_dim:(kv + 1) * h.head_dim].detach().float() if v_bias is not None else 0.0
        close(attn_in.float() @ h.weights.ov(LAYER, head), (z[:, head].float() - b_v) @ w_o[head], what=f"head {head}")


# -- gradients ------------------------------------------------------------------------------------------------


@check("gradients")
def gradients_match_finite_differences(case):
    """In float64: ∂metric/∂site · direction = (metric(+ε·direction) − metric(−ε·direction)) / 2ε at resid_pre, z
    and mlp_out."""
    h = handle(case, "float64")
    assert h.dtype == "float64"
    batch = equal_batch(h)  # float64 with left padding: transformers' own forward gives NaN (masked query rows)
    u = torch.randn(h.d_model, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def metric(final):
        return torch.tanh(final[:, -1] @ u / (10 * h.d_model ** 0.5))

    sites = [Site("resid_pre", LAYER), Site("z", LAYER), Site("mlp_out", LAYER)]
    grads = h.gradients(batch, sites, metric)
    seen = h.record(batch, sites)
    for site in sites:
        value = grads.values[site]
        assert value.dtype == torch.float64 and grads.grads[site].shape == value.shape, str(site)
        close(value, seen[site], 1e-9, what=f"{site}: the value gradients saw vs record")
        direction = random_like(value, seed=7)
        direction = direction / direction.norm()
        # Not smaller: attention softmaxes run in float32 even in a float64 model.
        eps = 1e-2 * float(value.abs().max())

        def at(step):
            return metric(h.run_with_edits(batch, [Edit(site, "add", step * direction)]).final).sum()

        numeric = float(at(eps) - at(-eps)) / (2 * eps)
        analytic = float((grads.grads[site] * direction).sum())
        assert abs(numeric - analytic) <= 1e-3 * max(abs(analytic), 1e-2 * float(grads.grads[site].norm())), \
            f"{site}: gradient {analytic:.6g}, finite difference {numeric:.6g}"


@check("linear_gradients")
def linear_gradients_match_the_site_gradients(case):
    """The output projection's input is ``z``; its output gradient read back through W_O is ∂metric/∂z."""
    h = handle(case)
    batch = h.encode(PROMPTS)
    u = torch.randn(h.d_model, generator=torch.Generator().manual_seed(5))

    def loss(final):
        return final[:, -1] @ u

    inputs, deltas = {}, {}
    losses = h.linear_gradients(batch, "attention", loss, lambda n, x: inputs.__setitem__(n, x.detach().clone()),
                                lambda n, g: deltas.__setitem__(n, g.detach().clone()))
    module = h.weights.out_proj_module(LAYER)
    name = next(n for n, m in h.weights.linear_modules("attention").items() if m is module)
    site = Site("z", LAYER)
    grads = h.gradients(batch, [site], loss)
    close(losses, grads.metric, what="losses")
    close(inputs[name], grads.values[site].flatten(-2), what=f"{name} input vs z")
    close(deltas[name] @ linear_matrix(module), grads.grads[site].flatten(-2), what=f"{name} gradient vs ∂/∂z")


@check("attribution")
def attribution_patching_is_the_first_order_term(case):
    """Each component's estimate is (replacement − clean) · ∂(mean metric)/∂activation, as ``gradients`` gives it;
    the clean values as replacement estimate exactly 0."""
    h = handle(case)
    batch = equal_batch(h)
    u = torch.randn(h.d_model, generator=torch.Generator().manual_seed(6))

    def metric(last):
        return last @ u / 10

    run = h.record_run(batch)
    estimate = h.attribution(batch, run.activations.zeros(), metric)
    close(estimate.metric, metric(run.final), what="clean metric")
    none = h.attribution(batch, run.activations, metric)
    assert torch.all(none.heads == 0) and torch.all(none.mlps == 0), "the clean values as replacement estimate a change"
    n = len(batch.lengths)
    sites = [Site(kind, layer) for layer in range(h.n_layers) for kind in ("z", "mlp")]
    grads = h.gradients(batch, sites, lambda final: metric(final[:, -1]) / n)
    heads = torch.stack([-(grads.values[Site("z", l)] * grads.grads[Site("z", l)]).sum(dim=(0, 1, 3))
                         for l in range(h.n_layers)])
    mlps = torch.stack([-(grads.values[Site("mlp", l)] * grads.grads[Site("mlp", l)]).sum() for l in range(h.n_layers)])
    close(estimate.heads, heads, what="heads")
    close(estimate.mlps, mlps, what="MLPs")


@check("record.v")
def heads_mix_value_vectors_by_their_pattern(case):
    """z[t, h] = Σ_s pattern[h, t, s] · v[s, kv(h)] (site ``v``; refused where the value projection is fused)."""
    h = handle(case)
    batch = equal_batch(h)
    if not has_values(h, 0):
        with pytest.raises(UserError, match="fuses its value projection") as refused:
            h.record(batch, [Site("v", 0)])
        return str(refused.value)
    for layer in range(h.n_layers):
        seen = h.record(batch, [Site(kind, layer) for kind in ("v", "pattern", "z")])
        v = seen[Site("v", layer)]  # [b, p, kv, head_dim]
        per_kv = h.n_heads // v.shape[2]
        mixed = torch.einsum("bhts,bshk->bthk", seen[Site("pattern", layer)].float(),
                             v.float().repeat_interleave(per_kv, dim=2))
        close(mixed, seen[Site("z", layer)], what=f"layer {layer}")


if hasattr(ModelHandle, "tail_variants"):
    @check("tail_variants")
    def tail_variants_equal_whole_passes(case):
        """Edits at the last positions, the prefix run once and cached: the whole passes' output."""
        h = handle(case)
        batch = h.encode(PROMPTS)
        width = batch.input_ids.shape[1]
        add = 3.0 * torch.randn(h.d_model, generator=torch.Generator().manual_seed(8))
        for tail in (1, 2):
            edits = [Edit(Site("resid_pre", LAYER), "add", add, rows=(2, 3), positions=(width - 1,)),
                     Edit(Site("z", LAYER), "zero", rows=(4, 5), positions=(width - tail,), units=(1,))]
            got = h.tail_variants(batch, 3, edits, tail=tail)
            close(got, h.run_with_edits(tiled(batch, 3), edits).final[:, -1], 1e-5, what=f"tail {tail}")
            assert (got[2:4] - got[:2]).abs().max() > 1e-3, "the edit changed nothing"


# -- components -----------------------------------------------------------------------------------------------


@check("record_run", "run_variants", "resume", "forward_with", "capture")
def component_interventions_agree(case):
    """Clean values change nothing (exactly); an ablation gives the same output resumed, batched, in a plain pass
    and as an edit; ``capture`` holds what ``record`` reads at z and mlp."""
    h = handle(case)
    batch = equal_batch(h)
    run = h.record_run(batch)
    plain = h.run_with_edits(batch, []).final[:, -1]
    assert torch.equal(run.final, plain), "record_run's final"
    acts = h.capture(batch)
    assert torch.equal(acts.heads, run.activations.heads) and torch.equal(acts.mlps, run.activations.mlps)
    seen = h.record(batch, [Site(kind, layer) for layer in range(h.n_layers) for kind in ("z", "mlp")])
    for layer in range(h.n_layers):
        assert torch.equal(acts.heads[layer], seen[Site("z", layer)]), f"capture heads {layer} vs z"
        assert torch.equal(acts.mlps[layer], seen[Site("mlp", layer)]), f"capture MLP {layer} vs mlp"
    every = iv.heads(h) + iv.mlps(h)
    assert torch.equal(h.forward_with(batch, run.activations, every), run.final), "forward_with clean values"
    # One variant a pass (the clean pass's shapes): bit-identical. Many a pass: as close as batching allows (a
    # mixture of experts multiplies each expert's tokens together, so more tokens round differently).
    some = [[every[0]], [every[-1]], every]
    one_each = h.run_variants(run, run.activations, some, max_tokens=batch.input_ids.numel())
    assert torch.equal(one_each, run.final.expand_as(one_each)), "run_variants with clean values"
    variants = h.run_variants(run, run.activations, [[c] for c in every] + [every])
    close(variants, run.final.expand_as(variants), 1e-6, what="run_variants with clean values, batched")
    assert torch.equal(h.resume(run, LAYER, 1, []), run.final), "resume without edits"
    close(h.resume(run, LAYER, 2, []), run.final.repeat(2, 1), 1e-6, what="resume, 2 copies")
    zeros = run.activations.zeros()
    for ablated in ([iv.Component(LAYER, 0)], [iv.Component(LAYER)]):
        direct = h.forward_with(batch, zeros, ablated)
        assert (direct - run.final).abs().max() > 1e-3, f"ablating {ablated[0].label} changed nothing"
        close(h.run_variants(run, zeros, [ablated])[0], direct, 1e-5, what="run_variants vs forward_with")
        c = ablated[0]
        edit = Edit(Site("z", c.layer), "zero", units=(c.head,)) if not c.is_mlp else Edit(Site("mlp", c.layer), "zero")
        close(h.run_with_edits(batch, [edit]).final[:, -1], direct, 1e-5, what="zero edit vs forward_with")
        close(h.resume(run, c.layer, 1, [edit]), direct, 1e-5, what="resume with the edit")


@check("ablation_sweep")
def ablation_sweep_is_the_logit_difference_of_each_ablation(case):
    h = handle(case)
    clean, corrupt = equal_batch(h, seed=0), equal_batch(h, n=3, seed=1)
    answers = torch.tensor([ANSWERS] * 2)
    variants = [[iv.Component(0, 0)], [iv.Component(LAYER)], [iv.Component(2, 1), iv.Component(2)]]
    for ablation in ("mean", "resample"):
        sweep = h.ablation_sweep(clean, corrupt, answers, variants, ablation, seed=3)
        logits = h.logits(clean)[:, -1]
        close(sweep.full, float((logits[:, ANSWERS[0]] - logits[:, ANSWERS[1]]).mean()), what="full")
        values = iv.replacement(ablation, h.capture(corrupt), 2, seed=3)
        for i, components in enumerate(variants):
            final = h.forward_with(clean, values, components)
            with torch.inference_mode():
                diff = h.token_logits(final, answers)
            close(sweep.ablated[i], float((diff[:, 0] - diff[:, 1]).mean()), what=f"{ablation} variant {i}")


@check("attention_pattern")
def attention_patterns_are_the_recorded_ones(case):
    h = handle(case)
    batch = h.encode(PROMPTS)
    mask = real(batch)
    seen = h.record(batch, [Site("pattern", layer) for layer in range(h.n_layers)])
    for layer in range(h.n_layers):
        pattern = h.attention_pattern(batch, layer)
        close(pattern, seen[Site("pattern", layer)].float().cpu(), 1e-6, what=f"layer {layer}")
        rows = pattern.sum(-1).permute(0, 2, 1)[mask]
        close(rows, torch.ones_like(rows), 1e-5, what=f"layer {layer} rows")


@check("after_first_mlp")
def after_first_mlp_is_block_0_without_its_heads(case):
    h = handle(case)
    ids = [5, 9, 40]
    ref = h.record(lone_tokens(ids), [Site("resid_post", 0)], edits=[Edit(Site("z", 0), "zero")])
    close(h.after_first_mlp(ids), ref[Site("resid_post", 0)][:, 0], 1e-5)


@check("generate")
def generation_with_and_without_the_cache_agree(case):
    h = handle(case)
    batch = h.encode(PROMPTS)
    plain = h.generate(batch, 3, kv_cache=False)
    cache = hasattr(h.model, "generate") and h.adapter.hugging_face
    if cache:
        assert h.generate(batch, 3, kv_cache=True) == plain, "KV cache vs one pass per token"
    token = next(t for t in range(4, 100) if t not in plain[0][:1] + plain[1][:1])
    row = h.weights.unembedding()[token].float()
    steer = Edit(Site("resid_post", h.n_layers - 1), "add", 1e3 * row / row.norm())
    steered = h.generate(batch, 3, kv_cache=False, edits=[steer])
    assert steered != plain, "an edit left the generation unchanged"
    if cache:
        assert h.generate(batch, 3, kv_cache=True, edits=[steer]) == steered, "steered: KV cache vs one pass per token"


# -- the nnsight backend --------------------------------------------------------------------------------------


def _same_lens(here, there) -> None:
    for name in ("top_probs", "entropy_bits", "kl_to_final_bits"):
        close(torch.as_tensor(getattr(there, name)), torch.as_tensor(getattr(here, name)), what=name)


@check("nnsight", backend="nnsight")
def nnsight_traces_equal_the_local_backend(case):
    """Through nnsight traces: the residual stream and the lens equal the local backend's; what nnsight does not
    implement is refused in one line naming --backend local."""
    from core.lens import run_lens

    h, there = handle(case), traced(case)
    batch = h.encode(PROMPTS)
    close(there.residuals(batch), h.residuals(batch), what="residuals")
    _same_lens(run_lens(h, PROMPTS, positions="all", top_k=5), run_lens(there, PROMPTS, positions="all", top_k=5))
    with pytest.raises(UserError, match="--backend local") as refused:
        there.record(batch, [Site("resid_post", 0)])
    assert "\n" not in str(refused.value)


@check("nnsight", backend="nnsight")
def ndif_reductions_equal_the_local_backend(case):
    """Serialized as for NDIF, reductions only: the reduced lens and the ablation sweep equal the local backend's;
    residual streams are refused in one line naming the backends that have them."""
    from core.lens import run_lens

    h, remote = handle(case), traced(case, ndif=True)
    if h.adapter.family == "tinylm":  # NDIF hosts Hugging Face models only: refused in one line
        with pytest.raises(UserError, match="Hugging Face models only") as refused:
            run_lens(remote, PROMPTS, top_k=5)
        return str(refused.value)
    _same_lens(run_lens(h, PROMPTS, top_k=5), run_lens(remote, PROMPTS, top_k=5))
    clean, corrupt = equal_batch(h, seed=0), equal_batch(h, n=3, seed=1)
    answers = torch.tensor([ANSWERS] * 2)
    variants = [[iv.Component(0, 0)], [iv.Component(2, 1), iv.Component(LAYER)]]
    here = h.ablation_sweep(clean, corrupt, answers, variants, "mean")
    there = remote.ablation_sweep(clean, corrupt, answers, variants, "mean")
    close(there.full, here.full, what="full")
    close(torch.as_tensor(there.ablated), torch.as_tensor(here.ablated), what="ablated")
    with pytest.raises(UserError, match="local or nnsight") as refused:
        remote.residuals(h.encode(PROMPTS))
    assert "\n" not in str(refused.value)


# Every operation the checks verify, in the door's order, then the weight views and the nnsight backend.
def verified_operations() -> tuple[str, ...]:
    from core.models.handle import OPERATIONS

    named = {op for c in CHECKS.values() for op in c.operations}
    extras = ("record.v", "weights", "weights.ov", "weights.neuron_in", "nnsight")
    return tuple(op for op in OPERATIONS if op in named) + tuple(op for op in extras if op in named)
