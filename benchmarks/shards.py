"""How close does the shard reader get to just reading the tar bytes?

One run writes synthetic shards, then times, on the same files, first from the page cache
("warm": the raw read is then a memory copy) and then from the disk ("cold": each run starts
with the shards evicted from the page cache by posix_fadvise(DONTNEED), no root needed):

* `raw_read`: every byte of the tar files read in 1 MiB chunks, nothing else. The limit for
  any reader, and the baseline of the goal (ratio 1.0).
* `tarfile_members`: stock `tarfile` iterating the members and reading their bytes: what any
  tar reader built on the standard library must at least do.
* `webdataset_no_decode`: stock `webdataset.WebDataset` grouping members into samples, no
  decode (for context: a general-purpose tar sample reader).
* `reader_N_workers`: our reader through `make_loader` (tar index, vocabulary check, shuffle
  window, mixing draw, batches of [B, L] int64 tokens handed to the trainer) with 0, 1 and 2
  DataLoader workers (whole pass; `_steady` leaves out the wait for the first batch, i.e.
  worker start-up). Modality ids and the pad mask are derived lazily (the trainer does its
  own lookup on the device); `reader_0_workers_all_fields` touches them too.
* `raw_read_cold`, `reader_N_workers_cold`: the same from the disk; their ratios are against
  `raw_read_cold`.

And the parts that bound the reader (see docs/shards.md, "Reader throughput"):

* `worker_side`: the batches a worker makes, in-process (index + draws + row copy), no IPC.
* `open_shards`: mapping the shard files (mmap with MAP_POPULATE), nothing else.
* `ipc_floor`: one DataLoader worker handing over what the reader hands over (groups of
  batches of keys, lazy meta blob, state; tokens stay in the shared ring) with no token work.
* `row_copy`: only the copy of shuffled rows from mapped, indexed shards into a [B, L] batch:
  the floor of any reader that hands out shuffled batches.
* `pread_rows`: the same rows read straight into the batch with one pread each (one copy
  instead of map + copy).
* `dataloader_worker_startup_s`: seconds until a DataLoader with one worker hands over a
  trivial first item (a fixed cost of every pass with workers).

Rates are tokens/s (L tokens per sample); ratios are against `raw_read` (`_cold`: `raw_read_cold`). Each figure is the
best of --repeats runs; `spread` is (median - best) / best. Goal: reader_1_workers >= 0.5x.

    flock /tmp/bench.lock python benchmarks/shards.py [--samples 16000] [--length 2048]

Prints JSON and a markdown table; writes benchmarks/results/shards.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from trimodal.packing.layout import PackedSequence
from trimodal.packing.vocab import Vocab
from trimodal.shards import ReaderConfig, ShardDataset, WriterConfig, make_loader, write_shards
from trimodal.shards.batch import JsonRows, RawBatch
from trimodal.shards.loader import batches_per_item
from trimodal.shards.reader import _open_shard
from trimodal.shards.tario import TokenDecoder, index_shard


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


def drop_cache(paths: list[str]) -> None:
    """Evict the shards from the page cache (clean pages of our own files: no root needed), so
    the next read comes from the disk. Files must be synced first (dirty pages stay)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cold(paths: list[str], fn: Callable[[], float]) -> Callable[[], float]:
    def run() -> float:
        drop_cache(paths)
        return fn()
    return run


def tarfile_members(paths: list[str]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        with tarfile.open(p) as tar:
            for m in tar:
                if m.isfile():
                    tar.extractfile(m).read()
    return time.perf_counter() - t0


def webdataset_no_decode(paths: list[str]) -> float:
    import webdataset as wds
    t0 = time.perf_counter()
    for _ in wds.WebDataset(paths, shardshuffle=False):
        pass
    return time.perf_counter() - t0


def open_shards(paths: list[str]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        _open_shard(p)
    return time.perf_counter() - t0


def reader_pass(url: str, vocab: Vocab, length: int, batch_size: int, workers: int, buffer: int,
                expect: int, all_fields: bool = False) -> tuple[float, float]:
    """(whole pass, steady state): the second leaves out the wait for the first batch (worker
    start-up and the first shard), scaled to the whole pass's sample count."""
    ds = ShardDataset([url], vocab, length, ReaderConfig(seed=0, shuffle_buffer=buffer))
    loader = make_loader(ds, batch_size=batch_size, num_workers=workers, pin_memory=False)
    t0 = time.perf_counter()
    n = 0
    t_first = None
    for batch in loader:
        n += batch.tokens.numel()
        if all_fields:
            batch.modality, batch.pad_mask, list(batch.tasks)
        if t_first is None:
            t_first, n_first = time.perf_counter(), n
    t_end = time.perf_counter()
    assert n == expect, (n, expect)
    return t_end - t0, (t_end - t_first) * n / (n - n_first)


def row_copy(paths: list[str], vocab: Vocab, length: int, batch_size: int, seed: int = 0) -> float:
    """Only the copy of shuffled rows from the mapped shards into a [B, L] batch (shards mapped
    and indexed beforehand): the floor of any reader that hands out shuffled batches."""
    decoder = TokenDecoder(length, vocab.size)
    indexes = [index_shard(_open_shard(p), p, decoder, check_ranges=False) for p in paths]
    out = np.empty((batch_size, length), dtype=np.int32)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for index in indexes:
        refs = [index.samples[i] for i in rng.permutation(len(index.samples)).tolist()]
        for b in range(0, len(refs), batch_size):
            for r, (arr, start, _, _, _, _) in enumerate(refs[b:b + batch_size]):
                out[r] = arr[start:start + length]
    return time.perf_counter() - t0


def pread_rows(paths: list[str], vocab: Vocab, length: int, batch_size: int, seed: int = 0) -> float:
    """Shuffled rows read straight into a [B, L] batch, one pread per row (offsets from the
    index, made beforehand): the one-copy alternative to mapping the shard and copying rows."""
    decoder = TokenDecoder(length, vocab.size)
    starts = [[ref[1] * 4 for ref in index_shard(_open_shard(p), p, decoder, check_ranges=False).samples]
              for p in paths]
    out = np.empty((batch_size, length), dtype=np.int32)
    rows = [memoryview(out[r]) for r in range(batch_size)]
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for path, offsets in zip(paths, starts):
        fd = os.open(path, os.O_RDONLY)
        try:
            order = [offsets[i] for i in rng.permutation(len(offsets)).tolist()]
            for b in range(0, len(order), batch_size):
                for r, offset in enumerate(order[b:b + batch_size]):
                    os.preadv(fd, [rows[r]], offset)
        finally:
            os.close(fd)
    return time.perf_counter() - t0


class _One(IterableDataset):
    def __iter__(self):
        yield 0


def worker_startup() -> float:
    """Seconds until a DataLoader with one worker hands over its first (trivial) item."""
    t0 = time.perf_counter()
    next(iter(DataLoader(_One(), batch_size=None, num_workers=1)))
    return time.perf_counter() - t0


def worker_side(url: str, vocab: Vocab, length: int, batch_size: int, buffer: int) -> float:
    ds = ShardDataset([url], vocab, length, ReaderConfig(seed=0, shuffle_buffer=buffer))
    t0 = time.perf_counter()
    for _ in ds.iter_raw_batches(batch_size):
        pass
    return time.perf_counter() - t0


class _Messages(IterableDataset):
    """The reader's hand-overs (groups of batches_per_item batches) without the token work
    (tokens would be in the shared ring)."""

    def __init__(self, n: int, batch_size: int):
        super().__init__()
        self.n, self.batch_size = n, batch_size

    def __iter__(self):
        B = self.batch_size
        keys = [f"shard-000000_{i:07d}" for i in range(B)]
        meta = JsonRows.of([b'{"task":"text","spans":[["text",0,2048]],"keys":["doc1"]}'] * B)
        k = batches_per_item(B)
        for i in range(0, self.n, k):
            yield [RawBatch(None, [], keys, ["set"] * B, meta, (0, j, ((0, j, 0),), 0), (0, j, B), k - 1 - (j - i))
                   for j in range(i, min(i + k, self.n))]


def ipc_floor(batches: int, batch_size: int) -> float:
    """Seconds to hand over `batches` batches after the first hand-over (worker start-up)."""
    loader = DataLoader(_Messages(batches + batches_per_item(batch_size), batch_size), batch_size=None,
                        num_workers=1, collate_fn=lambda x: x)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    for _ in it:
        pass
    return time.perf_counter() - t0


def best_of(fn: Callable[[], float], repeats: int) -> tuple[float, float]:
    times = sorted(fn() for _ in range(repeats))
    return times[0], (statistics.median(times) - times[0]) / times[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=16000)
    ap.add_argument("--length", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--shard-samples", type=int, default=1000)
    ap.add_argument("--shuffle-buffer", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "shards.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    vocab = Vocab.from_sizes(32000, 16384, 1024, 4)
    R = args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        url = os.path.join(tmp, "set")
        m = write_shards(synthetic(vocab, args.samples, args.length, 0), url, vocab, args.length,
                         "pack", WriterConfig(max_samples=args.shard_samples))
        paths = [os.path.join(url, s.name) for s in m.shards]
        total_tokens, total_bytes = m.total_tokens, sum(s.bytes for s in m.shards)
        raw_read(paths)  # warm the page cache
        B = args.batch_size
        runs: dict[str, tuple[float, float]] = {
            "raw_read": best_of(lambda: raw_read(paths), max(R, 5)),
            "tarfile_members": best_of(lambda: tarfile_members(paths), R),
            "webdataset_no_decode": best_of(lambda: webdataset_no_decode(paths), R),
        }
        passes = [("reader_0_workers", 0, B, False), ("reader_1_workers", 1, B, False),
                  ("reader_2_workers", 2, B, False), ("reader_0_workers_all_fields", 0, B, True),
                  (f"reader_1_workers_batch_{4 * B}", 1, 4 * B, False)]
        for name, w, bs, all_fields in passes:
            got = [reader_pass(url, vocab, args.length, bs, w, args.shuffle_buffer, total_tokens, all_fields)
                   for _ in range(R)]
            for suffix, times in (("", [g[0] for g in got]), ("_steady", [g[1] for g in got])):
                if suffix and not w:
                    continue  # no workers: nothing to start, the two are the same
                times.sort()
                runs[name + suffix] = times[0], (statistics.median(times) - times[0]) / times[0]
        # From the disk: each run starts with the shards evicted from the page cache.
        os.sync()
        runs["raw_read_cold"] = best_of(cold(paths, lambda: raw_read(paths)), R)
        for name, w in (("reader_0_workers_cold", 0), ("reader_1_workers_cold", 1)):
            runs[name] = best_of(cold(paths, lambda: reader_pass(
                url, vocab, args.length, B, w, args.shuffle_buffer, total_tokens)[0]), R)
        runs["worker_side"] = best_of(lambda: worker_side(url, vocab, args.length, B, args.shuffle_buffer), R)
        runs["open_shards"] = best_of(lambda: open_shards(paths), R)
        runs["row_copy"] = best_of(lambda: row_copy(paths, vocab, args.length, B), R)
        runs["pread_rows"] = best_of(lambda: pread_rows(paths, vocab, args.length, B), R)
        startup = best_of(worker_startup, R)
        n_batches = -(-args.samples // B)
        runs["ipc_floor"] = best_of(lambda: ipc_floor(n_batches, B), R)

    def baseline(name: str) -> str:
        return "raw_read_cold" if name.endswith("_cold") else "raw_read"

    results = {name: {"seconds": t, "spread": spread, "tokens_per_s": total_tokens / t,
                      "MB_per_s": total_bytes / t / 1e6, "us_per_sample": t / args.samples * 1e6,
                      "ratio": runs[baseline(name)][0] / t, "baseline": baseline(name)}
               for name, (t, spread) in runs.items()}
    report = {"benchmark": "shards", "samples": args.samples, "length": args.length,
              "batch_size": B, "shard_samples": args.shard_samples,
              "shuffle_buffer": args.shuffle_buffer, "repeats": R, "tar_bytes": total_bytes,
              "tokens": total_tokens, "cpu_count": os.cpu_count(),
              "load_avg_1min": os.getloadavg()[0], "python": platform.python_version(),
              "torch": torch.__version__, "results": results,
              "dataloader_worker_startup_s": startup[0],
              "goal": "reader_1_workers ratio >= 0.5",
              "goal_met": results["reader_1_workers"]["ratio"] >= 0.5,
              "goal_met_steady": results["reader_1_workers_steady"]["ratio"] >= 0.5,
              "goal_met_cold": results["reader_1_workers_cold"]["ratio"] >= 0.5}
    print(json.dumps(report, indent=2))
    print()
    print("| what | tokens/s | MB/s | us/sample | x raw read | of | spread |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['tokens_per_s']:.3g} | {r['MB_per_s']:.0f} | {r['us_per_sample']:.2f} | "
              f"{r['ratio']:.3f} | {r['baseline']} | {r['spread']:.0%} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
