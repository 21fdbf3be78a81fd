"""Quanta discovery (Michaud et al. 2023): cluster the tokens a model predicts well by the gradients they induce.

Modules: ``corpus`` (documents and the canonical index of predictable tokens), ``losses``
(batched per-token losses, cached), ``gradients`` (per-token gradients sketched on the fly,
cached), ``clustering`` (cosine similarity, angular affinity, spectral clustering),
``analysis`` (``Settings`` → ``run`` → ``Result``), ``charts`` (Altair), ``export`` (self-contained
HTML from ``templates/``, CSV), ``command`` (``python -m core quanta``).
"""

from core.analyses.quanta.analysis import INDUCTION_FILTERS, UNITS, Cluster, Result, Settings, run
from core.analyses.quanta.corpus import DEFAULT_CORPUS, Corpus, corpus_from_bytes, corpus_names, describe_corpus, load_corpus
from core.analyses.quanta.gradients import PARAMETER_SUBSETS

__all__ = [
    "DEFAULT_CORPUS",
    "INDUCTION_FILTERS",
    "PARAMETER_SUBSETS",
    "UNITS",
    "Cluster",
    "Corpus",
    "Result",
    "Settings",
    "corpus_from_bytes",
    "corpus_names",
    "describe_corpus",
    "load_corpus",
    "run",
]
