"""Token tables -> packer -> one shard set per (task, source): the body of `trimodal pack`.

One shard set per (task, source) rather than one for everything, because mixing ratios are
chosen at training time: the reader weights shard sets, so each unit one might want to weigh
separately needs its own set. `sets.json` at the top lists them for the trainer.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Iterable, Iterator, Protocol

import fsspec
import pyarrow as pa
from tqdm import tqdm

from trimodal.io import atomic_write_json
from trimodal.packing.layout import PackedSequence
from trimodal.packing.table import read_arrow
from trimodal.shards.manifest import MANIFEST_NAME, ShardError, join_url
from trimodal.shards.writer import ShardWriter, WriterConfig

log = logging.getLogger(__name__)

SETS_NAME = "sets.json"


class _Packer(Protocol):
    config: Any
    vocab: Any

    def pack_tables(self, tables: Iterable[pa.Table]) -> Iterator[PackedSequence]: ...


def list_tables(specs: Iterable[str]) -> list[str]:
    """Folders (their *.parquet), globs and files -> a sorted, de-duplicated list of URLs."""
    out: list[str] = []
    for spec in specs:
        fs, path = fsspec.core.url_to_fs(spec)
        protocol = spec.split("://", 1)[0] + "://" if "://" in spec else ""
        if any(c in path for c in "*?["):
            found = fs.glob(path)
        elif fs.isdir(path):
            found = fs.glob(path.rstrip("/") + "/**/*.parquet")
        elif fs.exists(path):
            found = [path]
        else:
            raise ShardError(f"--tables {spec}: no such file or folder")
        if not found:
            raise ShardError(f"--tables {spec}: no token tables (*.parquet) found")
        out.extend(protocol + p if protocol and not p.startswith(protocol) else p for p in found)
    return sorted(set(out))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "default"


def _tables(tables: list[str], skipped: list[str]) -> Iterator[pa.Table]:
    """The readable token tables as Arrow (the packer takes their columns whole: no Python
    object per token); an unreadable one is logged and listed in sets.json."""
    for url in tqdm(tables, desc="token tables", unit="table", disable=len(tables) < 2):
        try:
            table = read_arrow(url)
        except Exception as err:  # noqa: BLE001 - one unreadable table must not end the job
            log.warning("%s: skipped, unreadable token table (%s)", url, err)
            skipped.append(url)
            continue
        yield table


def pack_tables(tables: list[str], packer: _Packer, out: str, writer_config: WriterConfig,
                run_config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Pack `tables` and write OUT/<task>/<source>/ shard sets; returns the sets.json rows."""
    out = out.rstrip("/")
    length = int(packer.config.length)
    mode = str(packer.config.mode)
    writers: dict[tuple[str, str], ShardWriter] = {}
    skipped: list[str] = []
    try:
        for seq in tqdm(packer.pack_tables(_tables(tables, skipped)), desc="packing", unit="seq"):
            group = (seq.task, seq.source)
            w = writers.get(group)
            if w is None:
                url = join_url(out, f"{_safe(seq.task)}/{_safe(seq.source)}")
                cfg = {**(run_config or {}), "task": seq.task, "source": seq.source}
                w = writers[group] = ShardWriter(url, packer.vocab, length, mode, writer_config, cfg)
            w.write(seq)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    sets = []
    for (task, source), w in sorted(writers.items()):
        m = w.close()
        sets.append({"url": w.url, "path": w.url[len(out) + 1:], "task": task, "source": source,
                     "samples": m.total_samples, "tokens": m.total_tokens,
                     "pad_tokens": sum(s.pad_tokens for s in m.shards), "shards": len(m.shards)})
    if skipped:
        log.warning("%d token table(s) skipped as unreadable: %s", len(skipped), skipped[:5])
    # Atomic: a kill mid-write must not leave a truncated listing behind.
    atomic_write_json(join_url(out, SETS_NAME),
                      {"length": length, "mode": mode, "vocab_hash": packer.vocab.hash,
                       "skipped_tables": skipped,
                       "sets": [{k: v for k, v in s.items() if k != "url"} for s in sets]},
                      indent=2, sort_keys=True)
    return sets


def expand_sets(path: str) -> list[str]:
    """A shard set stays itself; a `trimodal pack` output folder becomes its shard sets."""
    path = str(path).rstrip("/")
    if path.endswith(".json") and not path.endswith(SETS_NAME):
        return [path]
    fs, fs_path = fsspec.core.url_to_fs(path)
    if not path.endswith(SETS_NAME) and fs.exists(fs_path + "/" + MANIFEST_NAME):
        return [path]
    sets_url = path if path.endswith(SETS_NAME) else join_url(path, SETS_NAME)
    root = sets_url[: -len(SETS_NAME)].rstrip("/")
    try:
        with fsspec.open(sets_url, "r") as f:
            listing = json.load(f)
    except FileNotFoundError:
        raise ShardError(f"{path}: neither a shard set (manifest.json) nor a pack output (sets.json)") from None
    return [join_url(root, s["path"]) for s in listing["sets"]]
