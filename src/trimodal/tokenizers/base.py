"""The one protocol every trimodal tokenizer (text, image, audio) follows.

Contract
--------
- ``name: str``        short, stable identifier of the tokenizer family/config
                       (e.g. ``"sentencepiece-bpe-32000"``, ``"movq-16x16-8192"``, ``"dac-44k-4q"``).
- ``hash: str``        :func:`content_hash` of the bytes that define the tokenizer (the model
                       proto, the weights file as saved). It must be identical before a save and
                       after a load of that save, because token tables, vocabularies and shards
                       record it and a mismatch is treated as an error downstream.
- ``vocab_size: int``  number of local ids per code position (audio: per codebook). Local ids are
                       ``0 .. vocab_size-1``; the unified vocabulary adds offsets and specials
                       (BOS/EOS/MASK/PAD/TASK are *never* produced by a tokenizer).
- ``save(path)``       write everything needed to rebuild it to one fsspec path.
- ``load(path)``       classmethod: rebuild from what ``save`` wrote (no pickle of untrusted data:
                       ``torch.load(..., weights_only=True)`` / safetensors / plain protos).
- ``encode(batch)``    a list (or batched tensor) of inputs -> a list of integer ``np.ndarray``
                       of local ids, one per input, same order.
- ``decode(batch)``    the inverse direction: a list of id arrays -> a list of outputs.

Training is a module-level function (or classmethod) per tokenizer, not part of the protocol,
because what it needs (a text iterator, an image loader, a GPU) differs too much to share.
"""

from __future__ import annotations

import hashlib
from typing import IO, Any, Protocol, Sequence, TypeVar, runtime_checkable

import numpy as np
import torch

from trimodal.config import ConfigError

T = TypeVar("T", bound="Tokenizer")

#: Length (hex characters) of content hashes; matches the vocabulary hash length.
HASH_CHARS = 16


def content_hash(data: bytes | Sequence[bytes]) -> str:
    """sha256 over the saved bytes (several blobs are hashed in order, length-prefixed so that
    moving a byte from one blob to the next changes the hash), truncated to ``HASH_CHARS``."""
    h = hashlib.sha256()
    blobs = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
    for blob in blobs:
        blob = bytes(blob)
        h.update(len(blob).to_bytes(8, "little"))
        h.update(blob)
    return h.hexdigest()[:HASH_CHARS]


def load_weights_only(f: IO[bytes], where: str, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(weights_only=True)` of an open file: tensors and plain containers only, so a
    malicious pickle is refused instead of run. Every refusal or unreadable file is a
    ConfigError naming `where`, the same for tokenizer files and training checkpoints."""
    try:
        return torch.load(f, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ConfigError(f"{where}: refused or unreadable checkpoint (loaded with weights_only=True, "
                          f"which allows only tensors and plain containers): {err}") from err


@runtime_checkable
class Tokenizer(Protocol):
    """What jobs, metrics and the CLI may rely on; see the module docstring for the contract."""

    name: str
    hash: str
    vocab_size: int

    def save(self, path: str) -> None: ...

    @classmethod
    def load(cls: type[T], path: str) -> T: ...

    def encode(self, batch: Any) -> list[np.ndarray]: ...

    def decode(self, batch: Sequence[np.ndarray]) -> list[Any]: ...
