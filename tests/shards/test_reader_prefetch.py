"""The next shard of a slot's slice is read and indexed in a background thread: same samples,
same errors, no shard opened twice."""

from __future__ import annotations

import logging
import threading

from trimodal.shards import ReaderConfig, ShardDataset
from trimodal.shards import reader

from shard_helpers import L, write_set


def _keys(url, vocab, **cfg):
    return [s.key for s in ShardDataset([url], vocab, L, ReaderConfig(**cfg))]


def test_next_shard_is_opened_in_the_background_once(tmp_path, vocab, monkeypatch):
    url = str(tmp_path / "set")
    write_set(url, vocab, 20, per_shard=5)
    calls: list[tuple[str, str]] = []
    real = reader._read_index

    def spy(shard_url, decoder):
        calls.append((shard_url.rsplit("/", 1)[-1], threading.current_thread().name))
        return real(shard_url, decoder)

    monkeypatch.setattr(reader, "_read_index", spy)
    keys = _keys(url, vocab, shuffle=False)
    assert keys == [f"shard-{i // 5:06d}_{i % 5:07d}" for i in range(20)]
    shards = [name for name, _ in calls]
    assert sorted(shards) == [f"shard-{i:06d}.tar" for i in range(4)]  # each exactly once
    threads = dict(calls)
    assert threads["shard-000000.tar"] == "MainThread"  # nothing to overlap the first with
    assert all(threads[f"shard-{i:06d}.tar"] == "trimodal-shard-open" for i in (1, 2, 3))


def test_shuffled_order_is_unchanged_by_the_background_reads(tmp_path, vocab, monkeypatch):
    url = str(tmp_path / "set")
    write_set(url, vocab, 37, per_shard=6)
    with_ahead = _keys(url, vocab, seed=5, shuffle_buffer=4)
    monkeypatch.setattr(reader._SliceReader, "_open_next", lambda self, shard_idx: None)
    assert _keys(url, vocab, seed=5, shuffle_buffer=4) == with_ahead
    assert len(set(with_ahead)) == 37


def test_a_shard_that_fails_in_the_background_is_skipped_with_a_warning(tmp_path, vocab, caplog):
    url = tmp_path / "set"
    write_set(str(url), vocab, 15, per_shard=5)
    (url / "shard-000001.tar").write_bytes(b"")  # readable file, no samples (was 5)
    (url / "shard-000002.tar").unlink()
    with caplog.at_level(logging.WARNING, logger="trimodal.shards.reader"):
        keys = _keys(str(url), vocab, shuffle=False)
    assert keys == [f"shard-000000_{i:07d}" for i in range(5)]
    assert "shard-000001.tar: holds fewer samples than its manifest says; 5 skipped" in caplog.text
    assert "shard-000002.tar: unreadable" in caplog.text


def test_infinite_mode_opens_the_next_epochs_first_shard_in_the_background(tmp_path, vocab, monkeypatch):
    """One shard per slot and epoch (2 shards, 2 ranks): without looking past the epoch's end
    every shard would be opened synchronously."""
    import itertools

    url = str(tmp_path / "set")
    write_set(url, vocab, 10, per_shard=5)
    calls: list[str] = []
    real = reader._read_index

    def spy(shard_url, decoder):
        calls.append(threading.current_thread().name)
        return real(shard_url, decoder)

    monkeypatch.setattr(reader, "_read_index", spy)
    cfg = ReaderConfig(seed=3, infinite=True, rank=0, world_size=2)
    got = [s.key for s in itertools.islice(ShardDataset([url], vocab, L, cfg), 20)]  # 4 epochs of 5
    # only the very first shard is read synchronously (the thread starts on the next one at once)
    assert calls.count("MainThread") == 1 and calls.count("trimodal-shard-open") >= 3
    monkeypatch.setattr(reader, "_read_index", real)
    monkeypatch.setattr(reader._SliceReader, "_open_next", lambda self, shard_idx: None)
    assert [s.key for s in itertools.islice(ShardDataset([url], vocab, L, cfg), 20)] == got
