"""Benchmark of the Quanta pipeline on the default model: gradient time, peak memory, re-clustering.

    python bench/quanta.py [--model gemma-3-270m] [--tokens 300] [--keep-cache]

Targets (issue 7, 2-core CPU, default model): the sketched gradients of 300 tokens in <= 3 min with
peak memory under 6 GB, and re-clustering from the cache in <= 5 s. A fresh cache folder is used
unless --keep-cache. Prints the measured figures and the conditions (CPU count, load average),
because on a shared machine the timings are noisy.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakMemory:
    """Samples the process's resident memory every 50 ms; ``peak`` per stage label."""

    def __init__(self):
        self.stage, self.peak, self._stop = "setup", {}, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            rss = rss_bytes()
            self.peak[self.stage] = max(self.peak.get(self.stage, 0), rss)
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--keep-cache", action="store_true", help="use the normal cache (resume) instead of a fresh one")
    args = parser.parse_args()

    models_home = Path(os.environ.get("LAYERSCOPE_HOME") or Path.home() / ".cache" / "layerscope")
    if not args.keep_cache:  # fresh quanta cache; the model conversion cache is shared
        home = Path(tempfile.mkdtemp(prefix="quanta-bench-"))
        if (models_home / "converted").is_dir():
            (home / "converted").symlink_to(models_home / "converted", target_is_directory=True)
        os.environ["LAYERSCOPE_HOME"] = str(home)

    import torch

    from core.analyses import quanta
    from core.models import load_model

    print(f"conditions: {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} at start")
    with PeakMemory() as memory:
        started = time.monotonic()
        handle = load_model(args.model)
        print(f"model {args.model} loaded in {time.monotonic() - started:.1f} s")
        settings = quanta.Settings(tokens=args.tokens, n_clusters=args.clusters, max_length=args.max_length)

        def progress(fraction: float, message: str) -> None:
            memory.stage = message.split(":")[0]

        memory.stage = "losses"
        first = quanta.run(handle, settings, progress)
        memory.stage = "reclustering"
        started = time.monotonic()
        again = quanta.run(handle, settings)
        recluster_same = time.monotonic() - started
        started = time.monotonic()
        other = quanta.run(handle, replace(settings, n_clusters=args.clusters + 10))
        recluster_other = time.monotonic() - started

    t = first.timings
    grad_peak = memory.peak.get("per-token gradients", 0)
    overall_peak = max(memory.peak.values())
    print(f"corpus: {first.n_documents_scored} of {first.n_documents} documents scored, {first.n_scored} tokens scored, "
          f"{first.n_below_threshold} with loss < {settings.loss_threshold} nats "
          f"({100 * first.n_below_threshold / first.n_scored:.1f}%), {first.n_after_induction} after the trigram filter, "
          f"{first.n_tokens} sampled")
    print(f"losses: {t['losses']:.1f} s for {first.n_scored} tokens ({1000 * t['losses'] / first.n_scored:.1f} ms/token)")
    print(f"gradients: {t['gradients']:.1f} s for {first.gradients_computed} tokens "
          f"({t['gradients'] / max(first.gradients_computed, 1):.2f} s/token; {first.n_params:,} parameters sketched to "
          f"{settings.proj_dim} dims), target <= 180 s: {'met' if t['gradients'] <= 180 else 'NOT met'} "
          f"(ratio {t['gradients'] / 180:.2f})")
    print(f"peak memory: {grad_peak / 2**30:.2f} GB during gradients, {overall_peak / 2**30:.2f} GB overall "
          f"(target < 6 GB: {'met' if overall_peak < 6 * 2**30 else 'NOT met'})")
    print(f"re-clustering from the cache: {recluster_same:.2f} s (same settings), {recluster_other:.2f} s "
          f"({args.clusters + 10} clusters); target <= 5 s: {'met' if max(recluster_same, recluster_other) <= 5 else 'NOT met'}")
    print(f"same seed, same clusters: {again.labels.tolist() == first.labels.tolist()}; "
          f"rank-frequency slope {first.rank_frequency_slope:.3f} ({len(first.clusters)} clusters), "
          f"{other.rank_frequency_slope:.3f} ({len(other.clusters)} clusters)")
    for c in first.clusters[:12]:
        answers = ", ".join(repr(a) for a, _ in c.top_answers[:4])
        kinds = ", ".join(f"{k} {n}" for k, n in c.kinds[:3])
        print(f"  cluster {c.id:2d}: {c.size:3d} tokens, answers {answers}; {kinds}")
    print(f"load average at end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
