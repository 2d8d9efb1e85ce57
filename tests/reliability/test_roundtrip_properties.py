"""Property tests the packing tests do not already cover (see tests/packing, tests/shards).

- mixed corpora (text documents, image pairs, audio pairs) packed in both modes: every
  sequence is exactly L long, PAD only at the end, all content tokens preserved, every row
  decodes back to its ids;
- shard write -> read: arbitrary sequences (tokens anywhere in the vocabulary, odd keys and
  sources, any shard size) come back exactly once with the same tokens and metadata, and the
  manifest's counts match what was written.
"""

from __future__ import annotations

import tempfile
from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trimodal.packing.layout import PackedSequence, unpack
from trimodal.packing.packer import Packer, PackerConfig
from trimodal.packing.table import TokenRow
from trimodal.packing.vocab import Vocab

TEXT, IMAGE, K, NQ = 12, 6, 4, 2
V = Vocab.from_sizes(TEXT, IMAGE, K, NQ)

text_ids = st.lists(st.integers(0, TEXT - 1), min_size=1, max_size=8)


@st.composite
def rows(draw) -> list[TokenRow]:
    """A mixed corpus in arbitrary order; pairs always fit in the smallest L drawn below."""
    out = []
    for i in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["text", "text", "image", "audio"]))
        if kind == "text":
            ids = draw(st.lists(st.integers(0, TEXT - 1), min_size=1, max_size=40))
            out.append(TokenRow(f"t{i}", "web", "text", np.array(ids, np.int32)))
        elif kind == "image":
            h, w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
            codes = draw(st.lists(st.integers(0, IMAGE - 1), min_size=h * w, max_size=h * w))
            out.append(TokenRow(f"i{i}", "cc", "image_text", np.array(draw(text_ids), np.int32), "image",
                                np.array(codes, np.int32), (h, w), tokenizer="tok", tokenizer_hash="h"))
        else:
            n_q, frames = draw(st.integers(1, NQ)), draw(st.integers(1, 4))
            codes = draw(st.lists(st.integers(0, K - 1), min_size=n_q * frames, max_size=n_q * frames))
            out.append(TokenRow(f"a{i}", "ls", "audio_text", np.array(draw(text_ids), np.int32), "audio",
                                np.array(codes, np.int32), (n_q, frames), audio_length=320 * frames,
                                sample_rate=16000, tokenizer="dac", tokenizer_hash="d"))
    return out


def content_tokens(row: TokenRow) -> int:
    """Tokens a row contributes to the packed stream (framing included, no PAD)."""
    if row.task == "text":
        return row.text_ids.size + 2  # BOS_text ... EOS_text
    return row.ids.size + row.text_ids.size + 5  # TASK, BOS_m ... EOS_m, BOS_text ... EOS_text


@settings(max_examples=60, deadline=None)
@given(corpus=rows(), length=st.integers(22, 48), mode=st.sampled_from(["pack", "pad"]),
       cross=st.booleans(), chunk=st.integers(1, 50))
def test_property_mixed_pack_pad(corpus, length, mode, cross, chunk):
    packer = Packer(PackerConfig(length=length, mode=mode, cross_boundaries=cross, chunk_tokens=chunk), V)
    seqs = list(packer.pack(corpus))
    assert packer.stats.dropped == 0 and packer.stats.truncated == 0
    content = 0
    rebuilt: dict[str, dict[str, list]] = {}
    for s in seqs:
        assert s.tokens.shape == (length,) and s.tokens.dtype == np.int32
        assert int(s.tokens.min()) >= 0 and int(s.tokens.max()) < V.size
        is_pad = s.tokens == V.pad
        assert int(is_pad.sum()) == s.pad_count
        assert is_pad[length - s.pad_count:].all(), f"PAD not only at the end: {s.tokens.tolist()}"
        content += length - s.pad_count
        if s.task != "text":
            assert len(set(s.keys)) == 1 and s.tokens[0] == V.task(s.task)
        for g in unpack(s, V):
            rebuilt.setdefault(g.key, {}).setdefault(g.modality, []).extend(np.asarray(g.ids).reshape(-1).tolist()
                                                                           if g.modality != "audio"
                                                                           else [np.asarray(g.ids).tolist()])
    assert content == sum(content_tokens(r) for r in corpus)
    expected = {}
    for r in corpus:
        entry = {"text": r.text_ids.tolist()}
        if r.modality == "image":
            entry["image"] = r.ids.tolist()
        elif r.modality == "audio":
            n_q, frames = r.shape
            entry["audio"] = [r.ids.reshape(frames, n_q).T.tolist()]  # frame-major -> [n_q, frames]
        expected[r.key] = entry
    assert rebuilt == expected


# --- shards ----------------------------------------------------------------------------------
L = 16
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=12)


@st.composite
def packed(draw) -> PackedSequence:
    """A sequence with spans of real modality ids, anything outside them, PAD anywhere."""
    tokens = np.array(draw(st.lists(st.integers(0, V.size - 1), min_size=L, max_size=L)), np.int32)
    spans, pos = [], draw(st.integers(0, 3))
    for modality, n in draw(st.lists(st.tuples(st.sampled_from(["text", "image", "audio"]),
                                               st.integers(1, 5)), max_size=3)):
        n = min(n, L - pos)
        if n <= 0:
            break
        lo, hi = V.range(modality)
        tokens[pos:pos + n] = draw(st.lists(st.integers(lo, hi - 1), min_size=n, max_size=n))
        spans.append((modality, pos, pos + n))
        pos += n
    tokens[L - draw(st.integers(0, L - pos)):] = V.pad
    return PackedSequence(tokens=tokens, task=draw(st.sampled_from(["text", "image_text", "audio_text"])),
                          keys=draw(st.lists(names, min_size=1, max_size=3)), spans=spans,
                          pad_count=int((tokens == V.pad).sum()), source=draw(st.sampled_from(["a", "b/c", "ü"])),
                          extra=draw(st.dictionaries(st.sampled_from(["n_q", "frames", "h"]), st.integers(0, 9))))


def as_record(tokens: np.ndarray, meta: dict) -> tuple:
    return (tuple(int(t) for t in tokens), meta["task"], tuple(meta["keys"]),
            tuple(tuple(s) for s in meta["spans"]), meta["pad_count"], meta["source"],
            tuple(sorted(meta["extra"].items())))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seqs=st.lists(packed(), min_size=1, max_size=20), per_shard=st.integers(1, 7))
def test_property_shard_round_trip(seqs, per_shard):
    from trimodal.shards.manifest import read_manifest
    from trimodal.shards.reader import ReaderConfig, ShardDataset
    from trimodal.shards.verify import verify_shards
    from trimodal.shards.writer import WriterConfig, write_shards

    with tempfile.TemporaryDirectory() as tmp:
        url = f"{tmp}/set"
        write_shards(seqs, url, V, L, "pack", WriterConfig(max_samples=per_shard))
        manifest = read_manifest(url)
        got = [(s.key, as_record(s.tokens, s.meta)) for s in ShardDataset([url], V, L, ReaderConfig(seed=3))]
        assert verify_shards(url).ok
    written = Counter(as_record(s.tokens, {"task": s.task, "keys": s.keys, "spans": s.spans,
                                           "pad_count": s.pad_count, "source": s.source, "extra": s.extra})
                      for s in seqs)
    assert Counter(r for _, r in got) == written
    assert len({k for k, _ in got}) == len(got) == len(seqs)  # every sample once, unique keys
    assert manifest.total_samples == len(seqs)
    assert len(manifest.shards) == -(-len(seqs) // per_shard)
    assert sum(e.tokens for e in manifest.shards) == L * len(seqs)
    assert sum(e.pad_tokens for e in manifest.shards) == sum(s.pad_count for s in seqs)
    assert {t: c["samples"] for t, c in manifest.tasks.items()} == dict(Counter(s.task for s in seqs))
    assert {t: c["pad_tokens"] for t, c in manifest.sources.items()} == {
        src: sum(s.pad_count for s in seqs if s.source == src) for src in {s.source for s in seqs}}
