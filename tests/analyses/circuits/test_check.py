"""Checking a graph by intervention: the handle's edits in the model beside the graph's frozen model."""

from functools import lru_cache

import pytest

from core.analyses.circuits import Settings, run
from core.analyses.circuits.check import CheckSettings, check, run_check
from core.errors import UserError
from tests import tiny
from tests.analyses.circuits.helpers import exact_transcoders, save

PROMPT = "The capital of France is"


@lru_cache(maxsize=None)
def _handle():
    return tiny.handle("gemma3", style="sentencepiece")


def test_patching_from_the_prompt_itself_changes_nothing_anywhere(tmp_path):
    handle = _handle()
    routes = run(handle, Settings(prompt=PROMPT, threshold=0.02))
    pinned = [n.id for n in routes.graph.nodes if n.kind in ("head", "mlp", "residual", "embed")][:8]
    done = check(handle, routes, pinned, corrupt=PROMPT)
    assert done.new_logit_diff == pytest.approx(done.clean_logit_diff, abs=1e-4)
    assert done.predicted_logit_diff == pytest.approx(done.clean_logit_diff, abs=1e-3)
    folder = save(exact_transcoders(handle, PROMPT), tmp_path / "exact")
    graph = run(handle, Settings(prompt=PROMPT, kind="attribution", dictionary=str(folder)))
    pinned = [n.id for n in graph.graph.nodes if n.kind in ("feature", "error", "embed")][:6]
    done = check(handle, graph, pinned, corrupt=PROMPT)
    assert done.new_logit_diff == pytest.approx(done.clean_logit_diff, abs=1e-4)
    assert done.predicted_logit_diff == pytest.approx(done.clean_logit_diff, abs=1e-3)


def test_with_exact_transcoders_the_replacement_model_predicts_an_ablation_at_the_last_layer(tmp_path):
    """Removing the last block's feature at the last position: nothing downstream to recompute, so the replacement
    model and the model differ only by the final norm's scale, frozen in one of them."""
    handle = _handle()
    folder = save(exact_transcoders(handle, PROMPT), tmp_path / "exact")
    graph = run(handle, Settings(prompt=PROMPT, kind="attribution", dictionary=str(folder), node_threshold=1.0,
                                 edge_threshold=1.0))
    last = [n.id for n in graph.graph.nodes if n.kind == "feature" and n.layer == handle.n_layers - 1]
    assert last
    done = check(handle, graph, last[:1])
    assert done.new_logit_diff != pytest.approx(done.clean_logit_diff, abs=1e-3)
    assert done.predicted_logit_diff - done.clean_logit_diff == pytest.approx(
        done.new_logit_diff - done.clean_logit_diff, rel=0.5)


def test_bad_checks_are_one_line():
    handle = _handle()
    routes = run(handle, Settings(prompt=PROMPT))
    head = next(n.id for n in routes.graph.nodes if n.kind == "head")
    with pytest.raises(UserError, match="not a node of this graph"):
        check(handle, routes, ["L99H9@0"])
    with pytest.raises(UserError, match="same token length"):
        check(handle, routes, [head], corrupt="The capital of France is Paris and")
    with pytest.raises(UserError, match="pin at least one node"):
        run_check(handle, CheckSettings(graph=routes.settings, nodes=()))
    logit = next(n.id for n in routes.graph.nodes if n.kind == "logit")
    with pytest.raises(UserError, match="pin at least one node"):
        check(handle, routes, [logit])
