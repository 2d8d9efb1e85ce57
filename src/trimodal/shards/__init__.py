"""WebDataset shards of packed sequences: writer, manifest, streaming reader, verification."""

from trimodal.shards.manifest import Manifest, ShardEntry, ShardError, read_manifest
from trimodal.shards.reader import (Batch, Collate, RawBatch, ReaderConfig, ShardDataset, ShardLoader,
                                    ShardSample, Source, collate, make_loader)
from trimodal.shards.writer import ShardWriter, WriterConfig, write_shards

__all__ = [
    "Batch", "Collate", "Manifest", "RawBatch", "ReaderConfig", "ShardDataset", "ShardEntry", "ShardError",
    "ShardLoader", "ShardSample", "ShardWriter", "Source", "WriterConfig", "collate",
    "make_loader", "read_manifest", "write_shards",
]
