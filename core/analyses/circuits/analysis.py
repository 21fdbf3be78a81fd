"""The graph from a prompt to its prediction: ``Settings`` → ``run`` → ``Result`` (the page and ``python -m core circuit``).

``kind`` "routes": information-flow routes (``routes``), no dictionary; "attribution": an attribution graph through
per-layer transcoders (``attribution``), with circuit-tracer's replacement and completeness scores. The target is
the model's prediction at the last position, or a token the user names.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import pandas as pd
import torch

from core.analyses.base import Settings as BaseSettings
from core.analyses.circuits import attribution as at
from core.analyses.circuits import routes as rt
from core.analyses.circuits.graph import Edge, Graph, Node, graph_scores
from core.analyses.circuits.transcoders import Transcoders, available, load_transcoders
from core.errors import UserError
from core.models.handle import ModelHandle
from core.progress import Progress, part, quiet
from core.tokens import single_token, token_str, visible

VERSION = "1"  # the store's analysis version: raise it when a change of code changes the numbers

KINDS = ("routes", "attribution")
MAX_TOKENS = {"routes": 128, "attribution": 32}  # the attribution adjacency grows with the square of the tokens
LENS_ROWS = 16  # residual nodes of a routes graph that get the lens's top tokens (the most influential)
FEATURE_LABELS = 64  # features of an attribution graph labelled with the tokens they promote (the most influential)


@dataclass(frozen=True)
class Settings(BaseSettings):
    """``target``: one token (" Paris", or an id as #1234), None for the model's prediction; ``dictionary``: the folder
    of per-layer transcoders (attribution; None: this model's own, when trained); ``threshold``: the routes'
    contribution threshold; ``node_threshold`` / ``edge_threshold``: the attribution graph's cumulative-influence
    thresholds; ``lens_top_k``: the lens's top tokens shown at the most influential kept residuals (``LENS_ROWS``)
    and the tokens each kept feature promotes."""

    prompt: str = "The Eiffel Tower is in the city of"
    kind: str = "routes"
    target: str | None = None
    dictionary: str | None = None
    threshold: float = 0.04
    node_threshold: float = 0.8
    edge_threshold: float = 0.98
    lens_top_k: int = 3

    def validate(self) -> None:
        if not self.prompt.strip():
            raise UserError("the prompt is empty: type some text to look at")
        if self.kind not in KINDS:
            raise UserError(f"unknown graph kind '{self.kind}': choose routes or attribution")
        for name in ("threshold", "node_threshold", "edge_threshold"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise UserError(f"the {name.replace('_', ' ')} must be in (0, 1], not {value}")
        if self.target is not None and not self.target:
            raise UserError("the target token is empty: give one token, or leave it out for the prediction")
        if not 0 <= self.lens_top_k <= 20:
            raise UserError(f"lens top-k must be 0..20, not {self.lens_top_k}")


@dataclass
class Result:
    """The pruned graph and what the page shows on hover: ``details[node id]`` holds ``lens`` ([[token, prob], …],
    residuals), ``attention`` (a head's weights over the positions it reads) or ``promoted`` (a feature's tokens)."""

    settings: Settings
    graph: Graph
    details: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict:
        """The ``python -m core circuit`` contract (the graph's own JSON)."""
        return self.graph.to_json()

    def frames(self) -> dict[str, pd.DataFrame]:
        """``nodes``: id, kind, layer, position, head, feature, influence, activation, label; ``edges``: source,
        target, weight."""
        nodes = pd.DataFrame([(n.id, n.kind, n.layer, n.position, n.head, n.feature, n.influence, n.activation, n.label)
                              for n in self.graph.nodes],
                             columns=["id", "kind", "layer", "position", "head", "feature", "influence", "activation",
                                      "label"]).astype({"head": "Int64", "feature": "Int64"})
        edges = pd.DataFrame([(e.source, e.target, e.weight) for e in self.graph.edges],
                             columns=["source", "target", "weight"])
        return {"nodes": nodes, "edges": edges}


def _encode(handle: ModelHandle, settings: Settings):
    batch = handle.encode([settings.prompt])
    cap = MAX_TOKENS[settings.kind]
    if batch.lengths[0] > cap:
        raise UserError(f"the prompt is {batch.lengths[0]} tokens; {settings.kind} graphs here take at most {cap}: "
                        "shorten it")
    ids = batch.input_ids[0].tolist()
    return batch, ids, [token_str(handle.tokenizer, i) for i in ids]


def _target(handle: ModelHandle, settings: Settings) -> int | None:
    if settings.target is None:
        return None
    return single_token(handle.tokenizer, settings.target, handle.vocab_size, what="target")


def _lens(handle: ModelHandle, residuals: torch.Tensor, k: int) -> list[list]:
    """The logit lens's top-k [token, prob] of each residual [n, d] (a few rows at a time: a row is a vocabulary)."""
    out = []
    for start in range(0, len(residuals), 16):
        probs = torch.softmax(handle.decode(residuals[start:start + 16]).float(), -1)
        top = probs.topk(k)
        out += [[[token_str(handle.tokenizer, int(i)), round(float(p), 4)] for p, i in zip(vals, ids)]
                for vals, ids in zip(top.values, top.indices)]
    return out


def run(handle: ModelHandle, settings: Settings, progress: Progress | None = None) -> Result:
    settings.validate()
    progress = progress or quiet
    started = time.perf_counter()
    target_id = _target(handle, settings)
    if settings.kind == "attribution":  # bad transcoders fail before the model runs
        transcoders = transcoders_for(handle, settings)
        rt.check_supported(handle, "the attribution graph")
    batch, ids, tokens = _encode(handle, settings)
    if settings.kind == "routes":
        graph, details = _routes(handle, settings, batch, ids, tokens, target_id, progress)
    else:
        graph, details = _attribution(handle, settings, transcoders, batch, ids, tokens, target_id, progress)
    progress(1.0, f"{len(graph.nodes)} nodes, {len(graph.edges)} edges")
    return Result(settings, graph, details, time.perf_counter() - started)


def transcoders_for(handle: ModelHandle, settings: Settings) -> Transcoders:
    """The transcoders ``settings`` name (``dictionary``), or this model's own; one line when there are none."""
    folder = settings.dictionary or available(handle)
    if folder is None:
        raise UserError(f"no transcoders for {handle.spec}: give a folder of per-layer transcoders (--dict), or train "
                        "this model's own (python bench/circuits.py --train)")
    return load_transcoders(folder, handle)


def _routes(handle, settings, batch, ids, tokens, target_id, progress):
    progress(0.0, "one forward pass")
    c = rt.contributions(handle, batch)
    final = c.residuals[-1, -1:]
    logits = handle.decode(final)[0].float()
    predicted = int(logits.argmax())
    target_id = predicted if target_id is None else target_id
    prob = float(torch.softmax(logits, -1)[target_id])
    progress(0.6, "routes")
    position = len(ids) - 1
    nodes, edges, _ = rt.routes(c.thresholded(settings.threshold), position, tokens, ids)
    target = token_str(handle.tokenizer, target_id)
    logit = Node(f"logit@{target_id}", "logit", handle.n_layers, position, influence=1.0, label=target,
                 probability=prob, token_id=target_id)
    nodes.append(logit)
    edges.append(Edge(rt.node_id("residual", handle.n_layers, position), logit.id, 1.0))
    details: dict[str, dict] = {}
    patterns = c.patterns.numpy()
    for n in nodes:
        if n.kind == "head":
            details[n.id] = {"attention": [round(float(a), 4) for a in patterns[n.layer, n.head, n.position, : n.position + 1]]}
    # The lens at the most influential residuals only: each costs a row of the unembedding (a vocabulary of logits).
    residual = sorted((n for n in nodes if n.kind in ("residual", "embed")), key=lambda n: -n.influence)[:LENS_ROWS]
    if settings.lens_top_k and residual:
        progress(0.8, "the lens at the kept residuals")
        rows = torch.stack([c.residuals[n.layer, n.position] for n in residual])
        for n, top in zip(residual, _lens(handle, rows, settings.lens_top_k)):
            details[n.id] = {"lens": top}
    graph = Graph("routes", handle.spec, settings.prompt, tokens, ids, target, target_id, handle.n_layers, nodes, edges,
                  None, settings.threshold, info={"predicted": token_str(handle.tokenizer, predicted)})
    return graph, details


def _attribution(handle, settings, transcoders, batch, ids, tokens, target_id, progress):
    progress(0.0, "one forward pass, every norm frozen")
    frozen = at.freeze(handle, batch)
    bos = handle.tokenizer.bos_token_id
    features, activations, errors = at.transcode(frozen, transcoders, skip_first=bos is not None and ids[0] == bos)
    logit_ids, weights, probs, vectors = at.logit_targets(handle, frozen, target_id)
    nodes = at.Nodes(features, activations, errors, logit_ids, weights, probs, vectors)
    L, _, T = frozen.shape
    n_f, n_e, n_t, n_l = nodes.sizes(T)
    progress(0.05, f"direct effects between {n_f + n_e + n_t + n_l:,} nodes")
    A = at.adjacency(frozen, transcoders, nodes, part(progress, 0.05, 0.85))
    logit_weights = torch.zeros(A.shape[0])
    logit_weights[-n_l:] = weights
    scores = graph_scores(A, logit_weights, slice(n_f, n_f + n_e), slice(n_f + n_e, n_f + n_e + n_t))
    progress(0.85, "pruning by influence")
    pruned = at.prune(A, weights, n_f, n_t, n_l, settings.node_threshold, settings.edge_threshold)
    kept = torch.nonzero(pruned.node_mask).flatten().tolist()
    made = [_attribution_node(handle, i, nodes, tokens, ids, pruned.influence, weights, L, T) for i in kept]
    index = {i: n.id for i, n in zip(kept, made)}
    targets, sources = torch.nonzero(pruned.edge_mask, as_tuple=True)
    edges = [Edge(index[s], index[t], w) for t, s, w in zip(targets.tolist(), sources.tolist(), A[targets, sources].tolist())
             if s in index and t in index]
    details = _feature_details(handle, transcoders, made, settings.lens_top_k)
    made = [replace(n, label=f"{n.label}: {' '.join(visible(t) for t in details[n.id]['promoted'])}")
            if n.id in details else n for n in made]
    target = token_str(handle.tokenizer, int(logit_ids[0]))
    graph = Graph("attribution", handle.spec, settings.prompt, tokens, ids, target, int(logit_ids[0]), L, made, edges,
                  scores, settings.node_threshold, settings.edge_threshold, scan=transcoders.scan,
                  info={"nodes_before_pruning": A.shape[0], "features_active": n_f,
                        "transcoder_folders": transcoders.folders})
    return graph, details


def _attribution_node(handle, i, nodes: at.Nodes, tokens, ids, influence, weights, L, T) -> Node:
    n_f, n_e, n_t, _ = nodes.sizes(T)
    share = float(influence[i])
    if i < n_f:
        layer, position, feature = nodes.features[i].tolist()
        return Node(f"F{layer}.{feature}@{position}", "feature", layer, position, feature=feature, influence=share,
                    activation=float(nodes.activations[i]), label=f"F{layer}.{feature}")
    if i < n_f + n_e:
        layer, position = divmod(i - n_f, T)
        return Node(f"err{layer}@{position}", "error", layer, position, influence=share,
                    activation=float(nodes.errors[layer, position].norm()), label=f"error MLP{layer}")
    if i < n_f + n_e + n_t:
        position = i - n_f - n_e
        return Node(f"E@{position}", "embed", 0, position, influence=share, label=tokens[position], token_id=ids[position])
    k = i - n_f - n_e - n_t
    token_id = int(nodes.logit_ids[k])
    return Node(f"logit@{token_id}", "logit", L, T - 1, influence=float(weights[k] / weights.sum()),
                label=token_str(handle.tokenizer, token_id), probability=float(nodes.logit_probs[k]), token_id=token_id)


def _feature_details(handle, transcoders: Transcoders, nodes: list[Node], k: int) -> dict[str, dict]:
    """The most influential kept features' promoted tokens: each decoder row through the final norm's γ and the
    unembedding (a row of the vocabulary's logits each)."""
    features = sorted((n for n in nodes if n.kind == "feature"), key=lambda n: -n.influence)[:FEATURE_LABELS]
    if not features or not k:
        return {}
    rows = torch.stack([transcoders.layers[n.layer].W_dec[n.feature].cpu() for n in features])
    rows = rows * handle.weights.final_norm_gamma().float().cpu()
    unembedding = handle.weights.unembedding().float()
    details = {}
    for start in range(0, len(rows), 64):
        top = (rows[start:start + 64].to(unembedding.device) @ unembedding.T).topk(k)
        for n, token_ids in zip(features[start:start + 64], top.indices.tolist()):
            details[n.id] = {"promoted": [token_str(handle.tokenizer, t) for t in token_ids]}
    return details
