"""Speed of the logit lens on the default model, measured in one process.

  python bench/lens.py [--model gemma-3-270m] [--prompts 32] [--repeats 3] [--naive-prompts 32]

(a) a plain batched transformers forward with output_hidden_states=True (full logits everywhere),
(b) this project's lens: every layer at the last position, top-10, entropy, KL,
(c) a naive lens that reruns the model once per layer and decodes that layer at every position.
Prints seconds and the ratios (b)/(a) and (c)/(b), the warm load time (fresh process, safetensors
cache already built) and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from core.lens import run_lens  # noqa: E402
from core.models import load_model  # noqa: E402

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches in "
         "Paris London Berlin Madrid Rome and Tokyo every Monday morning before breakfast").split()


def prompts(n: int, words: int = 26) -> list[str]:
    """n different prompts of ``words`` words (26: ~30 tokens on Gemma 3)."""
    return [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(words)) for i in range(n)]


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def plain_forward(handle, batch):
    with torch.inference_mode():
        handle.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                     position_ids=batch.position_ids, output_hidden_states=True, use_cache=False)


def naive_lens(handle, batch):
    """One full forward per layer, truncating the model after that layer and decoding every position."""
    layers = handle.adapter.layers(handle.model)
    for layer in range(handle.n_layers + 1):
        captured = {}

        def stop(module, args, output, layer=layer):
            captured["h"] = output[0] if isinstance(output, tuple) else output

        hook = (layers[layer - 1].register_forward_hook(stop) if layer > 0
                else layers[0].register_forward_pre_hook(lambda m, a, k: captured.__setitem__("h", a[0] if a else k["hidden_states"]), with_kwargs=True))
        try:
            with torch.inference_mode():
                handle.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             position_ids=batch.position_ids, use_cache=False)
        finally:
            hook.remove()
        logp = torch.log_softmax(handle.decode(captured["h"]), -1)
        logp.exp().topk(10, dim=-1)


def warm_load_seconds(model: str) -> dict:
    code = ("import time,os;os.environ['HF_HUB_OFFLINE']='1';t0=time.perf_counter();"
            "from core.models import load_model;t1=time.perf_counter();"
            f"load_model({model!r});t2=time.perf_counter();print(t1-t0, t2-t1)")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    total = time.perf_counter() - start
    imports, load = map(float, out.stdout.split())
    return {"imports_s": round(imports, 2), "load_model_s": round(load, 2), "process_total_s": round(total, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--naive-prompts", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    load = warm_load_seconds(args.model)
    handle = load_model(args.model)
    texts = prompts(args.prompts)
    batch = handle.encode(texts)
    run_lens(handle, texts[:2])  # warm-up (allocator, kernels)

    plain = best_of(args.repeats, lambda: plain_forward(handle, batch))
    lens = best_of(args.repeats, lambda: run_lens(handle, texts, top_k=10, batch_size=args.prompts))
    naive_texts = texts[: args.naive_prompts]
    naive_batch = handle.encode(naive_texts)
    naive = best_of(1, lambda: naive_lens(handle, naive_batch)) * (args.prompts / len(naive_texts))

    report = {
        "model": args.model,
        "threads": torch.get_num_threads(),
        "prompts": args.prompts,
        "tokens_per_prompt": round(sum(batch.lengths) / len(batch.lengths), 1),
        "a_plain_forward_s": round(plain, 3),
        "b_lens_all_layers_last_pos_s": round(lens, 3),
        "c_naive_rerun_per_layer_s": round(naive, 3),
        "naive_measured_on_prompts": len(naive_texts),
        "ratio_b_over_a": round(lens / plain, 3),
        "ratio_c_over_b": round(naive / lens, 1),
        "warm_load": load,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
