"""Tiny hand-made packed sequences and shard sets (the packer is not needed here)."""

from __future__ import annotations

import numpy as np
import pytest

from trimodal.packing.layout import PackedSequence
from trimodal.packing.vocab import Vocab
from trimodal.shards.writer import WriterConfig, write_shards

L = 24


@pytest.fixture(scope="session")
def vocab() -> Vocab:
    return Vocab.from_sizes(text_size=50, image_size=20, audio_codebook_size=8, audio_codebooks=2)


def make_seq(vocab: Vocab, i: int, task: str = "text", source: str = "demo") -> PackedSequence:
    """A padded sequence whose first text token encodes `i` so tests can tell samples apart."""
    rng = np.random.default_rng(i)
    tokens = np.full(L, vocab.pad, dtype=np.int32)
    tokens[0] = vocab.task(task)
    spans = []
    pos = 1
    if task in ("image_text", "audio_text"):
        m = "image" if task == "image_text" else "audio"
        lo, hi = vocab.range(m)
        n = 6
        tokens[pos] = vocab.bos(m)
        tokens[pos + 1: pos + 1 + n] = rng.integers(lo, hi, n)
        tokens[pos + 1 + n] = vocab.eos(m)
        spans.append((m, pos, pos + n + 2))
        pos += n + 2
    n = int(rng.integers(3, 8))
    tokens[pos] = vocab.bos("text")
    tokens[pos + 1] = i % 50
    tokens[pos + 2: pos + 1 + n] = rng.integers(0, 50, n - 1)
    tokens[pos + 1 + n] = vocab.eos("text")
    spans.append(("text", pos, pos + n + 2))
    pos += n + 2
    return PackedSequence(tokens=tokens, task=task, keys=[f"{source}/{i}"], spans=spans,
                          pad_count=L - pos, source=source)


def write_set(url: str, vocab: Vocab, n: int, task: str = "text", per_shard: int = 10,
              source: str = "demo", start: int = 0) -> None:
    seqs = [make_seq(vocab, start + i, task, source) for i in range(n)]
    write_shards(seqs, url, vocab, L, "pad", WriterConfig(max_samples=per_shard))


@pytest.fixture
def text_set(tmp_path, vocab) -> str:
    url = str(tmp_path / "text")
    write_set(url, vocab, 57, per_shard=10)
    return url
