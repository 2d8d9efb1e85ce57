"""How fast is our packer against the usual HuggingFace `group_texts` recipe?

Same synthetic tokenized documents for both, in one run. The baseline is written from the
idea of run_clm.py's `group_texts`: chain every document's ids into one list and slice it into
blocks. It is given its documents with BOS/EOS already added and as Python lists (what a
batched `datasets.map` hands it), which is the favourable setup for it; our packer adds
BOS/EOS, maps to global ids, checks id ranges, and records spans and keys per document piece.
Two input paths of ours are timed: `pack_tables` (an Arrow token table, as read from parquet:
no Python object per document) and `pack` (one `TokenRow` per document).

`end_to_end` times what `trimodal pack` does for the first scenario's documents: token-table
parquet files (4 of them) read, packed and written as a shard set (tar members, sha256,
manifest) on the local disk: the rate the scale plan (benchmarks/scale.py) uses for packing.

Times are CPU seconds of this process (`time.process_time`, best of --repeats): every variant
is single-threaded, and on a shared machine CPU time is far steadier than wall time, which is
reported beside it. Document lengths are geometric around --mean-len; each mean is a scenario
(short documents show the per-document cost, which group_texts does not pay: it keeps no spans).

    python benchmarks/packing.py [--docs 200000] [--mean-len 256 64] [--length 2048]

Prints JSON and a markdown table; writes benchmarks/results/packing.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import tempfile
import time
from itertools import chain
from pathlib import Path

import numpy as np

from trimodal.packing.packer import Packer, PackerConfig
from trimodal.packing.table import TokenRow, rows_to_table, write_table
from trimodal.packing.vocab import Vocab
from trimodal.shards.pack import pack_tables
from trimodal.shards.writer import WriterConfig


def group_texts(examples: dict[str, list[list[int]]], block_size: int) -> dict[str, list[list[int]]]:
    """The run_clm.py recipe: concatenate, drop the remainder, cut into blocks."""
    concatenated = {k: list(chain(*examples[k])) for k in examples}
    total = (len(concatenated["input_ids"]) // block_size) * block_size
    return {k: [t[i:i + block_size] for i in range(0, total, block_size)] for k, t in concatenated.items()}


def synthetic_docs(n: int, mean_len: int, vocab_size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lens = np.maximum(1, rng.geometric(1.0 / mean_len, size=n))
    flat = rng.integers(0, vocab_size, size=int(lens.sum()), dtype=np.int32)
    return np.split(flat, np.cumsum(lens)[:-1])


def best_of(repeats: int, fn) -> tuple[float, float, object]:
    """(best CPU seconds, wall seconds of that run, result)."""
    best_cpu, best_wall, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        gc.collect()
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        if cpu < best_cpu:
            best_cpu, best_wall = cpu, wall
    return best_cpu, best_wall, out


def scenario(n_docs: int, mean_len: int, length: int, text_vocab: int, repeats: int) -> dict:
    vocab = Vocab.from_sizes(text_vocab)
    docs = synthetic_docs(n_docs, mean_len, text_vocab, seed=0)
    n_tokens = int(sum(d.size for d in docs)) + 2 * len(docs)  # with BOS/EOS
    rows = [TokenRow(f"d{i}", "synthetic", "text", d) for i, d in enumerate(docs)]
    table = rows_to_table(rows)  # what a token-table parquet file reads back as
    bos, eos = vocab.bos("text"), vocab.eos("text")
    hf_input = {"input_ids": [[bos, *d.tolist(), eos] for d in docs]}

    results: dict[str, dict] = {}
    cpu, wall, blocks = best_of(repeats, lambda: group_texts(hf_input, length))
    results["hf_group_texts"] = {"cpu_s": cpu, "wall_s": wall, "sequences": len(blocks["input_ids"]),
                                 "tokens_per_s": n_tokens / cpu, "speedup_vs_hf": 1.0}
    hf_cpu = cpu
    del blocks, hf_input
    variants = {"trimodal_tables_cross": ("tables", dict(cross_boundaries=True)),
                "trimodal_tables_no_cross": ("tables", dict(cross_boundaries=False)),
                "trimodal_rows_cross": ("rows", dict(cross_boundaries=True))}
    for name, (path, cfg) in variants.items():
        def run(path=path, cfg=cfg):
            packer = Packer(PackerConfig(length=length, **cfg), vocab)
            seqs = packer.pack_tables([table]) if path == "tables" else packer.pack(rows)
            return sum(1 for _ in seqs), packer.stats
        cpu, wall, (n_seq, stats) = best_of(repeats, run)
        results[name] = {"cpu_s": cpu, "wall_s": wall, "sequences": n_seq, "tokens_per_s": n_tokens / cpu,
                         "pad_fraction": stats.pad_tokens / max(stats.tokens, 1),
                         "speedup_vs_hf": hf_cpu / cpu}
    return {"docs": n_docs, "mean_len": mean_len, "input_tokens": n_tokens, "results": results}


def end_to_end(n_docs: int, mean_len: int, length: int, text_vocab: int, repeats: int) -> dict:
    """Token tables on disk -> shard set on disk, as `trimodal pack` runs it (CPU and wall)."""
    vocab = Vocab.from_sizes(text_vocab)
    docs = synthetic_docs(n_docs, mean_len, text_vocab, seed=0)
    n_tokens = int(sum(d.size for d in docs)) + 2 * len(docs)
    with tempfile.TemporaryDirectory() as tmp:
        tables = []
        for t, part in enumerate(np.array_split(np.arange(n_docs), 4)):
            path = f"{tmp}/tables/t{t}.parquet"
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            write_table([TokenRow(f"d{i}", "synthetic", "text", docs[i]) for i in part.tolist()], path)
            tables.append(path)
        runs = iter(range(repeats))

        def run():
            out = f"{tmp}/out{next(runs)}"
            return pack_tables(tables, Packer(PackerConfig(length=length), vocab), out, WriterConfig())
        cpu, wall, sets = best_of(repeats, run)
    return {"docs": n_docs, "mean_len": mean_len, "input_tokens": n_tokens, "cpu_s": cpu, "wall_s": wall,
            "sequences": sum(s["samples"] for s in sets), "tokens_per_s": n_tokens / cpu,
            "tokens_per_s_wall": n_tokens / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--mean-len", type=int, nargs="+", default=[256, 64])
    ap.add_argument("--length", type=int, default=2048)
    ap.add_argument("--text-vocab", type=int, default=32000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "packing.json"))
    args = ap.parse_args()

    scenarios = [scenario(args.docs, m, args.length, args.text_vocab, args.repeats) for m in args.mean_len]
    e2e = end_to_end(args.docs, args.mean_len[0], args.length, args.text_vocab, args.repeats)
    headline = scenarios[0]["results"]["trimodal_tables_cross"]["speedup_vs_hf"]
    report = {"question": "packed tokens/s: trimodal packer vs HF group_texts (CPU time, one thread)",
              "length": args.length, "repeats": args.repeats,
              "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
              "numpy": np.__version__, "scenarios": scenarios, "end_to_end": e2e,
              "goal": f"speedup_vs_hf >= 10 for trimodal_tables_cross at mean_len {args.mean_len[0]}",
              "goal_met": headline >= 10}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    for sc in scenarios:
        print(f"\n{sc['docs']} docs, mean length {sc['mean_len']}, {sc['input_tokens']:,} tokens, "
              f"L={args.length}, best of {args.repeats}\n")
        print("| packer | CPU s | wall s | Mtokens/s (CPU) | sequences | pad % | speedup vs HF |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, r in sc["results"].items():
            print(f"| {name} | {r['cpu_s']:.3f} | {r['wall_s']:.3f} | {r['tokens_per_s'] / 1e6:.1f} | "
                  f"{r['sequences']} | {100 * r.get('pad_fraction', 0):.2f} | {r['speedup_vs_hf']:.1f}x |")
    print(f"\nend to end (`trimodal pack`: parquet token tables -> shard set): {e2e['tokens_per_s'] / 1e6:.1f} "
          f"Mtokens/s CPU, {e2e['tokens_per_s_wall'] / 1e6:.1f} wall")


if __name__ == "__main__":
    main()
