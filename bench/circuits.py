"""Circuits on the default model, measured in one process: routes speed against a forward pass, the sequence task's
heaviest head, faithfulness of the routes by ablation, attribution graphs through transcoders trained here.

  python bench/circuits.py [--model gemma-3-270m] [--repeats 5] [--skip-attribution] [--train] [--retrain]

1. Routes of a 20-token prompt at every layer: the public ``run`` (with and without the lens's top tokens at the
   kept residuals) against one plain forward pass of the same prompt (the model's own logits), interleaved,
   median of ``--repeats``; goal ≤ 2×.
2. The sequence task (``1 2 3 4 `` → ``5``): the routes graph's heaviest head at the last position (README: exact
   mean ablation names L12H0).
3. Faithfulness on 8 prompts of the sequence task (``core.analyses.sequences``): each prompt's routes graph ranks
   the heads and MLPs by their influence at the position the prediction is read from (and, for comparison, summed
   over every position); mean ablation (over the corrupted prompts, at every position) of its top k against k
   components drawn at random (20 draws), for k = 1, 3, 10: the drop of the logit difference.
4. Transcoders for every block (cached under $LAYERSCOPE_HOME/transcoders; ``--train`` trains them when missing,
   ``--retrain`` again): their held-out FVU, L0 and dead fraction; then the attribution graph of a 10-token prompt:
   seconds, size, replacement and completeness scores.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from core.analyses import sequences as sq  # noqa: E402
from core.analyses.circuits import Settings, run  # noqa: E402
from core.analyses.circuits import routes as rt  # noqa: E402
from core.analyses.circuits.transcoders import available, default_dir, load_transcoders, train_transcoders  # noqa: E402
from core.interventions import Component  # noqa: E402
from core.models import load_model  # noqa: E402
from core.progress import stderr_printer  # noqa: E402

ROUTES_PROMPT = "The Eiffel Tower is in Paris and the Colosseum is in Rome, so the Brandenburg Gate is in"
ATTRIBUTION_PROMPTS = ["The Eiffel Tower is located in the city of", "The capital of Germany is the German city of",
                       "The Great Wall is located in the country of"]  # 10 tokens each with Gemma's tokenizer
TRAINING = dict(width=2048, k=32, n_tokens=49152, epochs=4, batch_size=256)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def prompt_of(handle, text: str, n_tokens: int) -> str:
    """``text`` cut (or the routes prompt repeated) to exactly ``n_tokens`` tokens."""
    ids = handle.encode([text]).input_ids[0].tolist()
    while len(ids) < n_tokens:
        ids = ids + handle.tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    bos = 1 if ids[0] == handle.tokenizer.bos_token_id else 0
    return handle.tokenizer.decode(ids[bos:n_tokens])


def routes_speed(handle, repeats: int) -> None:
    prompt = prompt_of(handle, ROUTES_PROMPT, 20)
    batch = handle.encode([prompt])
    plain, with_lens, without = [], [], []
    run(handle, Settings(prompt=prompt))  # warm: eager attention, first touches
    for _ in range(repeats):
        plain.append(timed(lambda: handle.logits(batch)))
        with_lens.append(timed(lambda: run(handle, Settings(prompt=prompt))))
        without.append(timed(lambda: run(handle, Settings(prompt=prompt, lens_top_k=0))))
    f, a, b = (statistics.median(x) for x in (plain, with_lens, without))
    print(f"\n1. Routes, {batch.lengths[0]} tokens, every layer (median of {repeats}, interleaved, load "
          f"{os.getloadavg()[0]:.1f})")
    print(f"   one forward pass (logits at every position): {f:.3f} s")
    print(f"   routes graph, lens top-3 at kept residuals:  {a:.3f} s = {a / f:.2f}x (goal <= 2x)")
    print(f"   routes graph alone:                          {b:.3f} s = {b / f:.2f}x")


def component_influence(handle, prompt: str, threshold: float = 0.04) -> dict[str, dict[Component, tuple]]:
    """Each head's and MLP's influence in the prompt's routes graph (pruned at ``threshold``; the unpruned graph
    breaking ties): "last", at the position the prediction is read from; "sum", summed over every position."""
    batch = handle.encode([prompt])
    c = rt.contributions(handle, batch)
    last = batch.lengths[0] - 1
    pruned, full = rt.influence(c.thresholded(threshold), last), rt.influence(c, last)
    out: dict[str, dict[Component, tuple]] = {"last": {}, "sum": {}}
    for layer in range(handle.n_layers):
        for head in [*range(handle.n_heads), -1]:
            p, f = (pruned.mlps[layer], full.mlps[layer]) if head < 0 else (pruned.heads[layer, head], full.heads[layer, head])
            out["last"][Component(layer, head)] = (float(p[last]), float(f[last]))
            out["sum"][Component(layer, head)] = (float(p.sum()), float(f.sum()))
    return out


def sequence_task(handle) -> None:
    prompt = "1 2 3 4 "
    graph = run(handle, Settings(prompt=prompt)).graph
    last = len(graph.tokens) - 1
    heads = sorted((n for n in graph.nodes if n.kind == "head" and n.position == last), key=lambda n: -n.influence)
    print(f"\n2. Sequence task {prompt!r} -> {graph.target!r}: heaviest heads at the last position "
          f"(influence share): " + ", ".join(f"{n.label} {n.influence:.3f}" for n in heads[:5]))
    print(f"   heaviest: {heads[0].label} (README, exact mean ablation: L12H0)")


def faithfulness(handle, draws: int = 20, seed: int = 0) -> None:
    prompts = sq.build_prompts(handle, sq.Settings(task="numerals", n=8, seed=seed))
    prep = sq.prepare(handle, prompts, "mean", seed)
    everything = [Component(l, h) for l in range(handle.n_layers) for h in range(handle.n_heads)] + \
                 [Component(l) for l in range(handle.n_layers)]
    ranked = {"last": [], "sum": []}
    for pair in prompts.pairs:
        scores = component_influence(handle, pair.clean)
        for how in ranked:
            ranked[how].append(sorted(everything, key=lambda c: scores[how][c], reverse=True))
    ks, n = (1, 3, 10), len(prompts.pairs)
    rng = random.Random(seed)
    chosen = [ranked[how][i][:k] for how in ranked for k in ks for i in range(n)]
    randoms = [rng.sample(everything, k) for k in ks for _ in range(draws)]
    finals = handle.run_variants(prep.run, prep.values, chosen + randoms)  # [variant, prompt, d]
    with torch.inference_mode():
        v, b, d = finals.shape
        diffs = sq.logit_diff(handle, finals.reshape(v * b, d), prep.answers.repeat(v, 1)).reshape(v, b)
        clean = sq.logit_diff(handle, prep.run.final, prep.answers)
    drops = clean.unsqueeze(0) - diffs  # [variant, prompt]
    print(f"\n3. Faithfulness: {n} prompts of the numerals task ({prompts.summary()}), mean clean logit difference "
          f"{float(clean.mean()):.3f}; each component mean-ablated at every position (over the corrupted prompts)")
    print("   | k | graph's top-k by influence at the predicted position | random k (20 draws) | graph > random | "
          "(top-k by influence summed over positions) |")
    print("   | --- | --- | --- | --- | --- |")
    for j, k in enumerate(ks):
        mean = [float(torch.stack([drops[(q * len(ks) + j) * n + i, i] for i in range(n)]).mean()) for q in range(2)]
        random_drop = float(drops[len(chosen) + j * draws: len(chosen) + (j + 1) * draws].mean())
        print(f"   | {k} | {mean[0]:.3f} | {random_drop:.3f} | {'yes' if mean[0] > random_drop else 'NO'} | "
              f"{mean[1]:.3f} |")
    for how, words in (("last", "at the predicted position"), ("sum", "summed over positions")):
        print(f"   first prompt {prompts.pairs[0].clean!r}, top 10 {words}: "
              + ", ".join(c.label for c in ranked[how][0][:10]))


def attribution(handle, args) -> None:
    folder = available(handle)
    if folder is None or args.retrain:
        if not (args.train or args.retrain):
            print(f"\n4. No transcoders under {default_dir(handle)}: run with --train (about an hour on 2 cores)")
            return
        seconds = timed(lambda: train_transcoders(handle, **TRAINING, progress=stderr_printer()))
        print(f"\n   trained {handle.n_layers} transcoders ({TRAINING}) in {seconds:.0f} s")
        folder = available(handle)
    transcoders = load_transcoders(folder, handle)
    quality = transcoders.quality()
    print(f"\n4. Transcoders {folder} (width {quality[0]['width']}, TopK k={transcoders.layers[0].k}), held-out:")
    print("   | block | FVU | L0 | dead |")
    print("   | --- | --- | --- | --- |")
    for q in quality:
        print(f"   | {q['layer']} | {q['fvu']:.3f} | {q['l0']:.1f} | {q['dead_fraction']:.1%} |")
    print(f"   mean FVU {statistics.mean(q['fvu'] for q in quality):.3f}")
    for prompt in ATTRIBUTION_PROMPTS:
        settings = Settings(prompt=prompt, kind="attribution", dictionary=str(folder))
        result = run(handle, settings)
        seconds = result.seconds
        g = result.graph
        print(f"   {prompt!r} -> {g.target!r}: {len(g.tokens)} tokens, {g.info['features_active']} active features, "
              f"{g.info['nodes_before_pruning']} nodes -> {len(g.nodes)} kept, {len(g.edges)} edges; {seconds:.1f} s "
              f"(goal <= 60 s); replacement {g.scores.replacement:.3f}, completeness {g.scores.completeness:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-attribution", action="store_true")
    parser.add_argument("--only-attribution", action="store_true")
    parser.add_argument("--train", action="store_true", help="train the transcoders when they are missing")
    parser.add_argument("--retrain", action="store_true", help="train them again")
    args = parser.parse_args()
    handle = load_model(args.model)
    print(f"{args.model} on {torch.get_num_threads()} torch threads, {time.strftime('%Y-%m-%d %H:%M')}")
    if not args.only_attribution:
        routes_speed(handle, args.repeats)
        sequence_task(handle)
        faithfulness(handle)
    if not args.skip_attribution:
        attribution(handle, args)


if __name__ == "__main__":
    main()
