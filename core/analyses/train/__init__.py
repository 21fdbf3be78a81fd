"""Train from scratch: a small decoder-only transformer (the "tinylm" model kind) trained on a corpus.

analysis.py (``Settings`` → ``run`` → ``Result``), model.py (TinyLM), tokenization.py (char / byte-level
BPE), corpora.py + synthetic.py (training text), trainer.py (Trainer, TrainingHistory), background.py
(training in a thread: ``start``, ``TrainingStatus``), checkpoint.py (save / load ``tinylm.json``
folders), generate.py, skills.py, activations.py (attention patterns, residual PCA), charts.py
(Altair), command.py (``python -m core train``).
"""

from core.analyses.train.analysis import Result, Settings, run

__all__ = ["Result", "Settings", "run"]
