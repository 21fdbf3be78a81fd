"""Real Results of several analyses, computed on tiny random models in about a second (shared by the tests here)."""

from functools import lru_cache

import torch

from core.analyses import attribute, lens, sequences, translation
from tests import tiny

PROMPT = "The capital of France is"
WORDS = "one two three four five six".split()


def _prompts(handle, settings):
    """Four equal-length pairs the tiny model "gets right" by construction (correct = its own top-1): random
    models get no built-in task right, so ``build_prompts`` would refuse them."""
    pairs = []
    for i in range(4):
        w = WORDS[i:] + WORDS[:i]
        clean, corrupt = " ".join(w[:4]), " ".join(reversed(w[:4]))
        top = handle.logits(handle.encode([clean]))[0, -1].topk(4).indices
        pairs.append(sequences.PromptPair(clean, corrupt, "", "", int(top[0]), int(top[3])))
    return sequences.PromptSet("tiny", "bare", pairs, 4, 4, {"model wrong": 0}, len(handle.encode([clean]).input_ids[0]))


@lru_cache(maxsize=None)
def results() -> dict:
    """name -> (analysis, settings, Result): every Result from the analysis's own public ``run``."""
    from pytest import MonkeyPatch

    from core.analyses.lens import compare
    from tests.analyses.translation.test_analysis import SMALL

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        llama, gpt2 = tiny.handle("llama"), tiny.handle("gpt2", style="gpt2")
        out = {}
        for name, handle, settings in (
            ("lens", llama, lens.Settings(prompt=PROMPT, top_k=3, track=(" Paris", "capital"))),
            ("lens-sublayer", gpt2, lens.Settings(prompt=PROMPT, top_k=2, resolution="sublayer", all_positions=False)),
        ):
            out[name] = ("lens", settings, lens.run(handle, settings))
        for name, handle, settings in (
            ("attribute", llama, attribute.Settings(prompt=PROMPT, target=" capital", versus=" is")),
            ("attribute-gpt2", gpt2, attribute.Settings(prompt=PROMPT, target=" is", position=2)),
        ):
            out[name] = ("attribute", settings, attribute.run(handle, settings))
        settings = translation.Settings(source="fr", target="hi", shots=1, energy=True, batch_size=2, words=SMALL)
        out["translation"] = ("translation", settings, translation.run(llama, settings))
        with MonkeyPatch.context() as patch:
            patch.setattr("core.analyses.sequences.analysis.build_prompts", _prompts)
            settings = sequences.Settings(method="both")
            out["sequences"] = ("sequences", settings, sequences.run(llama, settings))
        settings = compare.Settings()
        out["lens-compare"] = ("lens", settings, compare.run(llama, settings, handle_b=gpt2))  # NaN KL: two vocabularies
        return out
    finally:
        torch.set_num_threads(threads)
