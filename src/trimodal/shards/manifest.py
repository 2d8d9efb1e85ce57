"""`manifest.json`: what a shard set holds, and the check that it fits the run reading it.

The manifest is written last, after every shard has been renamed into place, so a shard set
with a manifest is complete by construction. Readers trust it for the layout (which shards,
how many samples each) and check it against the run (vocabulary hash, sequence length),
because training on ids from another vocabulary fails silently and can't be undone.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

import fsspec

from trimodal import __version__
from trimodal.errors import UserError
from trimodal.io import atomic_write_json
from trimodal.packing.vocab import Vocab

MANIFEST_NAME = "manifest.json"
VOCAB_NAME = "vocab.json"
FORMAT = "trimodal-shards"
FORMAT_VERSION = 1


class ShardError(UserError, ValueError):
    """A shard set is missing, malformed or made for another run; the message names it."""


@dataclass
class ShardEntry:
    """One tar shard as recorded in the manifest."""

    name: str  # relative to the manifest's folder
    samples: int
    tokens: int  # samples * L (PAD included)
    pad_tokens: int
    bytes: int
    sha256: str
    tasks: dict[str, int] = field(default_factory=dict)  # samples per task


@dataclass
class Manifest:
    vocab_hash: str
    vocab_size: int
    length: int
    mode: str  # "pack" | "pad" (or whatever the packer calls its mode)
    shards: list[ShardEntry]
    #: per task: {"samples": n, "tokens": n*L, "pad_tokens": p}
    tasks: dict[str, dict[str, int]] = field(default_factory=dict)
    #: per source name (the `source` of the packed sequences): same counts as tasks
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    version: str = __version__
    created: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    #: Where it was read from (not stored); shard names resolve against its folder.
    url: str = ""

    @property
    def root(self) -> str:
        return posixpath.dirname(self.url) if self.url else ""

    def shard_url(self, entry: ShardEntry) -> str:
        return join_url(self.root, entry.name)

    @property
    def total_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def total_tokens(self) -> int:
        return sum(s.tokens for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "format_version": self.format_version,
            "version": self.version, "created": self.created,
            "vocab_hash": self.vocab_hash, "vocab_size": self.vocab_size,
            "length": self.length, "mode": self.mode,
            "totals": {"samples": self.total_samples, "tokens": self.total_tokens,
                       "pad_tokens": sum(s.pad_tokens for s in self.shards),
                       "shards": len(self.shards)},
            "tasks": self.tasks, "sources": self.sources, "config": self.config,
            "shards": [vars(s) for s in self.shards],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], url: str = "") -> "Manifest":
        where = url or "manifest"
        try:
            if d.get("format") != FORMAT:
                raise ShardError(f"{where}: not a trimodal shard manifest (format={d.get('format')!r})")
            if int(d.get("format_version", 0)) > FORMAT_VERSION:
                raise ShardError(f"{where}: format_version {d['format_version']} is newer than "
                                 f"this trimodal understands ({FORMAT_VERSION}); upgrade trimodal")
            shards = [ShardEntry(**s) for s in d["shards"]]
            return cls(
                vocab_hash=str(d["vocab_hash"]), vocab_size=int(d["vocab_size"]),
                length=int(d["length"]), mode=str(d["mode"]), shards=shards,
                tasks=dict(d.get("tasks", {})), sources=dict(d.get("sources", {})),
                config=dict(d.get("config", {})), version=str(d.get("version", "")),
                created=str(d.get("created", "")), format=d["format"],
                format_version=int(d["format_version"]), url=url,
            )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, ShardError):
                raise
            raise ShardError(f"{where}: malformed manifest ({type(err).__name__}: {err})") from err

    def check_run(self, vocab: Vocab | None, length: int | None) -> None:
        """Refuse a shard set made for another vocabulary or sequence length."""
        first = self.shards[0].name if self.shards else "(no shards)"
        if vocab is not None and self.vocab_hash != vocab.hash:
            raise ShardError(
                f"{self.url}: shards (e.g. {first}) were made with vocabulary {self.vocab_hash}, "
                f"but this run uses {vocab.hash}; re-pack them with this run's vocab.json"
            )
        if length is not None and self.length != length:
            raise ShardError(
                f"{self.url}: shards (e.g. {first}) hold sequences of length {self.length}, "
                f"but this run uses L={length}"
            )


def join_url(root: str, name: str) -> str:
    """Join without os.path, so s3:// and memory:// URLs keep their form."""
    if not root:
        return name
    return root.rstrip("/") + "/" + name


def manifest_url(path: str) -> str:
    """A shard-set folder or a manifest file URL -> the manifest file URL."""
    path = str(path)
    if path.endswith(".json"):
        return path
    return join_url(path, MANIFEST_NAME)


def read_manifest(path: str) -> Manifest:
    url = manifest_url(path)
    try:
        with fsspec.open(url, "r") as f:
            data = json.load(f)
    except FileNotFoundError as err:
        raise ShardError(f"{url}: no manifest.json (not a shard set, or its write never finished)") from err
    except json.JSONDecodeError as err:
        raise ShardError(f"{url}: manifest is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ShardError(f"{url}: manifest is not a JSON object")
    return Manifest.from_dict(data, url=url)


def write_manifest(manifest: Manifest, root: str) -> str:
    """Write manifest.json atomically (temp name, then rename) under `root`; returns its URL."""
    url = join_url(root, MANIFEST_NAME)
    atomic_write_json(url, manifest.to_dict(), indent=2, sort_keys=True)
    manifest.url = url
    return url
