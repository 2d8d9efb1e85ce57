"""`trimodal pack`: token tables -> packed sequences -> shard sets (one per task and source)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pack", help="pack token tables into fixed-length sequences and write shards",
                       description="Token tables -> packed sequences -> one shard set per (task, "
                       "source) under OUT/<task>/<source>/, listed in OUT/sets.json.")
    p.add_argument("--tables", required=True, action="append",
                   help="folder of *.parquet token tables, a glob, or one file (repeatable)")
    p.add_argument("--vocab", required=True, help="vocab.json of this run")
    p.add_argument("--out", required=True, help="output folder URL (local, s3://, memory://, ...)")
    p.add_argument("--length", type=int, required=True, help="sequence length L")
    p.add_argument("--mode", choices=["pack", "pad"], default="pack",
                   help="pack: text documents share sequences; pad: one document per sequence")
    p.add_argument("--no-cross-boundaries", action="store_true",
                   help="pack mode: start a document on a new sequence when it does not fit")
    p.add_argument("--overflow", choices=["truncate_text", "drop"], default="truncate_text",
                   help="what to do with a pair longer than L")
    p.add_argument("--audio-codebooks", type=int, default=0, help="codebooks kept per frame (0: all)")
    p.add_argument("--shard-samples", type=int, default=10_000, help="max samples per shard")
    p.add_argument("--shard-bytes", type=int, default=None, help="max bytes per shard")
    p.add_argument("--overwrite", action="store_true", help="replace existing shard sets")
    p.set_defaults(run=run, stage=p.prog)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from trimodal.io import atomic_write_json
    from trimodal.packing.packer import Packer, PackerConfig
    from trimodal.packing.vocab import Vocab
    from trimodal.shards.pack import list_tables, pack_tables
    from trimodal.shards.writer import WriterConfig

    vocab = Vocab.load(args.vocab)
    packer_cfg = PackerConfig(length=args.length, mode=args.mode, cross_boundaries=not args.no_cross_boundaries,
                              overflow=args.overflow, audio_codebooks=args.audio_codebooks)
    writer_cfg = WriterConfig(max_samples=args.shard_samples, max_bytes=args.shard_bytes, overwrite=args.overwrite)
    tables = list_tables(args.tables)
    packer = Packer(packer_cfg, vocab)
    sets = pack_tables(tables, packer, args.out, writer_cfg,
                       run_config={"packer": asdict(packer_cfg), "tables": tables})
    atomic_write_json(args.out.rstrip("/") + "/pack_stats.json", packer.stats.as_dict(), indent=2, sort_keys=True)
    for s in sets:
        print(f"{s['url']}: {s['samples']} sequences, {s['tokens']} tokens "
              f"({100.0 * s['pad_tokens'] / max(s['tokens'], 1):.1f}% pad), task={s['task']}")
    return 0 if sets else 1
