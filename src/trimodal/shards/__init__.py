"""WebDataset shards of packed sequences: writer, manifest, streaming reader, verification."""

from trimodal.shards.manifest import Manifest, ShardEntry, ShardError, read_manifest
from trimodal.shards.batch import Batch, RawBatch
from trimodal.shards.loader import Collate, ShardLoader, collate, make_loader
from trimodal.shards.reader import ReaderConfig, ShardDataset, ShardSample, Source
from trimodal.shards.writer import ShardWriter, WriterConfig, write_shards

__all__ = [
    "Batch", "Collate", "Manifest", "RawBatch", "ReaderConfig", "ShardDataset", "ShardEntry", "ShardError",
    "ShardLoader", "ShardSample", "ShardWriter", "Source", "WriterConfig", "collate",
    "make_loader", "read_manifest", "write_shards",
]
