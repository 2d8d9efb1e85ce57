"""Writer: stock readers can read what we write; manifests are right; interrupted writes leave nothing."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import uuid

import numpy as np
import pytest
import webdataset as wds

from trimodal.packing.vocab import Vocab
from trimodal.shards import ShardDataset, ShardError, ShardWriter, WriterConfig, read_manifest, write_shards

from shard_helpers import L, make_seq, write_set


def _mixed_seqs(vocab, n=23):
    tasks = ["text", "image_text", "audio_text"]
    return [make_seq(vocab, i, tasks[i % 3], source=f"src{i % 2}") for i in range(n)]


def test_stock_webdataset_reads_every_sample(tmp_path, vocab):
    seqs = _mixed_seqs(vocab)
    m = write_shards(seqs, str(tmp_path), vocab, L, "pad", WriterConfig(max_samples=5))
    urls = [str(tmp_path / s.name) for s in m.shards]
    got = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(got) == len(seqs) == m.total_samples
    for sample, seq in zip(got, seqs):
        tokens = np.load(io.BytesIO(sample["tokens.npy"]), allow_pickle=False)
        assert tokens.dtype == np.int32 and tokens.shape == (L,)
        np.testing.assert_array_equal(tokens, seq.tokens)
        meta = json.loads(sample["meta.json"])
        assert meta["task"] == seq.task and meta["keys"] == seq.keys
        assert [tuple(s) for s in meta["spans"]] == seq.spans
        assert meta["pad_count"] == seq.pad_count and meta["source"] == seq.source
        assert "." not in sample["__key__"]


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar binary")
def test_tar_lists_shards(tmp_path, vocab):
    m = write_shards(_mixed_seqs(vocab, 7), str(tmp_path), vocab, L, "pad")
    names = subprocess.run(["tar", "-tf", str(tmp_path / m.shards[0].name)], check=True,
                           capture_output=True, text=True).stdout.split()
    assert len(names) == 14
    assert names[0].endswith(".tokens.npy") and names[1].endswith(".meta.json")


def test_manifest_counts_hashes_and_vocab(tmp_path, vocab):
    seqs = _mixed_seqs(vocab)
    write_shards(seqs, str(tmp_path), vocab, L, "pad", WriterConfig(max_samples=5),
                 run_config={"note": "x"})
    m = read_manifest(str(tmp_path))
    assert m.vocab_hash == vocab.hash and m.length == L and m.mode == "pad"
    assert [s.samples for s in m.shards] == [5, 5, 5, 5, 3]
    for s in m.shards:
        data = (tmp_path / s.name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == s.sha256 and len(data) == s.bytes
        assert s.tokens == s.samples * L
    for task in ("text", "image_text", "audio_text"):
        mine = [q for q in seqs if q.task == task]
        assert m.tasks[task] == {"samples": len(mine), "tokens": len(mine) * L,
                                 "pad_tokens": sum(q.pad_count for q in mine)}
    assert m.sources["src0"]["samples"] == 12
    assert m.config["note"] == "x" and m.version
    assert Vocab.load(str(tmp_path / "vocab.json")) == vocab


def test_shards_are_reproducible(tmp_path, vocab):
    a = write_shards(_mixed_seqs(vocab), str(tmp_path / "a"), vocab, L, "pad")
    b = write_shards(_mixed_seqs(vocab), str(tmp_path / "b"), vocab, L, "pad")
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]


def test_shard_size_by_bytes(tmp_path, vocab):
    m = write_shards(_mixed_seqs(vocab, 40), str(tmp_path), vocab, L, "pad",
                     WriterConfig(max_samples=1000, max_bytes=8000))
    assert len(m.shards) > 2 and m.total_samples == 40
    # limit + one more sample (< 2 KiB here) + end-of-archive blocks and record padding
    assert all(s.bytes <= 8000 + 2048 + 1024 + 10240 for s in m.shards)


def test_memory_filesystem_round_trip(vocab):
    url = f"memory://shards-{uuid.uuid4().hex}/set"
    write_set(url, vocab, 12, per_shard=5)
    ds = ShardDataset([url], vocab, config=None)
    assert sorted(s.meta["keys"][0] for s in ds) == sorted(f"demo/{i}" for i in range(12))


def test_interrupted_write_leaves_no_visible_shard(tmp_path, vocab):
    seqs = _mixed_seqs(vocab, 12)
    with pytest.raises(RuntimeError, match="boom"):
        with ShardWriter(str(tmp_path), vocab, L, "pad", WriterConfig(max_samples=5)) as w:
            for i, seq in enumerate(seqs):
                if i == 7:  # mid second shard
                    raise RuntimeError("boom")
                w.write(seq)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["shard-000000.tar"]  # the complete first shard; no partial, no manifest
    with pytest.raises(ShardError, match="no manifest.json"):
        ShardDataset([str(tmp_path)], vocab)


def test_crash_without_cleanup_leaves_only_hidden_temp(tmp_path, vocab):
    w = ShardWriter(str(tmp_path), vocab, L, "pad", WriterConfig(max_samples=5))
    for seq in _mixed_seqs(vocab, 3):
        w.write(seq)  # then the process "dies": no close, no abort
    w._shard.target.file.flush()
    names = [p.name for p in tmp_path.iterdir()]
    assert names and all(n.startswith(".") and n.endswith(".tmp") for n in names)
    assert not list(tmp_path.glob("*.tar")) and not (tmp_path / "manifest.json").exists()


def test_bad_sequences_are_refused(tmp_path, vocab):
    seq = make_seq(vocab, 0)
    with ShardWriter(str(tmp_path), vocab, L + 1, "pad") as w:
        with pytest.raises(ShardError, match="shape"):
            w.write(seq)
    seq.tokens = seq.tokens.copy()
    seq.tokens[3] = vocab.size
    with ShardWriter(str(tmp_path / "b"), vocab, L, "pad") as w:
        with pytest.raises(ShardError, match="outside the vocabulary"):
            w.write(seq)


def test_existing_set_needs_overwrite(tmp_path, vocab):
    write_set(str(tmp_path), vocab, 3)
    with pytest.raises(ShardError, match="overwrite"):
        ShardWriter(str(tmp_path), vocab, L, "pad")
    write_shards([make_seq(vocab, 1)], str(tmp_path), vocab, L, "pad", WriterConfig(overwrite=True))
    assert read_manifest(str(tmp_path)).total_samples == 1


def test_writer_config_validation():
    with pytest.raises(ShardError):
        WriterConfig(max_samples=0)
    with pytest.raises(ShardError):
        WriterConfig(prefix="a.b")


def test_shards_are_byte_identical_to_what_tarfile_writes(tmp_path, vocab):
    """The writer fills tar headers itself (tarfile's per-member header code was most of the
    cost of writing): same members through tarfile must give the same bytes, and sha256."""
    import tarfile

    from trimodal.shards.tario import add_member

    url = tmp_path / "set"
    write_set(str(url), vocab, 23, per_shard=10)
    for path in sorted(url.glob("shard-*.tar")):
        data = path.read_bytes()
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = [(m.name, tar.extractfile(m).read()) for m in tar]
        again = io.BytesIO()
        with tarfile.open(fileobj=again, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for name, member in members:
                add_member(tar, name, member)
        assert again.getvalue() == data, path.name
