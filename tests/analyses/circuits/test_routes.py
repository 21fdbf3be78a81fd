"""Routes graphs (Ferrando & Voita) on tiny random models: exact decompositions, normalised weights, conserved influence."""

from collections import defaultdict
from functools import lru_cache

import pytest
import torch

from core.analyses.circuits import Settings, run
from core.analyses.circuits.analysis import LENS_ROWS
from core.analyses.circuits import routes as rt
from core.errors import UserError
from core.models.sites import Site
from tests import tiny

PROMPT = "The capital of France is Paris"
CASES = [("llama", "llama"), ("gemma3", "sentencepiece")]  # no post-norm / Gemma 3's post-attention norm


@lru_cache(maxsize=None)
def _handle(family, style):
    return tiny.handle(family, style=style)


@pytest.mark.parametrize("family,style", CASES)
def test_heads_split_by_source_sum_to_what_each_head_and_the_attention_wrote(family, style):
    handle = _handle(family, style)
    batch = handle.encode([PROMPT])
    sites = [Site(k, i) for i in range(handle.n_layers) for k in ("v", "pattern", "z", "attn_out")]
    seen = handle.record(batch, sites, norms_at=(0, None))
    for layer in range(handle.n_layers):
        post = seen.norms.attn_post[layer]
        parts = rt.attention_parts(seen[Site("v", layer)][0], seen[Site("pattern", layer)][0],
                                   handle.weights.out_proj(layer), None if post is None else post.scale.float())
        assert torch.allclose(parts.sum((0, 2)), seen[Site("attn_out", layer)][0], atol=1e-4)  # every head, source
        z, w_o = seen[Site("z", layer)][0], handle.weights.out_proj(layer)
        for head in range(handle.n_heads):  # one head over its sources: its own output, post-normed where Gemma does
            own = z[:, head] @ w_o[head]
            own = own if post is None else own * post.scale.float()
            assert torch.allclose(parts[head].sum(1), own, atol=1e-4)
        assert torch.all(parts[:, 0, 1:] == 0)  # causal: position 0 reads only itself


@pytest.mark.parametrize("family,style", CASES)
def test_shares_sum_to_one_and_influence_is_conserved_layer_by_layer(family, style):
    handle = _handle(family, style)
    c = rt.contributions(handle, handle.encode([PROMPT]))
    T = c.resid_attn.shape[1]
    assert torch.allclose(c.heads.sum((1, 3)) + c.resid_attn, torch.ones_like(c.resid_attn), atol=1e-5)
    assert torch.allclose(c.mlp + c.resid_mlp, torch.ones_like(c.mlp), atol=1e-5)
    assert torch.all(c.heads.triu(1) == 0)  # no source after the query
    for threshold in (None, 0.04, 0.2, 1.0):
        cut = c if threshold is None else c.thresholded(threshold)
        if threshold is not None:  # every kept part passes the threshold, or is its sum's largest
            kept = torch.cat([cut.heads.permute(0, 2, 1, 3).flatten(2), cut.resid_attn.unsqueeze(-1)], -1)
            raw = torch.cat([c.heads.permute(0, 2, 1, 3).flatten(2), c.resid_attn.unsqueeze(-1)], -1)
            assert torch.all((kept == 0) | (raw >= threshold) | (raw == raw.amax(-1, keepdim=True)))
            assert torch.allclose(kept.sum(-1), torch.ones(kept.shape[:2]), atol=1e-5)
        inf = rt.influence(cut, T - 1)
        assert torch.allclose(inf.residuals.sum(-1), torch.ones(handle.n_layers + 1), atol=1e-5)


@pytest.mark.parametrize("family,style", CASES)
def test_routes_graph_weights_into_a_node_sum_to_one(family, style):
    handle = _handle(family, style)
    result = run(handle, Settings(prompt=PROMPT, threshold=0.02, lens_top_k=2))
    graph = result.graph
    nodes = {n.id: n for n in graph.nodes}
    incoming = defaultdict(float)
    for e in graph.edges:
        assert e.source in nodes and e.target in nodes and 0 < e.weight <= 1 + 1e-6
        incoming[e.target] += e.weight
        source, target = nodes[e.source], nodes[e.target]
        if target.kind == "head":  # a head reads residuals at the positions up to its own, in its own layer
            assert source.kind in ("embed", "residual") and source.layer == target.layer
            assert source.position <= target.position
    assert all(abs(total - 1) < 1e-5 for total in incoming.values())
    kinds = {n.kind for n in graph.nodes}
    assert kinds <= {"embed", "residual", "head", "mlp", "logit"} and {"embed", "residual", "logit"} <= kinds
    assert all(n.id in incoming for n in graph.nodes if n.kind != "embed")  # grown from the target: all reached
    last = len(graph.tokens) - 1
    top = nodes[rt.node_id("residual", handle.n_layers, last)]
    assert top.influence == pytest.approx(1.0)
    assert sum(n.influence for n in graph.nodes if n.kind == "embed") == pytest.approx(1.0, abs=1e-5)
    logits = handle.logits(handle.encode([PROMPT]))[0, -1]
    assert graph.target_id == int(logits.argmax())
    heads = [n for n in graph.nodes if n.kind == "head"]
    assert heads and all(len(result.details[n.id]["attention"]) == n.position + 1 for n in heads)
    residuals = sorted((n for n in graph.nodes if n.kind in ("embed", "residual")), key=lambda n: -n.influence)
    lensed = [n for n in residuals if "lens" in result.details.get(n.id, {})]
    assert lensed == residuals[:LENS_ROWS] and all(len(result.details[n.id]["lens"]) == 2 for n in lensed)
    final = result.details[rt.node_id("residual", handle.n_layers, len(graph.tokens) - 1)]["lens"]
    assert final[0][1] == pytest.approx(float(torch.softmax(logits, -1).max()), abs=1e-3)  # the lens at the top
    out = result.to_json()
    assert set(out) == {"model", "tokens", "target", "kind", "nodes", "edges", "scores"}
    assert out["kind"] == "routes" and out["scores"] is None
    assert set(out["nodes"][0]) == {"id", "kind", "layer", "position", "head", "feature", "influence"}
    assert set(result.frames()) == {"nodes", "edges"}


def test_a_stricter_threshold_keeps_fewer_nodes_and_a_named_target_is_the_logit():
    handle = _handle("gemma3", "sentencepiece")
    loose = run(handle, Settings(prompt=PROMPT, threshold=0.01, lens_top_k=0)).graph
    strict = run(handle, Settings(prompt=PROMPT, threshold=0.3, lens_top_k=0, target=" capital")).graph
    assert len(strict.nodes) < len(loose.nodes)
    assert strict.target == " capital" and [n.label for n in strict.nodes if n.kind == "logit"] == [" capital"]


@pytest.mark.parametrize("settings,message", [
    (dict(threshold=0.0), "threshold must be in (0, 1]"),
    (dict(threshold=1.5), "threshold must be in (0, 1]"),
    (dict(target="qqqzzzq"), "not one"),
    (dict(prompt="1 " * 200), "routes graphs here take at most 128"),
])
def test_bad_input_is_one_line(settings, message):
    handle = _handle("gemma3", "sentencepiece")
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")) as err:
        run(handle, Settings(**{"prompt": PROMPT, **settings}))
    assert "\n" not in str(err.value)


def test_families_without_sequential_prenorm_blocks_are_refused():
    handle = tiny.handle("gpt2", style="gpt2")
    with pytest.raises(UserError, match="supports the Gemma and Llama-like families"):
        run(handle, Settings(prompt=PROMPT))
