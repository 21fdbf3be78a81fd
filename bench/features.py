"""Features bench on the default model (CPU): the goals of the Features issue, measured in one process.

1. A TopK residual SAE at layer 9 (width 4096, k 32, ≥ 200k training tokens): seconds, FVU, L0, dead latents,
   ΔCE and loss recovered on held-out text of other kinds than the training text (assets/corpora/lens_eval.txt
   and features_eval.txt), and on held-out windows of the training text; with ``--curve``, ΔCE against the number
   of training tokens (one training per budget).
2. A transcoder at the same layer: the same figures.
3. Written in Gemma Scope 2's layout and read back (and as SAELens and sparsify files): identical encoding and
   decoding on real activations, and the same features read from the model.
4. The readout of a 20-token prompt with a dictionary at every layer, against one logit-lens run of the same
   prompt (every position), both warm (cards on disk, dictionaries loaded), median of 3.

    python bench/features.py [--tokens 200000] [--epochs 8] [--curve 25000,50000,100000] [--no-transcoder]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT20 = "The old lighthouse keeper climbed the stairs every evening to light the lamp above the rocks and the sea"  # 20 with BOS


def train(handle, site: str, tokens: int, epochs: int, seed: int = 0) -> dict:
    from core.analyses import sae

    settings = sae.Settings(site=site, layer=9, width=4096, k=32, tokens=tokens, epochs=epochs, overwrite=True,
                            seed=seed)
    result = sae.run(handle, settings, progress=lambda f, m: print(f"  {f:5.1%} {m}", file=sys.stderr, flush=True))
    return result.to_json()


def round_trip(handle, folder: str) -> dict:
    import torch

    from core.analyses import features
    from core.analyses.features.wiring import read, wire
    from core.features import load_dictionary, save_dictionary

    d = load_dictionary(folder)
    batch = handle.encode([PROMPT20])
    x = read(handle, batch, [wire(d, handle)])[wire(d, handle).read][0]
    out, reference = {}, features.run(handle, features.Settings(PROMPT20, (folder,))).to_json()["layers"]
    with tempfile.TemporaryDirectory() as tmp:
        for layout in ("gemmascope", "saelens", "sparsify"):
            again = load_dictionary(save_dictionary(d, Path(tmp) / layout, layout))
            layers = features.run(handle, features.Settings(PROMPT20, (str(Path(tmp) / layout),))).to_json()["layers"]
            same = [[f["id"] for f in p["features"]] for p in layers[0]["positions"]] == \
                [[f["id"] for f in p["features"]] for p in reference[0]["positions"]]
            out[layout] = {"encode_max_abs_diff": float((again.encode(x) - d.encode(x)).abs().max()),
                           "decode_max_abs_diff": float((again(x) - d(x)).abs().max()),
                           "same_features_from_the_model": same,
                           "bit_identical": bool(torch.equal(again.encode(x), d.encode(x)))}
    return out


def readout_ratio(handle, folder: str) -> dict:
    """A copy of the layer-9 weights at every residual layer 1..18 (same file: one tokens card), timed warm."""
    from core.analyses import features, lens
    from core.features import load_dictionary, save_dictionary

    d = load_dictionary(folder)
    tmp = Path(tempfile.mkdtemp(prefix="features-bench-"))
    folders = []
    for layer in range(1, handle.n_layers + 1):
        d.layer = layer
        target = tmp / f"resid{layer}"
        save_dictionary(d, target)
        shutil.copyfile(Path(folder) / "params.safetensors", target / "params.safetensors")  # the same bytes
        folders.append(str(target))
    n_tokens = len(handle.encode([PROMPT20]).input_ids[0])
    settings = features.Settings(PROMPT20, tuple(folders), top=5)
    started = time.perf_counter()
    features.run(handle, settings)  # cold: loads 18 files, the tokens card is warm from training
    cold = time.perf_counter() - started
    lens_settings = lens.Settings(prompt=PROMPT20, top_k=5)
    lens.run(handle, lens_settings)
    times = {"readout": [], "lens": []}
    for _ in range(3):
        for name, call in (("readout", lambda: features.run(handle, settings)), ("lens", lambda: lens.run(handle, lens_settings))):
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    shutil.rmtree(tmp, ignore_errors=True)
    readout, lens_s = statistics.median(times["readout"]), statistics.median(times["lens"])
    return {"prompt_tokens": n_tokens, "dictionaries": len(folders), "readout_s": round(readout, 3),
            "lens_s": round(lens_s, 3), "ratio": round(readout / lens_s, 3), "first_readout_s": round(cold, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--curve", default="", help="other token budgets, comma-separated (each one more training)")
    parser.add_argument("--no-transcoder", action="store_true")
    parser.add_argument("--readout-only", metavar="DIR", help="only step 4, with the resid SAE in DIR")
    args = parser.parse_args()

    import core.interventions  # noqa: F401 (the local backend)
    from core.models import load_model

    handle = load_model("gemma-3-270m")
    if args.readout_only:
        print(json.dumps({"readout": readout_ratio(handle, args.readout_only)}, indent=1))
        return
    report = {"model": handle.spec, "date": time.strftime("%Y-%m-%d")}
    resid = train(handle, "resid", args.tokens, args.epochs)
    report["resid"] = resid
    print(json.dumps({"resid": resid}), flush=True)
    curve = [{"tokens": resid["tokens"], "delta_ce_nats": resid["delta_ce_nats"], "fvu": resid["fvu"]}]
    for budget in [int(t) for t in args.curve.split(",") if t.strip()]:
        point = train(handle, "resid", budget, args.epochs)
        curve.append({"tokens": point["tokens"], "delta_ce_nats": point["delta_ce_nats"], "fvu": point["fvu"],
                      "seconds": point["seconds"]})
        print(json.dumps({"curve_point": curve[-1]}), flush=True)
    report["curve"] = sorted(curve, key=lambda p: p["tokens"])
    if not args.no_transcoder:
        report["transcoder"] = train(handle, "transcoder", args.tokens, args.epochs)
        print(json.dumps({"transcoder": report["transcoder"]}), flush=True)
    report["round_trip"] = round_trip(handle, resid["path"])
    report["readout"] = readout_ratio(handle, resid["path"])
    goals = {"resid_seconds_le_900": resid["seconds"] <= 900, "resid_delta_ce_le_0.5": resid["delta_ce_nats"] <= 0.5,
             "resid_loss_recovered_ge_0.9": resid["loss_recovered"] >= 0.9, "resid_fvu_le_0.15": resid["fvu"] <= 0.15,
             "resid_dead_le_5pct": resid["dead_fraction"] <= 0.05, "readout_ratio_le_1.5": report["readout"]["ratio"] <= 1.5}
    if "transcoder" in report:
        goals["transcoder_delta_ce_le_0.7"] = report["transcoder"]["delta_ce_nats"] <= 0.7
    report["goals"] = goals
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
