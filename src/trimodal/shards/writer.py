"""Packed sequences -> WebDataset tar shards + manifest.json + vocab.json on any fsspec URL.

Every shard is written under a hidden temporary name (`.shard-000003.tar.<id>.tmp`, see
`trimodal.io`) and
renamed to `shard-000003.tar` only once complete, so a crash never leaves a partial `.tar`
that a glob or a reader could pick up. The manifest is written last: a folder without one is
an unfinished write, whose shards and temp files the next write of that folder removes first
(an overwrite removes the old manifest before anything else). On object stores the rename is
a copy; correctness over speed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterable

import fsspec
import numpy as np

from trimodal.io import AtomicFile
from trimodal.packing.layout import PackedSequence
from trimodal.packing.vocab import Vocab
from trimodal.shards.manifest import (MANIFEST_NAME, VOCAB_NAME, Manifest, ShardEntry,
                                      ShardError, join_url, write_manifest)
from trimodal.shards.tario import TokenDecoder, archive_end, encode_meta, member_bytes

log = logging.getLogger(__name__)


@dataclass
class WriterConfig:
    #: Close a shard after this many samples ...
    max_samples: int = 10_000
    #: ... or once it holds this many bytes (whichever comes first; None = no byte limit).
    max_bytes: int | None = None
    prefix: str = "shard"
    #: Refuse to write into a folder that already holds a manifest unless True.
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.max_samples < 1:
            raise ShardError(f"WriterConfig.max_samples must be >= 1, got {self.max_samples}")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ShardError(f"WriterConfig.max_bytes must be >= 1 or None, got {self.max_bytes}")
        if not self.prefix or "/" in self.prefix or "." in self.prefix:
            raise ShardError(f"WriterConfig.prefix must be a plain name without '/' or '.', got {self.prefix!r}")


class _HashingSink:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self._f.write(data)
        return len(data)


@dataclass
class _OpenShard:
    name: str
    target: AtomicFile
    sink: _HashingSink
    samples: int = 0
    pad_tokens: int = 0
    tasks: dict[str, int] = field(default_factory=dict)


class ShardWriter:
    """Write packed sequences into shards; use as a context manager.

    >>> with ShardWriter("s3://bucket/text", vocab, length=2048, mode="pack") as w:
    ...     for seq in sequences:
    ...         w.write(seq)
    >>> w.manifest.total_samples

    Sequences with the wrong length or ids outside the vocabulary raise ShardError: they come
    from our own packer, so they are a bug to fix, not bad data to skip.
    """

    def __init__(self, url: str, vocab: Vocab, length: int, mode: str,
                 config: WriterConfig | None = None, run_config: dict[str, Any] | None = None):
        if length < 1:
            raise ShardError(f"sequence length must be >= 1, got {length}")
        self.url = str(url).rstrip("/")
        self.vocab = vocab
        self.length = length
        self.mode = mode
        self.config = config or WriterConfig()
        self.run_config = dict(run_config or {})
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        manifest_path = self.root + "/" + MANIFEST_NAME
        if self.fs.exists(manifest_path):
            if not self.config.overwrite:
                raise ShardError(f"{self.url}: already holds a shard set (manifest.json); "
                                 "pass overwrite=True (--overwrite) to replace it")
            # The old manifest goes first: should this write die, the folder must read as
            # unfinished, not as the old set's manifest over a mix of old and new shards.
            self.fs.rm(manifest_path)
        self.fs.makedirs(self.root, exist_ok=True)
        self._remove_leftovers()
        self._entries: list[ShardEntry] = []
        self._tasks: dict[str, dict[str, int]] = {}
        self._sources: dict[str, dict[str, int]] = {}
        self._shard: _OpenShard | None = None
        self._npy_header = TokenDecoder(length, vocab.size).header
        self._closed = False
        self.manifest: Manifest | None = None

    # --- public ---------------------------------------------------------------------------
    def write(self, seq: PackedSequence) -> None:
        if self._closed:
            raise ShardError(f"{self.url}: writer is closed")
        tokens = np.asarray(seq.tokens)
        where = f"{self.url}: sequence {list(seq.keys)[:3]}"
        if tokens.shape != (self.length,):
            raise ShardError(f"{where} has shape {tokens.shape}, expected ({self.length},)")
        if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab.size):
            raise ShardError(f"{where} holds ids outside the vocabulary [0, {self.vocab.size})")
        shard = self._shard or self._open_shard()
        key = f"{shard.name.split('.')[0]}_{shard.samples:07d}"
        # np.save's bytes: the (fixed) npy header, then the little-endian int32 payload
        npy = self._npy_header + tokens.astype("<i4", copy=False).tobytes()
        for name, data in ((f"{key}.tokens.npy", npy), (f"{key}.meta.json", encode_meta(seq))):
            write_member(shard, name, data)
        shard.samples += 1
        shard.pad_tokens += int(seq.pad_count)
        shard.tasks[seq.task] = shard.tasks.get(seq.task, 0) + 1
        for table, name in ((self._tasks, seq.task), (self._sources, seq.source)):
            c = table.setdefault(name, {"samples": 0, "tokens": 0, "pad_tokens": 0})
            c["samples"] += 1
            c["tokens"] += self.length
            c["pad_tokens"] += int(seq.pad_count)
        full = shard.samples >= self.config.max_samples or (
            self.config.max_bytes is not None and shard.sink.size >= self.config.max_bytes)
        if full:
            self._finish_shard()

    def write_all(self, seqs: Iterable[PackedSequence]) -> None:
        for seq in seqs:
            self.write(seq)

    def close(self) -> Manifest:
        """Finish the last shard and write manifest.json and vocab.json."""
        if self._closed:
            assert self.manifest is not None
            return self.manifest
        if self._shard is not None:
            self._finish_shard()
        self.vocab.save(join_url(self.url, VOCAB_NAME))
        manifest = Manifest(
            vocab_hash=self.vocab.hash, vocab_size=self.vocab.size, length=self.length,
            mode=self.mode, shards=self._entries, tasks=self._tasks, sources=self._sources,
            config={"writer": vars(self.config), **self.run_config},
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
        write_manifest(manifest, self.url)
        self.manifest = manifest
        self._closed = True
        log.info("wrote %d samples in %d shard(s) to %s", manifest.total_samples,
                 len(self._entries), self.url)
        return manifest

    def abort(self) -> None:
        """Drop the shard in progress (its temp file) and write no manifest."""
        if self._shard is not None:
            shard, self._shard = self._shard, None
            shard.target.discard()
            log.warning("aborted: removed unfinished shard %s (%d samples)", shard.name, shard.samples)
        self._closed = True

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # --- shards ---------------------------------------------------------------------------
    def _remove_leftovers(self) -> None:
        """Shards and temp files of an earlier write of this set that has no manifest (killed,
        or being replaced): they belong to no set, and a stock `webdataset` glob over
        `shard-*.tar` would read stale or doubled samples beside the new ones."""
        shard = rf"{re.escape(self.config.prefix)}-\d+\.tar"
        # finished shards, and temp files (trimodal.io.temp_path) of shards and the manifest
        pattern = re.compile(rf"^({shard}|\.({shard}|{re.escape(MANIFEST_NAME)})\.[0-9a-f]+\.tmp)$")
        try:
            paths = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return
        removed = [p for p in paths if pattern.match(p.rstrip("/").rsplit("/", 1)[-1])]
        for path in removed:
            self.fs.rm(path)
        if removed:
            log.info("%s: removed %d file(s) of an earlier unfinished or replaced write", self.url, len(removed))

    def _open_shard(self) -> _OpenShard:
        name = f"{self.config.prefix}-{len(self._entries):06d}.tar"
        target = AtomicFile(join_url(self.url, name))
        self._shard = _OpenShard(name, target, _HashingSink(target.file))
        return self._shard

    def _finish_shard(self) -> None:
        shard = self._shard
        assert shard is not None
        shard.sink.write(archive_end(shard.sink.size))
        shard.target.commit()
        self._entries.append(ShardEntry(
            name=shard.name, samples=shard.samples, tokens=shard.samples * self.length,
            pad_tokens=shard.pad_tokens, bytes=shard.sink.size, sha256=shard.sink.sha.hexdigest(),
            tasks=dict(shard.tasks)))
        log.debug("finished %s: %d samples, %d bytes", shard.name, shard.samples, shard.sink.size)
        self._shard = None


def write_member(shard: _OpenShard, name: str, data: bytes) -> None:
    """Append one tar member to the shard in progress."""
    shard.sink.write(member_bytes(name, data))


def write_shards(seqs: Iterable[PackedSequence], url: str, vocab: Vocab, length: int, mode: str,
                 config: WriterConfig | None = None,
                 run_config: dict[str, Any] | None = None) -> Manifest:
    """One-call form of ShardWriter."""
    with ShardWriter(url, vocab, length, mode, config, run_config) as w:
        w.write_all(seqs)
    assert w.manifest is not None
    return w.manifest
