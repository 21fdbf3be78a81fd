"""The graph from a prompt to a prediction: information-flow routes (no dictionary) and attribution graphs
(per-layer transcoders), pruned by influence, judged by circuit-tracer's scores, exported to its graph JSON.

- ``routes``: Ferrando & Voita's contributions from one forward pass; ``attribution``: the frozen replacement model,
  direct effects by exact linear algebra, circuit-tracer's pruning; ``graph``: the typed graph, influence, scores,
  export; ``transcoders``: per-layer transcoder sets (read, or trained here); ``check``: pinned nodes ablated or
  patched with the handle's edits; ``analysis``: ``Settings`` → ``run`` → ``Result``; ``charts``, ``command``.
"""

from core.analyses.circuits.analysis import KINDS, MAX_TOKENS, Result, Settings, run
from core.analyses.circuits.graph import Edge, Graph, Node, Scores

__all__ = ["KINDS", "MAX_TOKENS", "Edge", "Graph", "Node", "Result", "Scores", "Settings", "run"]
