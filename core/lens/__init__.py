"""The logit lens: decode the residual stream after every layer through the final norm and unembedding.

One forward pass per batch of prompts captures the residual stream at the requested
positions only; logits are computed for those positions and a few layers at a time, so
memory stays at O(layers_per_chunk x prompts x positions x vocab). Layer 0 is the
embeddings, layer n_layers is the model's own output: its distribution equals the model's.
"""


import core.interventions  # noqa: F401 (registers the local backend every handle's passes run on)
from core.lens.decode import LN2
from core.lens.energy import energy_of, unembedding_gram
from core.lens.result import LensResult
from core.lens.run import checked_request, run_lens, sublayer_sites

__all__ = ["LN2", "LensResult", "checked_request", "energy_of", "run_lens", "sublayer_sites", "unembedding_gram"]
