"""Speed of the Journey of information analysis, measured in one process after the model is loaded.

  python bench/information.py [--model gemma-3-270m] [--corpus shakespeare] [--tokens 400] [--concepts 100]

Each a call of the public ``run``:
(a) the first run (what the page's first Run costs): the text's forward pass, three probes, the logit
    lens at the score half's positions, and the word list through the model;
(b) the same run again: the word list's residuals come from the per-model cache (the concepts depend
    on the seed only), everything else is computed again;
with the seconds spent in each stage of (a), from its progress messages. Wall seconds and process CPU
seconds are both printed: on a shared machine wall time depends on the load (printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import core  # noqa: E402,F401  (before torch: passive OpenMP waiting)
from core.analyses import information as info  # noqa: E402
from core.models import load_model  # noqa: E402

STAGES = (("one forward pass", "forward pass"), ("fitting the", "probes"), ("logit lens", "logit lens"),
          ("words through the model", "word list"), ("effective rank", "geometry and PCA"))


def timed_run(handle, settings: info.Settings) -> tuple[info.Result, float, float, dict[str, float]]:
    """The run, its wall and CPU seconds, and the wall seconds of each stage."""
    marks: list[tuple[str, float]] = []

    def progress(fraction: float, message: str) -> None:
        stage = next((name for key, name in STAGES if key in message), None)
        if stage and (not marks or marks[-1][0] != stage):
            marks.append((stage, time.perf_counter()))

    wall, cpu = time.perf_counter(), time.process_time()
    result = info.run(handle, settings, progress)
    end = time.perf_counter()
    stages: dict[str, float] = {}
    for (name, at), (_, until) in zip(marks, marks[1:] + [("end", end)]):
        stages[name] = round(stages.get(name, 0.0) + until - at, 2)
    return result, round(end - wall, 2), round(time.process_time() - cpu, 2), stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--corpus", default="shakespeare")
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--concepts", type=int, default=100)
    args = parser.parse_args()

    start = time.perf_counter()
    handle = load_model(args.model)
    load_s = round(time.perf_counter() - start, 1)
    settings = info.Settings(corpus=args.corpus, tokens=args.tokens, concepts=args.concepts)
    load_before = os.getloadavg()[0]
    first, first_wall, first_cpu, stages = timed_run(handle, settings)
    _, second_wall, second_cpu, _ = timed_run(handle, settings)
    load_after = os.getloadavg()[0]
    layers = first.layers
    peak = first.peak_retrieval_layer
    print(json.dumps({
        "model": args.model,
        "corpus": args.corpus,
        "n_tokens": first.n_tokens,
        "concepts": args.concepts,
        "languages": len(first.languages),
        "load_s": load_s,
        "first_run": {"wall_s": first_wall, "cpu_s": first_cpu, "stages_wall_s": stages},
        "second_run_cached_words": {"wall_s": second_wall, "cpu_s": second_cpu},
        "target_s": 60,
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "threads": __import__("torch").get_num_threads(),
        "figures": {
            "translation_retrieval_peak": {"layer": peak, "accuracy": round(layers[peak].translation_retrieval, 3),
                                           "embeddings": round(layers[0].translation_retrieval, 3),
                                           "output": round(layers[-1].translation_retrieval, 3)},
            "effective_rank": [round(l.effective_rank, 2) for l in layers],
            "anisotropy": [round(l.anisotropy, 3) for l in layers],
            "next_token_acc_lens": [round(l.next_token_acc, 3) for l in layers],
            "mi_next_token_bits": [round(l.mi_next_token_bits, 3) for l in layers],
            "tokens_per_word": {k: round(v, 2) for k, v in first.tokens_per_word.items()},
            "story_tokens": first.story_tokens,
        },
    }, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
