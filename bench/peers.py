"""The logit lens against its floor and against peer libraries, all in one process on one batch.

    python bench/peers.py [--model gemma-3-270m] [--prompts 32] [--repeats 3] [--top-k 10]

One batch of prompts (about 22 tokens each); every layer (0 = embeddings .. L) decoded at the last position:
- floor: one forward that keeps only the last position's logits (``logits_to_keep=1``) and every layer's
  hidden state, the unembedding of every layer's last residual through the final norm, one top-k pass;
- plain forward: transformers with full logits at every position (what the peers are compared against);
- our lens: ``core.lens.run_lens`` (top-k, entropy, KL to the final layer, exact at the last layer);
- nnsight (if installed): a trace that decodes each layer's last residual inside it and saves top-k only;
- TransformerLens (if installed): ``TransformerBridge.run_with_cache`` of every ``hook_resid_post`` at the
  last position, then the same decode and top-k.
Prints the median seconds of each (runs interleaved) and the ratios: our lens / floor (target <= 1.1,
issue 17) and each / plain forward. The machine's load average is printed too: on a shared machine the
absolute figures are noisy, the ratios of runs interleaved in one process much less so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from core.lens import run_lens  # noqa: E402
from core.models import load_model  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from lens import prompts as lens_prompts  # noqa: E402  (bench/lens.py)

def prompts(n: int) -> list[str]:
    return lens_prompts(n, words=20)  # about 22 tokens each, as in issue 17


def inputs(handle, batch) -> dict:
    return dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)


def floor(handle, batch, k):
    with torch.inference_mode():
        out = handle.model(**inputs(handle, batch), output_hidden_states=True, logits_to_keep=1, use_cache=False)
        last = torch.stack([h[:, -1] for h in out.hidden_states])  # [layer, batch, d]
        handle.decode(last).topk(k, dim=-1)


def plain(handle, batch, k):
    with torch.inference_mode():
        handle.model(**inputs(handle, batch), use_cache=False).logits[:, -1].topk(k, dim=-1)


def ours(handle, texts, k):
    run_lens(handle, texts, top_k=k, batch_size=len(texts))


def nnsight_lens(handle, batch, k, backend):
    wrapped, layers, norm, unembed = backend.traced(handle)  # nnsight's own model over the same weights, wrapped once
    saved = []
    with torch.inference_mode(), wrapped.trace(**inputs(handle, batch), use_cache=False):
        saved.append(unembed(norm(layers[0].input[:, -1])).topk(k, dim=-1).indices.save())
        for layer in layers:
            out = layer.output
            saved.append(unembed(norm((out[0] if isinstance(out, tuple) else out)[:, -1])).topk(k, dim=-1).indices.save())
    return saved


def transformer_lens_bridge(handle):
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    folder = handle.model.config._name_or_path  # the local folder the model was loaded from
    bridge = TransformerBridge.boot_transformers(folder, hf_model=handle.model, device="cpu",
                                                 tokenizer=AutoTokenizer.from_pretrained(folder))

    def run(batch, k):
        names = [f"blocks.{i}.hook_resid_post" for i in range(handle.n_layers)]
        with torch.inference_mode():
            _, cache = bridge.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask,
                                             names_filter=lambda n: n in names or n == "blocks.0.hook_resid_pre")
            last = torch.stack([cache["blocks.0.hook_resid_pre"][:, -1]] + [cache[n][:, -1] for n in names])
            handle.decode(last).topk(k, dim=-1)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args()

    handle = load_model(args.model)
    texts = prompts(args.prompts)
    batch = handle.encode(texts)
    k = args.top_k
    runs = {"floor": lambda: floor(handle, batch, k), "plain forward, full logits": lambda: plain(handle, batch, k),
            "our lens (top-k, entropy, KL)": lambda: ours(handle, texts, k)}
    skipped = {}
    try:
        import nnsight  # noqa: F401

        own = load_model(args.model)  # each peer wraps its own copy: wrapping may change the modules it is given
        from core.backends.nnsight_backend import NNsightBackend

        backend = NNsightBackend()
        runs[f"nnsight {nnsight.__version__}, top-k only"] = lambda: nnsight_lens(own, batch, k, backend)
    except ImportError:
        skipped["nnsight"] = "not installed"
    try:
        import transformer_lens

        version = getattr(transformer_lens, "__version__", None) or __import__("importlib.metadata").metadata.version("transformer-lens")
        bridge = transformer_lens_bridge(load_model(args.model))
        runs[f"TransformerLens {version} bridge, top-k only"] = lambda: bridge(batch, k)
    except ImportError:
        skipped["transformer-lens"] = "not installed"
    except Exception as err:  # a peer that cannot run this model is reported, not fatal
        skipped["transformer-lens"] = f"{type(err).__name__}: {str(err)[:160]}"
    for fn in runs.values():  # warm-up: allocator, kernels, lazy imports
        fn()
    times = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved, so a noisy neighbour slows every entry alike
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    base = median["plain forward, full logits"]
    report = {
        "model": args.model, "prompts": args.prompts, "tokens_per_prompt": round(sum(batch.lengths) / len(batch.lengths), 1),
        "layers_decoded": handle.n_layers + 1, "threads": torch.get_num_threads(), "load_average": round(os.getloadavg()[0], 2),
        "seconds": {n: round(v, 3) for n, v in median.items()},
        "times_plain_forward": {n: round(v / base, 2) for n, v in median.items()},
        "our_lens_over_floor": round(median["our lens (top-k, entropy, KL)"] / median["floor"], 3),
        "skipped": skipped,
    }
    print(json.dumps(report, indent=1))
    print("\n| implementation | seconds | x plain forward |\n| --- | --- | --- |")
    for name, value in median.items():
        print(f"| {name} | {value:.2f} | {value / base:.2f}x |")


if __name__ == "__main__":
    main()
