"""The graph from a prompt to a prediction, as plain data: typed nodes and edges, the scores that judge it, influence,
and export to circuit-tracer's graph JSON (so it opens in circuit-tracer's local frontend).

Both graphs share this schema. A node's ``layer`` is the lens row for residuals and embeddings (0 = embeddings,
ℓ = after block ℓ), the block (0-based: L12H0 is layer 12) for heads, MLPs, transcoder features and error nodes, and
``n_layers`` for logits. A head's, MLP's, feature's or error node's ``position`` is the position it writes to; a head's
incoming edges come from the positions it reads. An edge's ``weight``: in a routes graph the source's proportional
contribution to what the target is made of (a node's incoming weights sum to 1); in an attribution graph the
source's direct effect on the target's pre-activation (or demeaned logit), signed.

Influence (circuit-tracer's ``compute_influence``): with A the adjacency (rows: targets, columns: sources) made
row-stochastic on |A|, and w the logit nodes' weights (their probabilities; the one target of a routes graph gets 1),
a node's influence is (w·(A + A² + …))_node / Σ w: its share of the way to the output that runs through it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

NODE_KINDS = ("embed", "residual", "head", "mlp", "feature", "error", "logit")
# Our node kinds as circuit-tracer's ``feature_type`` (heads, MLPs and residuals: routes graphs only).
FEATURE_TYPES = {"embed": "embedding", "residual": "residual", "head": "attention head", "mlp": "mlp",
                 "feature": "cross layer transcoder", "error": "mlp reconstruction error", "logit": "logit"}


@dataclass(frozen=True)
class Node:
    """One node (see the module docstring for ``layer`` and ``position``)."""

    id: str
    kind: str  # one of NODE_KINDS
    layer: int
    position: int
    head: int | None = None
    feature: int | None = None
    influence: float = 0.0  # share of the output's total influence running through this node
    activation: float | None = None  # a feature's activation; a head's/MLP's/residual's L2 norm where written
    label: str = ""  # what a reader sees: "L12H0", '" Paris"', a feature's promoted tokens
    probability: float | None = None  # logits: the model's probability of the token
    token_id: int | None = None  # embeddings and logits


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    weight: float


@dataclass(frozen=True)
class Scores:
    """circuit-tracer's scores of an attribution graph (``compute_graph_scores``), on the unpruned graph."""

    replacement: float  # influence of token nodes / (influence of token + error nodes)
    completeness: float  # influence-weighted share of every node's inputs that come from non-error nodes


@dataclass
class Graph:
    """A routes or attribution graph of one prompt, pruned."""

    kind: str  # "routes" | "attribution"
    model: str
    prompt: str
    tokens: list[str]
    token_ids: list[int]
    target: str  # the predicted (or named) token, as text
    target_id: int
    n_layers: int
    nodes: list[Node]
    edges: list[Edge]
    scores: Scores | None = None
    threshold: float = 0.04  # routes: the contribution threshold; attribution: the node-influence threshold
    edge_threshold: float | None = None  # attribution: the cumulative edge-influence threshold
    scan: str = ""  # which transcoders (attribution graphs)
    info: dict = field(default_factory=dict)  # sizes before pruning, timings

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def incoming(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.target == node_id]

    def to_json(self) -> dict:
        """The ``python -m core circuit --json`` contract."""
        return {
            "model": self.model, "tokens": self.tokens, "target": self.target, "kind": self.kind,
            "nodes": [{"id": n.id, "kind": n.kind, "layer": n.layer, "position": n.position, "head": n.head,
                       "feature": n.feature, "influence": n.influence} for n in self.nodes],
            "edges": [{"source": e.source, "target": e.target, "weight": e.weight} for e in self.edges],
            "scores": None if self.scores is None else {"replacement": self.scores.replacement,
                                                        "completeness": self.scores.completeness},
        }

    def to_circuit_tracer(self, slug: str | None = None) -> dict:
        """circuit-tracer's graph file (``frontend/graph_models.Model``): metadata, qParams, nodes, links.

        Node ids follow circuit-tracer 0.5: features ``{layer}_{feature}_{pos}``, embeddings ``E_{token}_{pos}``,
        logits ``{n_layers+1}_{token}_{pos}``; error nodes take its later ``{layer}_-1_{pos}`` (0.5's ``0_{layer}_{pos}``
        can collide with a feature's). A node's ``influence`` there is its cumulative influence (the share of all
        influence held by the nodes at least as influential), which the frontend's threshold reads.
        """
        slug = slug or re.sub(r"[^a-z0-9-]+", "-", self.prompt.lower()).strip("-")[:60] or "graph"
        ids = {n.id: _ct_id(n, self.n_layers) for n in self.nodes}
        cumulative = _cumulative(self.nodes)
        last = len(self.tokens) - 1
        nodes = []
        for n in self.nodes:
            layer = "E" if n.kind == "embed" else str(self.n_layers + 1) if n.kind == "logit" else \
                str(n.layer - 1) if n.kind == "residual" else str(n.layer)
            nodes.append({
                "node_id": ids[n.id], "jsNodeId": ids[n.id], "feature": _ct_feature(n), "layer": layer,
                "ctx_idx": n.position, "reverse_ctx_idx": last - n.position, "run_idx": 0,
                "feature_type": FEATURE_TYPES[n.kind], "clerp": _clerp(n),
                "influence": cumulative[n.id], "activation": n.activation,
                "token_prob": float(n.probability or 0.0), "is_target_logit": n.kind == "logit" and n.token_id == self.target_id,
            })
        return {
            "metadata": {"slug": slug, "scan": self.scan or f"{self.model}-{self.kind}", "transcoder_list": [],
                         "prompt_tokens": [_token(t) for t in self.tokens], "prompt": self.prompt,
                         "node_threshold": self.threshold, "schema_version": 1},
            "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
            "nodes": nodes,
            "links": [{"source": ids[e.source], "target": ids[e.target], "weight": e.weight} for e in self.edges],
        }


def _token(text: str) -> str:
    return text.replace("\n", "⏎").replace("\t", "→").replace("\r", "↵")


def _ct_id(n: Node, n_layers: int) -> str:
    if n.kind == "feature":
        return f"{n.layer}_{n.feature}_{n.position}"
    if n.kind == "error":
        return f"{n.layer}_-1_{n.position}"
    if n.kind == "embed":
        return f"E_{n.token_id}_{n.position}"
    if n.kind == "logit":
        return f"{n_layers + 1}_{n.token_id}_{n.position}"
    if n.kind == "head":
        return f"{n.layer}_h{n.head}_{n.position}"
    if n.kind == "mlp":
        return f"{n.layer}_mlp_{n.position}"
    return f"R{n.layer}_{n.position}"


def _ct_feature(n: Node) -> int:
    if n.kind == "feature":  # circuit-tracer numbers a (layer, feature) pair by Cantor's pairing
        return (n.layer + n.feature) * (n.layer + n.feature + 1) // 2 + n.feature
    if n.kind in ("embed",):
        return n.position
    if n.kind == "logit":
        return int(n.token_id)
    if n.kind == "head":
        return int(n.head)
    # The frontend keys hover state on (layer, feature, position): an MLP and the residual it writes share the first
    # and last, so they get distinct negative numbers (error nodes are -1, as in circuit-tracer).
    return {"error": -1, "mlp": -2, "residual": -3}[n.kind]


def _clerp(n: Node) -> str:
    if n.kind == "logit":
        return f'Output "{_token(n.label)}" (p={n.probability or 0.0:.3f})'
    if n.kind == "embed":
        return f'Emb: "{_token(n.label)}"'
    return n.label


def _cumulative(nodes: list[Node]) -> dict[str, float]:
    order = sorted(nodes, key=lambda n: -n.influence)
    total = sum(max(n.influence, 0.0) for n in order) or 1.0
    out, running = {}, 0.0
    for n in order:
        running += max(n.influence, 0.0)
        out[n.id] = running / total
    return out


# -- influence (shared by both graphs) -------------------------------------------------------------------------


def normalise_rows(adjacency: torch.Tensor) -> torch.Tensor:
    """|A| with each row (a target's inputs) divided by its sum; rows without inputs stay 0."""
    magnitude = adjacency.abs()
    return magnitude / magnitude.sum(1, keepdim=True).clamp_min(1e-10)


def influence(normalised: torch.Tensor, logit_weights: torch.Tensor) -> torch.Tensor:
    """w·(A + A² + …) for a row-normalised DAG adjacency A [node, node] and logit weights w [node]."""
    current = logit_weights @ normalised
    total = current.clone()
    for _ in range(normalised.shape[0]):
        if not bool(current.any()):
            break
        current = current @ normalised
        total += current
    return total


def cumulative_cut(scores: torch.Tensor, fraction: float) -> float:
    """The score at which the largest scores first hold ``fraction`` of their sum (circuit-tracer's
    ``find_threshold``): keeping scores >= it keeps that share of the total."""
    ordered = scores.flatten().sort(descending=True).values
    share = ordered.cumsum(0) / ordered.sum().clamp_min(1e-30)
    index = min(int(torch.searchsorted(share, torch.tensor(fraction, dtype=share.dtype))), len(ordered) - 1)
    return float(ordered[index])


def graph_scores(adjacency: torch.Tensor, logit_weights: torch.Tensor, errors: slice, tokens: slice) -> Scores:
    """Replacement and completeness scores, as circuit-tracer's ``compute_graph_scores`` defines them."""
    normalised = normalise_rows(adjacency)
    node_influence = influence(normalised, logit_weights)
    token_influence = float(node_influence[tokens].sum())
    error_influence = float(node_influence[errors].sum())
    replacement = token_influence / max(token_influence + error_influence, 1e-30)
    non_error = 1 - normalised[:, errors].sum(-1)
    output = node_influence + logit_weights
    completeness = float((non_error * output).sum() / output.sum())
    return Scores(replacement, completeness)
