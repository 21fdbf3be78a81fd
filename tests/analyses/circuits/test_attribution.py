"""Attribution graphs through transcoders on tiny random models: the frozen replacement model is the model at the clean
run, every edge is a finite difference in it, exact transcoders leave nothing to the error nodes, the scores are
circuit-tracer's, and bad transcoders are refused in one line."""

import random
from dataclasses import replace
from functools import lru_cache

import pytest
import torch

from core.analyses.circuits import Settings, run
from core.analyses.circuits import attribution as at
from core.analyses.circuits.graph import graph_scores
from core.analyses.circuits.transcoders import load_transcoders
from core.errors import UserError
from core.tokens import single_token
from tests import tiny
from tests.analyses.circuits.helpers import exact_transcoders, random_transcoders, save

PROMPT = "The capital of France is Paris"
CASES = [("llama", "llama"), ("gemma3", "sentencepiece")]


@lru_cache(maxsize=None)
def _handle(family, style):
    return tiny.handle(family, style=style)


def _nodes(handle, frozen, transcoders, skip_first=True):
    features, activations, errors = at.transcode(frozen, transcoders, skip_first)
    ids, weights, probs, vectors = at.logit_targets(handle, frozen, None)
    return at.Nodes(features, activations, errors, ids, weights, probs, vectors)


def _targets(frozen, transcoders, nodes):
    """Every feature's pre-activation and every logit (demeaned) read off the frozen replacement model."""
    R = at.replacement_residuals(frozen, transcoders, nodes)
    out = []
    for layer, t, i in nodes.features.tolist():
        M = R[layer] + at.attention(frozen, layer, R[layer])
        out.append(float((M[t] * frozen.mlp_pre[layer, t]) @ transcoders.layers[layer].W_enc[:, i]))
    out += [float((R[-1, -1] * frozen.final[-1]) @ v) for v in nodes.logit_vectors]
    return torch.tensor(out)


@pytest.mark.parametrize("family,style", CASES)
@pytest.mark.parametrize("skip", [False, True])
def test_direct_effects_are_finite_differences_of_the_frozen_replacement_model(family, style, skip):
    handle = _handle(family, style)
    frozen = at.freeze(handle, handle.encode([PROMPT]))
    transcoders = random_transcoders(handle, skip=skip)
    nodes = _nodes(handle, frozen, transcoders)
    # The frozen model run forward from the clean nodes is the model itself (errors hold what transcoders miss).
    residuals = at.replacement_residuals(frozen, transcoders, nodes)
    assert torch.allclose(residuals, frozen.residuals, atol=1e-4 * float(frozen.residuals.abs().max()))
    A = at.adjacency(frozen, transcoders, nodes)
    L, _, T = frozen.shape
    n_f, n_e, n_t, n_l = nodes.sizes(T)
    rows = list(range(n_f)) + list(range(n_f + n_e + n_t, A.shape[0]))
    base = _targets(frozen, transcoders, nodes)
    scale = float(A.abs().max())
    rng = random.Random(0)
    for j in rng.sample(range(n_f), 6):  # a feature switched off moves each target by exactly its edge
        activations = nodes.activations.clone()
        activations[j] = 0
        moved = base - _targets(frozen, transcoders, replace(nodes, activations=activations))
        assert torch.allclose(moved, A[rows, j], atol=1e-5 * scale)
    for layer, t in ((0, 2), (L - 1, T - 1), (1, 0)):  # so does an error node
        errors = nodes.errors.clone()
        errors[layer, t] = 0
        moved = base - _targets(frozen, transcoders, replace(nodes, errors=errors))
        assert torch.allclose(moved, A[rows, n_f + layer * T + t],
                              atol=1e-5 * scale)
    assert torch.all(A[:, n_f + n_e + n_t:] == 0)  # logits are never sources
    assert torch.all(A[n_f:n_f + n_e + n_t] == 0)  # errors and tokens have no inputs
    later = nodes.features[:, 1][:, None] < nodes.features[:, 1][None, :]  # target before source: no edge
    assert torch.all(A[:n_f, :n_f][later] == 0)


@pytest.mark.parametrize("family,style", CASES)
def test_token_edges_are_what_the_embeddings_add(family, style):
    """Scaling every embedding by 1 + ε moves each target by ε times the sum of its token edges (linearity)."""
    handle = _handle(family, style)
    frozen = at.freeze(handle, handle.encode([PROMPT]))
    transcoders = random_transcoders(handle, seed=3)
    nodes = _nodes(handle, frozen, transcoders)
    A = at.adjacency(frozen, transcoders, nodes)
    L, _, T = frozen.shape
    n_f, n_e, n_t, _ = nodes.sizes(T)
    base = _targets(frozen, transcoders, nodes)
    moved = _targets(replace(frozen, embeddings=frozen.embeddings * 1.5), transcoders, nodes) - base
    rows = list(range(n_f)) + list(range(n_f + n_e + n_t, A.shape[0]))
    assert torch.allclose(moved, 0.5 * A[rows, n_f + n_e:n_f + n_e + n_t].sum(1), atol=1e-4 * float(A.abs().max()))


def test_exact_transcoders_leave_the_errors_empty_and_the_graph_complete(tmp_path):
    handle = _handle("gemma3", "sentencepiece")  # no BOS: no position is left out
    folder = save(exact_transcoders(handle, PROMPT), tmp_path / "exact")
    result = run(handle, Settings(prompt=PROMPT, kind="attribution", dictionary=str(folder)))
    frozen = at.freeze(handle, handle.encode([PROMPT]))
    _, _, errors = at.transcode(frozen, load_transcoders(folder, handle), skip_first=False)
    assert float(errors.abs().max()) < 1e-3 * float(frozen.mlp_out.abs().max())
    scores = result.graph.scores
    assert scores.completeness == pytest.approx(1.0, abs=1e-3)
    assert scores.replacement == pytest.approx(1.0, abs=1e-3)
    random_folder = save(random_transcoders(handle), tmp_path / "random")
    rough = run(handle, Settings(prompt=PROMPT, kind="attribution", dictionary=str(random_folder))).graph.scores
    assert rough.completeness < 0.99 and rough.replacement < 0.99


def test_attribution_graph_contract_and_pruning(tmp_path):
    handle = _handle("llama", "llama")
    folder = save(random_transcoders(handle), tmp_path / "tc")
    loose = run(handle, Settings(prompt=PROMPT, kind="attribution", dictionary=str(folder), node_threshold=1.0,
                                 edge_threshold=1.0))
    graph = loose.graph
    kinds = {n.kind for n in graph.nodes}
    assert {"embed", "feature", "error", "logit"} <= kinds <= {"embed", "feature", "error", "logit"}
    assert not any(n.kind == "feature" and n.position == 0 for n in graph.nodes)  # BOS: features left out
    logits = [n for n in graph.nodes if n.kind == "logit"]
    assert sum(n.influence for n in logits) == pytest.approx(1.0)
    assert sum(n.probability for n in logits) >= 0.95 or len(logits) == 10
    strict = run(handle, Settings(prompt=PROMPT, kind="attribution", dictionary=str(folder), node_threshold=0.5,
                                  edge_threshold=0.8)).graph
    assert len(strict.nodes) < len(graph.nodes) and len(strict.edges) < len(graph.edges)
    assert strict.scores == graph.scores  # scores judge the unpruned graph
    ids = {n.id for n in strict.nodes}
    assert all(e.source in ids and e.target in ids for e in strict.edges)
    named = run(handle, Settings(prompt=PROMPT, kind="attribution", dictionary=str(folder), target=" capital")).graph
    wanted = single_token(handle.tokenizer, " capital")
    assert named.target_id == wanted and [n.token_id for n in named.nodes if n.kind == "logit"] == [wanted]
    assert named.to_json()["scores"].keys() == {"replacement", "completeness"}


def test_scores_are_circuit_tracers_on_a_graph_worked_by_hand():
    # nodes: feature f, error e, token x, logit l; l <- f (2), l <- e (1), f <- x (3), f <- e (1)
    A = torch.tensor([[0, 1, 3, 0], [0, 0, 0, 0], [0, 0, 0, 0], [2, 1, 0, 0]], dtype=torch.float32)
    scores = graph_scores(A, torch.tensor([0, 0, 0, 1.0]), errors=slice(1, 2), tokens=slice(2, 3))
    # influence: f 2/3, e 1/3 + 2/3·1/4 = 1/2, x 2/3·3/4 = 1/2
    assert scores.replacement == pytest.approx(0.5)
    assert scores.completeness == pytest.approx((3 / 4 * 2 / 3 + 1 / 2 + 1 / 2 + 2 / 3) / (2 / 3 + 1 / 2 + 1 / 2 + 1))


def test_transcoders_for_another_model_or_missing_layers_are_refused_in_one_line(tmp_path):
    handle = _handle("llama", "llama")
    cases = {
        "missing": (save(random_transcoders(handle), tmp_path / "missing", drop=1), "no transcoder for block 1"),
        "width": (save(random_transcoders(handle, d_model=32), tmp_path / "width"), "d_model 32"),
    }
    other = random_transcoders(handle)
    for d in other.layers:
        d.model = "gemma-3-270m"
    cases["model"] = (save(other, tmp_path / "model"), "trained on 'gemma-3-270m'")
    for folder, message in cases.values():
        with pytest.raises(UserError, match=message) as err:
            run(handle, Settings(prompt=PROMPT, kind="attribution", dictionary=str(folder)))
        assert "\n" not in str(err.value)
    fine = save(random_transcoders(handle), tmp_path / "fine")
    with pytest.raises(UserError, match="attribution graphs here take at most 32"):
        run(handle, Settings(prompt="1 " * 40, kind="attribution", dictionary=str(fine)))
