"""How close does the shard reader get to just reading the tar bytes?

One run writes synthetic shards, then times (a) the raw read rate: reading every byte of the
tar files in 1 MiB chunks, nothing else, the limit for any reader; (b) our reader through
`make_loader` (tar parsing, npy decode, shuffle window, batching into [B, L] tensors with
modality ids and pad mask) with 0, 1 and 2 DataLoader workers. Rates are tokens/s (L tokens per
sample); ratios are against (a). Files are read once before timing so all rates are from
the page cache: this is the hard case for the ratio (the raw rate is memory bandwidth);
from disk or object storage the raw rate falls and the ratio rises. Goal: >= 0.5x raw with
one worker.

    python benchmarks/shards.py [--samples 16000] [--length 2048] [--batch-size 32]

Prints JSON and a markdown table; writes benchmarks/results/shards.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trimodal.packing.layout import PackedSequence
from trimodal.packing.vocab import Vocab
from trimodal.shards import ReaderConfig, ShardDataset, WriterConfig, make_loader, write_shards


def synthetic(vocab: Vocab, n: int, length: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(n):
        tokens = rng.integers(0, vocab.spec.text_size, length, dtype=np.int32)
        tokens[0], tokens[-1] = vocab.bos("text"), vocab.eos("text")
        yield PackedSequence(tokens, "text", [f"doc{i}"], [("text", 0, length)], 0, "synthetic")


def raw_read(paths: list[str]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass
    return time.perf_counter() - t0


def reader_pass(url: str, vocab: Vocab, length: int, batch_size: int, workers: int,
                buffer: int) -> tuple[float, int]:
    ds = ShardDataset([url], vocab, length, ReaderConfig(seed=0, shuffle_buffer=buffer))
    loader = make_loader(ds, batch_size=batch_size, num_workers=workers, pin_memory=False)
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        n += batch.tokens.numel()
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=16000)
    ap.add_argument("--length", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--shard-samples", type=int, default=1000)
    ap.add_argument("--shuffle-buffer", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "shards.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    vocab = Vocab.from_sizes(32000, 16384, 1024, 4)
    with tempfile.TemporaryDirectory() as tmp:
        url = os.path.join(tmp, "set")
        m = write_shards(synthetic(vocab, args.samples, args.length, 0), url, vocab, args.length,
                         "pack", WriterConfig(max_samples=args.shard_samples))
        paths = [os.path.join(url, s.name) for s in m.shards]
        total_tokens = m.total_tokens
        total_bytes = sum(s.bytes for s in m.shards)
        raw_read(paths)  # warm the page cache
        t_raw = min(raw_read(paths) for _ in range(max(args.repeats, 3)))
        results = {"raw_read": {"seconds": t_raw, "tokens_per_s": total_tokens / t_raw,
                                "MB_per_s": total_bytes / t_raw / 1e6, "ratio": 1.0}}
        for workers in (0, 1, 2):
            best = float("inf")
            for _ in range(args.repeats):
                t, n = reader_pass(url, vocab, args.length, args.batch_size, workers, args.shuffle_buffer)
                assert n == total_tokens, (n, total_tokens)
                best = min(best, t)
            results[f"reader_{workers}_workers"] = {
                "seconds": best, "tokens_per_s": total_tokens / best,
                "MB_per_s": total_bytes / best / 1e6, "ratio": t_raw / best}

    report = {"benchmark": "shards", "samples": args.samples, "length": args.length,
              "batch_size": args.batch_size, "shard_samples": args.shard_samples,
              "shuffle_buffer": args.shuffle_buffer, "tar_bytes": total_bytes,
              "tokens": total_tokens, "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "torch": torch.__version__, "results": results,
              "goal": "reader_1_workers ratio >= 0.5"}
    print(json.dumps(report, indent=2))
    print()
    print("| reader | tokens/s | MB/s | x raw read |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['tokens_per_s']:.3g} | {r['MB_per_s']:.0f} | {r['ratio']:.2f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
