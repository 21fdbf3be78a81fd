"""Sparse dictionaries (SAEs, transcoders) as data: read and write the published formats, train on CPU, score.

Model-independent: activations come in as tensors; wiring a dictionary to a model goes through the handle.
"""

from core.features.dictionary import ACTIVATIONS, KINDS, Dictionary, batch_topk
from core.features.formats import LAYOUTS, detect_layout, load_dictionary, save_dictionary
from core.features.sites import SITES
from core.features.training import TrainConfig, TrainResult, train_dictionary

__all__ = ["ACTIVATIONS", "KINDS", "LAYOUTS", "SITES", "Dictionary", "TrainConfig", "TrainResult", "batch_topk",
           "detect_layout", "load_dictionary", "save_dictionary", "train_dictionary"]
