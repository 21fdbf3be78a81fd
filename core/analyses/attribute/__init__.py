"""Direct logit attribution: each head's, MLP's and the embeddings' share of one token's logit."""

from core.analyses.attribute.analysis import Contribution, Result, Settings, run

__all__ = ["Contribution", "Result", "Settings", "run"]
