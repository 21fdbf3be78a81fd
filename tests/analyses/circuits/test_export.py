"""Export to circuit-tracer's graph JSON: both graph kinds validate against its schema and survive a round trip.

circuit-tracer 0.5.0 pins transformers <= 4.57.3 (this project: 5.23), so it is not installed here; its pydantic
models (``circuit_tracer.frontend.graph_models``) are written out below, field by field, from its 0.5.0 wheel. Where
circuit-tracer is importable (another environment), the same files are validated by its own models too.
"""

import importlib.util
import json

import pytest

from core.analyses.circuits import Settings, run
from core.analyses.circuits.command import write_json
from tests import tiny
from tests.analyses.circuits.helpers import random_transcoders, save

PROMPT = "The capital of France is Paris"

# circuit_tracer.frontend.graph_models (0.5.0): field -> (types allowed, required)
METADATA = {"slug": (str, True), "scan": (str, True), "transcoder_list": (list, True), "prompt_tokens": (list, True),
            "prompt": (str, True), "node_threshold": ((float, int, type(None)), False),
            "schema_version": ((int, type(None)), False)}
QPARAMS = {"pinnedIds": (list, True), "supernodes": (list, True), "linkType": (str, True), "clickedId": (str, True),
           "sg_pos": (str, True)}
NODE = {"node_id": (str, True), "feature": (int, True), "layer": (str, True), "ctx_idx": (int, True),
        "feature_type": (str, True), "token_prob": ((float, int), False), "is_target_logit": (bool, False),
        "run_idx": (int, False), "reverse_ctx_idx": (int, False), "jsNodeId": (str, True), "clerp": (str, False),
        "influence": ((float, int, type(None)), False), "activation": ((float, int, type(None)), False)}
LINK = {"source": (str, True), "target": (str, True), "weight": ((float, int), True)}


def _check(obj: dict, schema: dict, where: str) -> None:
    for name, (types, required) in schema.items():
        if name not in obj:
            assert not required, f"{where}: no {name}"
            continue
        assert isinstance(obj[name], types) and not (types is int and isinstance(obj[name], bool)), \
            f"{where}.{name} = {obj[name]!r}"


def validate(data: dict) -> None:
    assert set(data) >= {"metadata", "qParams", "nodes", "links"}
    _check(data["metadata"], METADATA, "metadata")
    assert all(isinstance(t, str) for t in data["metadata"]["prompt_tokens"])
    _check(data["qParams"], QPARAMS, "qParams")
    for node in data["nodes"]:
        _check(node, NODE, node.get("node_id", "node"))
    for link in data["links"]:
        _check(link, LINK, "link")
    ids = [n["node_id"] for n in data["nodes"]]
    assert len(ids) == len(set(ids)) and len({n["jsNodeId"] for n in data["nodes"]}) == len(ids)
    assert all(link["source"] in ids and link["target"] in ids for link in data["links"])
    if importlib.util.find_spec("circuit_tracer") is not None:  # circuit-tracer's own models, where installed
        from circuit_tracer.frontend.graph_models import Model

        Model(**data)


@pytest.fixture(scope="module")
def handle():
    return tiny.handle("gemma3", style="sentencepiece")


def test_routes_graph_exports_to_circuit_tracers_schema(handle, tmp_path):
    graph = run(handle, Settings(prompt=PROMPT, lens_top_k=0)).graph
    path = tmp_path / "routes.json"
    write_json(path, graph.to_circuit_tracer(slug="routes"))
    data = json.loads(path.read_text(encoding="utf-8"))
    validate(data)
    types = {n["feature_type"] for n in data["nodes"]}
    assert {"attention head", "embedding", "logit"} <= types <= {"attention head", "mlp", "embedding", "residual", "logit"}
    assert data["metadata"]["prompt_tokens"] == graph.tokens and data["metadata"]["node_threshold"] == 0.04
    assert len(data["nodes"]) == len(graph.nodes) and len(data["links"]) == len(graph.edges)
    weights = sorted(e.weight for e in graph.edges)
    assert sorted(link["weight"] for link in data["links"]) == weights  # the round trip keeps every edge
    targets = [n for n in data["nodes"] if n["is_target_logit"]]
    assert len(targets) == 1 and targets[0]["layer"] == str(handle.n_layers + 1)
    assert [n for n in data["nodes"] if n["feature_type"] == "embedding"][0]["layer"] == "E"


def test_attribution_graph_exports_to_circuit_tracers_schema(handle, tmp_path):
    folder = save(random_transcoders(handle), tmp_path / "tc")
    graph = run(handle, Settings(prompt=PROMPT, kind="attribution", dictionary=str(folder))).graph
    data = graph.to_circuit_tracer()
    validate(json.loads(json.dumps(data)))
    types = {n["feature_type"] for n in data["nodes"]}
    assert {"cross layer transcoder", "mlp reconstruction error", "embedding", "logit"} >= types
    assert "cross layer transcoder" in types and "logit" in types
    features = [n for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert all(n["node_id"] == f"{n['layer']}_{int(n['node_id'].split('_')[1])}_{n['ctx_idx']}" for n in features)
    cumulative = sorted(n["influence"] for n in data["nodes"])
    assert cumulative[-1] == pytest.approx(1.0) and all(0 < c <= 1 + 1e-9 for c in cumulative)
    assert data["metadata"]["slug"] == "the-capital-of-france-is-paris" and data["metadata"]["scan"] == "tc"


def test_results_and_checks_are_kept_by_the_result_store_codec(handle, tmp_path):
    from core.analyses.circuits.check import CheckSettings, run_check
    from core.results import codec

    result = run(handle, Settings(prompt=PROMPT))
    again = codec.loads(codec.dumps(result))
    assert again.to_json() == result.to_json() and again.details == result.details and again.settings == result.settings
    heads = tuple(n.id for n in result.graph.nodes if n.kind == "head")[:2]
    done = run_check(handle, CheckSettings(graph=result.settings, nodes=heads), result=result)
    assert codec.loads(codec.dumps(done)).to_json() == done.to_json()
