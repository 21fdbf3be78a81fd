"""Every analysis on a Llama-2-7B-shaped checkpoint (random weights) in 4-bit and 8-bit on this CPU.

    python bench/llama2_shape.py [--quantization 4bit 8bit] [--only lens,attribute] [--rebuild]

Once, under ``$LAYERSCOPE_HOME/bench/llama2-7b-shape`` (about 13 GB), it writes a checkpoint with the
Llama-2-7B shape (32 layers, d 4096, 32 heads, MLP 11008, vocab 32000, bf16 safetensors in one shard
per layer) and a Llama-2-like tokenizer trained on text shipped in the repository: BPE with byte
fallback (Indic scripts, absent from that text, fall back to bytes), single digits, a "▁" prefix and a
BOS token. The weights are random, so the *numbers* mean nothing: this measures time and memory.

For each quantization it loads the model (``core.models.load_model``, device cpu, dtype auto), then
runs every analysis once at a small size and prints a table: seconds, and the process's anonymous
memory (``RssAnon``: what the process itself holds, not the mapped pages of the safetensors files)
after the load and at its peak during each analysis. It also says whether any checkpoint file is
still mapped after the load. Targets (issue 16): anonymous memory <= 6 GB in 4-bit, no checkpoint
file left mapped, bf16 compute chosen by ``auto`` in 4-bit on CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
SHAPE = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
             num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5)
SMALL = dict(SHAPE, hidden_size=256, intermediate_size=688, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=4)  # --small: the same script in seconds, to try it out
TOKENIZER_TEXTS = ["assets/corpora/shakespeare.txt", "assets/corpora/synthetic.txt",
                   *(f"core/analyses/information/texts/{lang}.txt" for lang in ("en", "fr", "de", "es"))]


# -- memory ----------------------------------------------------------------------------------------------


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def anon_gb() -> float:
    return status_kb("RssAnon") / 2**20


def mapped_checkpoint_gb(folder: Path) -> float:
    """Resident bytes of the checkpoint's files still mapped into this process (from /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                inside = len(parts) >= 6 and parts[5].startswith(str(folder))
            elif inside and parts[0] == "Rss:":
                total += int(parts[1])
    return total / 2**20


class PeakAnon:
    """Samples anonymous memory every 50 ms while a block runs."""

    def __enter__(self):
        self.peak, self._stop = anon_gb(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, anon_gb())
            time.sleep(0.05)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anon_gb())


# -- the checkpoint ----------------------------------------------------------------------------------------


def build_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("▁", "merged_with_next"),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    special = ["<unk>", "<s>", "</s>", *(f"<0x{i:02X}>" for i in range(256))]
    trainer = trainers.BpeTrainer(vocab_size=SHAPE["vocab_size"], min_frequency=1, special_tokens=special,
                                  limit_alphabet=300, show_progress=False)
    tok.train_from_iterator([(ROOT / p).read_text(encoding="utf-8") for p in TOKENIZER_TEXTS], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            pad_token="</s>").save_pretrained(folder)


def build_checkpoint(folder: Path, shape: dict) -> None:
    """Random bf16 weights of the Llama-2-7B shape, one safetensors shard per layer (never all in memory)."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    folder.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, dtype="bfloat16")
    d, f, v = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    gen = torch.Generator().manual_seed(0)

    def randn(*shape, std=0.02):
        return (torch.randn(*shape, generator=gen) * std).to(torch.bfloat16)

    n_layers = shape["num_hidden_layers"]

    def layer(i: int) -> dict:
        p = f"model.layers.{i}."
        return {
            **{p + f"self_attn.{n}_proj.weight": randn(d, d) for n in "qkvo"},
            p + "mlp.gate_proj.weight": randn(f, d), p + "mlp.up_proj.weight": randn(f, d),
            p + "mlp.down_proj.weight": randn(d, f),
            p + "input_layernorm.weight": torch.ones(d, dtype=torch.bfloat16),
            p + "post_attention_layernorm.weight": torch.ones(d, dtype=torch.bfloat16),
        }

    makers = [lambda: {"model.embed_tokens.weight": randn(v, d)}, *(lambda i=i: layer(i) for i in range(n_layers)),
              lambda: {"model.norm.weight": torch.ones(d, dtype=torch.bfloat16), "lm_head.weight": randn(v, d)}]
    index, total = {}, 0
    for n, make in enumerate(makers):  # one shard in memory at a time
        shard = make()
        name = f"model-{n + 1:05d}-of-{len(makers):05d}.safetensors"
        save_file(shard, folder / name, metadata={"format": "pt"})
        for key, tensor in shard.items():
            index[key] = name
            total += tensor.numel() * tensor.element_size()
        print(f"  wrote {name}", file=sys.stderr, flush=True)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                      "weight_map": index}, indent=1))
    config.save_pretrained(folder)
    build_tokenizer(folder)


def checkpoint(home: Path, rebuild: bool, small: bool = False) -> Path:
    folder = home / "bench" / ("llama2-small-shape" if small else "llama2-7b-shape")
    done = folder / "COMPLETE"
    if rebuild or not done.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        t = time.perf_counter()
        build_checkpoint(folder, SMALL if small else SHAPE)
        done.write_text("written by bench/llama2_shape.py\n")
        print(f"checkpoint written in {time.perf_counter() - t:.0f} s: {folder}", file=sys.stderr)
    return folder


# -- the analyses, each at a small size ---------------------------------------------------------------------


def analyses():
    """(name, settings factory, what was run) for every analysis that uses the loaded model."""
    from core.analyses import (arithmetic, attribute, information, lens, lookup, quanta, sequences, translation,
                               tuned_lens)

    return [
        ("lens", lambda: lens.Settings(prompt="The Eiffel Tower is in the city of"), "1 prompt, every position"),
        ("attribute", lambda: attribute.Settings(prompt="The Eiffel Tower is in the city of", target=" the"),
         "1 prompt, every head and MLP"),
        ("translation", lambda: translation.Settings(source="fr", target="zh", limit=4, batch_size=4),
         "4 words fr→zh"),
        ("arithmetic", lambda: arithmetic.Settings(n=2, systems=("arabic",), batch_size=2),
         "2 problems, 1 numeral system"),
        ("sequences", lambda: sequences.Settings(n=4, method="auto", top_k=4),
         "4 prompts, auto: attribution + 8 heads checked"),
        ("lookup", lambda: lookup.Settings(n=2, pairs=(1, 2), top_heads=2), "2 prompts × K 1,2, 2 heads confirmed"),
        ("information", lambda: information.Settings(tokens=48, concepts=10, languages=("en", "fr", "hi")),
         "48 tokens, 10 concepts × 3 languages"),
        ("quanta", lambda: quanta.Settings(tokens=8, max_length=32, n_clusters=4,
                                                    loss_threshold=100.0, induction="none"), "8 tokens, sketched gradients"),
        ("tuned_lens", lambda: tuned_lens.Settings(train_tokens=256, steps=2), "train: 256 tokens, 2 steps"),
        ("lens (tuned)", None, "the lens just trained, 1 prompt"),
    ]


def keep_every_prompt() -> None:
    """Random weights get no sequence right, and the sequences analysis keeps only prompts the model gets right:
    for a timing on random weights, every candidate is kept (the sweep's cost does not depend on the weights)."""
    import torch

    from core.analyses.sequences import tasks

    def everything_right(handle, prompts, ids):
        return torch.ones(len(prompts), dtype=torch.bool), torch.ones(len(prompts)), torch.ones(len(prompts))

    tasks._clean_check = everything_right


def run_all(folder: Path, quantization: str, only: set[str] | None) -> dict:
    from core.models import LoadOptions, load_model

    gc.collect()
    before = anon_gb()
    t = time.perf_counter()
    with PeakAnon() as peak:
        handle = load_model(str(folder), LoadOptions(quantization=quantization, device="cpu"))
    gc.collect()
    report = {"quantization": quantization, "load_s": round(time.perf_counter() - t, 1),
              "compute_dtype": handle.dtype, "anon_before_gb": round(before, 2),
              "anon_after_load_gb": round(anon_gb(), 2), "anon_peak_load_gb": round(peak.peak, 2),
              "mapped_checkpoint_gb": round(mapped_checkpoint_gb(folder), 2), "rows": []}
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}), file=sys.stderr, flush=True)
    tuned = folder.parent / f"tuned-{quantization}"
    for name, factory, what in analyses():
        if only and name.split()[0] not in only:
            continue
        if name == "lens (tuned)":
            if not (tuned / "params.pt").is_file():
                continue
            from core.analyses import lens as module

            settings = module.Settings(prompt="The Eiffel Tower is in the city of", lens="tuned", lens_path=str(tuned))
        else:
            module = importlib.import_module(f"core.analyses.{name}")
            settings = factory()
            if name == "tuned_lens":  # trained afresh (a lens already in the folder would be reused)
                shutil.rmtree(tuned, ignore_errors=True)
                settings = dataclasses.replace(settings, out=str(tuned))
        gc.collect()
        t = time.perf_counter()
        row = {"analysis": name, "size": what}
        try:
            with PeakAnon() as peak:
                module.run(handle, settings)
            row.update(seconds=round(time.perf_counter() - t, 1), anon_peak_gb=round(peak.peak, 2))
        except Exception as err:  # a bench reports what fails instead of stopping
            row.update(seconds=round(time.perf_counter() - t, 1), error=f"{type(err).__name__}: {str(err)[:200]}")
        report["rows"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    del handle
    gc.collect()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantization", nargs="+", default=["4bit", "8bit"], choices=["4bit", "8bit", "none"])
    parser.add_argument("--only", default="", help="comma-separated analysis names (default: all)")
    parser.add_argument("--rebuild", action="store_true", help="write the checkpoint again")
    parser.add_argument("--small", action="store_true", help="a 2-layer, d-256 model of the same kind (a dry run)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    home = Path(os.environ.get("LAYERSCOPE_HOME", Path.home() / ".cache" / "layerscope")).expanduser()
    folder = checkpoint(home, args.rebuild, args.small)
    keep_every_prompt()
    only = {s.strip() for s in args.only.split(",") if s.strip()} or None
    reports = [run_all(folder, q, only) for q in args.quantization]
    load = os.getloadavg()[0]
    print(f"\nLlama-2-{'small' if args.small else '7B'} shape, random weights, {os.cpu_count()} CPUs, load average {load:.1f}\n")
    for r in reports:
        print(f"{r['quantization']}: load {r['load_s']} s, compute {r['compute_dtype']}, anonymous memory "
              f"{r['anon_after_load_gb']} GB after load (peak {r['anon_peak_load_gb']} GB), checkpoint still "
              f"mapped {r['mapped_checkpoint_gb']} GB")
        print("| analysis | size | seconds | peak anonymous memory |\n| --- | --- | --- | --- |")
        for row in r["rows"]:
            memory = f"{row['anon_peak_gb']} GB" if "anon_peak_gb" in row else row.get("error", "")
            print(f"| {row['analysis']} | {row['size']} | {row['seconds']} | {memory} |")
        print()
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1))


if __name__ == "__main__":
    main()
