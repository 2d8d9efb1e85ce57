"""The reader's fast path: whole-shard index vs the header-by-header walk, damaged tars,
batches built in workers (shared ring), lazy meta."""

from __future__ import annotations

import io
import json
import logging
import pickle
import tarfile

import numpy as np
import pytest
import webdataset as wds

from trimodal.shards import ReaderConfig, ShardDataset, make_loader, read_manifest
from trimodal.shards import tario
from trimodal.shards.batch import JsonRows, TaskRows
from trimodal.shards.tario import TokenDecoder, add_member, encode_tokens, index_shard

from shard_helpers import L, make_seq, write_set


def _decoder(vocab):
    return TokenDecoder(L, vocab.size)


def _rows(index, length=L):
    """[(key, tokens list, meta bytes)] of an index, None for bad samples."""
    out = []
    for ref in index.samples:
        if ref is None:
            out.append(None)
        else:
            arr, start, buf, lo, hi, key = ref
            out.append((key, arr[start:start + length].tolist(), bytes(buf[lo:hi])))
    return out


def _walk_only(monkeypatch):
    monkeypatch.setattr(tario, "_index_regular", lambda *a, **k: None)


def _stock(path):
    """What stock webdataset reads: [(key, tokens list, meta bytes)]."""
    out = []
    for s in wds.WebDataset([str(path)], shardshuffle=False):
        tokens = np.load(io.BytesIO(s["tokens.npy"]), allow_pickle=False)
        out.append((s["__key__"], tokens.tolist(), s["meta.json"]))
    return out


@pytest.fixture
def shard(tmp_path, vocab):
    write_set(str(tmp_path / "set"), vocab, 9, per_shard=9)
    return tmp_path / "set" / "shard-000000.tar"


def test_regular_index_matches_walk_and_stock_webdataset(shard, vocab, monkeypatch):
    data = shard.read_bytes()
    blocks = np.frombuffer(data, np.uint8).reshape(-1, 512)
    assert tario._index_regular(data, blocks, _decoder(vocab), True) is not None  # the numpy path ran
    fast = index_shard(data, str(shard), _decoder(vocab))
    assert fast.damage == "" and fast.errors == {}
    assert _rows(fast) == _stock(shard)
    _walk_only(monkeypatch)
    assert _rows(index_shard(data, str(shard), _decoder(vocab))) == _stock(shard)


def _write_tar(path, members, fmt):
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members:
            add_member(tar, name, data)


def _members(vocab, names):
    out = []
    for i, key in enumerate(names):
        seq = make_seq(vocab, i)
        out.append((f"{key}.tokens.npy", encode_tokens(seq.tokens)))
        out.append((f"{key}.meta.json", tario.encode_meta(seq)))
    return out


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_long_names_pax_gnu_and_ustar_prefix(tmp_path, vocab, fmt):
    # > 100 characters: pax 'x' records, GNU 'L' members, or the ustar prefix field.
    deep = "d" * 60 + "/" + "e" * 60
    names = ["short", f"{deep}/k" + "x" * 30, f"{deep}/k2", "na\u00efve"]
    if fmt == tarfile.USTAR_FORMAT:
        names = names[:3]  # ustar cannot hold non-ASCII names
    path = tmp_path / "t.tar"
    _write_tar(path, _members(vocab, names), fmt)
    index = index_shard(path.read_bytes(), str(path), _decoder(vocab))
    assert index.damage == "" and index.errors == {}
    assert [r[0] for r in _rows(index)] == names
    assert _rows(index) == _stock(path)


def test_directories_and_links_are_not_samples(tmp_path, vocab):
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo("adir")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        for name, data in _members(vocab, ["adir/a", "adir/b"]):
            add_member(tar, name, data)
        link = tarfile.TarInfo("adir/c.tokens.npy")
        link.type, link.linkname = tarfile.SYMTYPE, "adir/a.tokens.npy"
        tar.addfile(link)
    index = index_shard(path.read_bytes(), str(path), _decoder(vocab))
    assert [r[0] for r in _rows(index) if r] == ["adir/a", "adir/b"]
    assert index.damage == ""


def test_truncation_anywhere_keeps_a_prefix(shard, vocab):
    data = shard.read_bytes()
    full = _rows(index_shard(data, str(shard), _decoder(vocab)))
    rng = np.random.default_rng(0)
    cuts = sorted(set(rng.integers(1, len(data), 40).tolist()) | {512, 1024, 7 * 512, len(data) - 1})
    for cut in cuts:
        part = index_shard(data[:cut], "x.tar", _decoder(vocab))
        got = _rows(part)
        # a cut exactly between a sample's two members leaves that sample bad (None)
        if got:
            assert got[:-1] == full[:len(got) - 1], cut
            assert got[-1] is None or got[-1] == full[len(got) - 1], cut
        assert len(got) < len(full) or cut >= len(data) - 1024 * 10  # end blocks may go unread
        if len(got) < len(full):
            assert "truncated" in part.damage or part.damage == "", (cut, part.damage)


def test_corrupted_header_stops_at_the_damage(shard, vocab, monkeypatch):
    data = bytearray(shard.read_bytes())
    full = _rows(index_shard(bytes(data), str(shard), _decoder(vocab)))
    # Headers of sample 3 (members 6 and 7): flip a name byte, then a size digit.
    offsets = [m[1] - 512 for m in tario._walk(bytes(data), "x")[0]]
    for pos in (offsets[6] + 3, offsets[7] + 130):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        index = index_shard(bytes(bad), "x.tar", _decoder(vocab))
        assert "checksum" in index.damage
        assert _rows(index) == full[:3]


def test_zero_block_early_ends_the_archive(shard, vocab):
    data = bytearray(shard.read_bytes())
    offsets = [m[1] - 512 for m in tario._walk(bytes(data), "x")[0]]
    data[offsets[4]:offsets[4] + 512] = bytes(512)
    index = index_shard(bytes(data), "x.tar", _decoder(vocab))
    assert len(index.samples) == 2 and index.damage == ""


def test_bad_samples_in_the_index(tmp_path, vocab):
    members = _members(vocab, ["a", "b", "c", "d", "e"])
    wrong = np.zeros(L + 1, np.int32)
    members[2] = (members[2][0], encode_tokens(wrong))  # b: wrong length
    members[5] = (members[5][0], b"not json")  # c: meta cut off
    del members[6]  # d: no tokens
    f64 = io.BytesIO()
    np.save(f64, make_seq(vocab, 4).tokens.astype(np.int64))
    members[-2] = (members[-2][0], f64.getvalue())  # e: int64 npy, still valid (np.load path)
    path = tmp_path / "t.tar"
    _write_tar(path, members, tarfile.PAX_FORMAT)
    index = index_shard(path.read_bytes(), str(path), _decoder(vocab))
    rows = _rows(index)
    assert rows[0][0] == "a" and rows[1] is None and rows[2] is None and rows[3] is None
    assert rows[4][0] == "e" and rows[4][1] == make_seq(vocab, 4).tokens.tolist()
    assert "tokens.npy" in index.errors[1] and "meta.json" in index.errors[2]
    assert "missing field 'tokens.npy'" == index.errors[3]


def test_out_of_vocab_rows_are_skipped_and_resume_stays_exact(tmp_path, vocab, caplog):
    url = tmp_path / "set"
    write_set(str(url), vocab, 30, per_shard=10)
    path = url / "shard-000001.tar"
    data = bytearray(path.read_bytes())
    offsets = [m[1] for m in tario._walk(bytes(data), "x")[0]]
    hl = len(_decoder(vocab).header)
    for sample in (2, 7):  # ids outside the vocabulary; sha256 no longer matches (reader ignores)
        data[offsets[2 * sample] + hl: offsets[2 * sample] + hl + 4] = np.int32(vocab.size + 3).tobytes()
    path.write_bytes(bytes(data))
    cfg = ReaderConfig(seed=2, shuffle_buffer=7)

    def run(n, state=None, workers=0):
        ds = ShardDataset([str(url)], vocab, L, cfg)
        loader = make_loader(ds, batch_size=4, num_workers=workers)
        if state:
            loader.load_state_dict(state)
        keys = []
        for b in loader:
            keys.append(list(b.keys))
            assert int(b.tokens.max()) < vocab.size
            if len(keys) == n:
                break
        return keys, loader.state_dict()

    with caplog.at_level(logging.WARNING, logger="trimodal.shards.reader"):
        full, end_state = run(100)
    flat = [k for b in full for k in b]
    assert len(flat) == len(set(flat)) == 28
    assert "shard-000001_0000002" not in flat and "shard-000001_0000007" not in flat
    assert "outside the vocabulary" in caplog.text
    assert end_state["dataset"]["epoch"] == 1
    for cut in (2, 4):
        head, state = run(cut)
        tail, _ = run(100, state)
        assert head + tail == full
    assert sorted(k for b in run(100, workers=2)[0] for k in b) == sorted(flat)


def test_worker_batches_survive_ring_reuse(tmp_path, vocab):
    """Rows handed out by workers are copies: later batches (same ring slots) leave them intact."""
    url = str(tmp_path / "set")
    write_set(url, vocab, 80, per_shard=7)
    truth = {s.key: s.tokens.copy() for s in ShardDataset([url], vocab, L, ReaderConfig(shuffle=False))}
    ds = ShardDataset([url], vocab, L, ReaderConfig(seed=1, shuffle_buffer=5))
    batches = list(make_loader(ds, batch_size=3, num_workers=2, prefetch_factor=1))
    assert sum(len(b) for b in batches) == 80
    for b in batches:
        for key, row in zip(b.keys, b.tokens.numpy()):
            np.testing.assert_array_equal(row, truth[key])


@pytest.mark.parametrize("drop_last", [True, False])
def test_drop_last_per_worker(tmp_path, vocab, drop_last):
    url = str(tmp_path / "set")
    write_set(url, vocab, 23, per_shard=6)
    ds = ShardDataset([url], vocab, L, ReaderConfig(seed=0))
    sizes = [len(b) for b in make_loader(ds, batch_size=5, num_workers=2, drop_last=drop_last)]
    # two workers hold 11 and 12 samples: 2 full batches each, and a rest of 1 and 2
    assert sorted(sizes) == ([5, 5, 5, 5] if drop_last else [1, 2, 5, 5, 5, 5])


def test_meta_and_tasks_decode_lazily(three_sets_small):
    url, vocab = three_sets_small
    batch = next(iter(make_loader([url], vocab, batch_size=4, num_workers=0)))
    assert isinstance(batch.meta, JsonRows) and isinstance(batch.tasks, TaskRows)
    assert batch.meta._cache == {}
    assert list(batch.tasks) == ["image_text"] * 4 and batch.meta[0]["task"] == "image_text"
    assert [m["keys"][0] for m in batch.meta] == [json.loads(json.dumps(m))["keys"][0] for m in batch.meta]
    again = pickle.loads(pickle.dumps(batch.meta))
    assert list(again) == list(batch.meta) and batch.meta[-1] == batch.meta[3]
    with pytest.raises(IndexError):
        batch.meta[4]


@pytest.fixture
def three_sets_small(tmp_path, vocab):
    url = str(tmp_path / "img")
    write_set(url, vocab, 9, "image_text", per_shard=4)
    return url, vocab


def test_manifest_counts_still_match_index(tmp_path, vocab):
    url = str(tmp_path / "set")
    write_set(url, vocab, 25, per_shard=8)
    m = read_manifest(url)
    for entry in m.shards:
        index = index_shard((tmp_path / "set" / entry.name).read_bytes(), entry.name, _decoder(vocab))
        assert len(index.samples) == entry.samples and not index.errors


def test_ring_waits_for_the_consumer_and_stops():
    import threading
    from trimodal.shards.loader import _Ring
    ring = _Ring(num_workers=2, slots=2, batch_size=3, length=L)
    for seq in (0, 1):
        ring.slot(1, seq)[:] = seq + 1
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("slot", ring.slot(1, 2)))
    t.start()
    t.join(0.2)
    assert t.is_alive()  # slot 0 still holds batch 0: the worker must wait
    first = ring.release(1, 0, 3)
    t.join(5)
    assert not t.is_alive() and got["slot"] is not None
    assert first.dtype == np.int64 and (first == 1).all()
    assert ring.slot(0, 0) is not None  # other workers have their own slots
    ring.stop[0] = 1
    assert ring.slot(1, 5) is None  # consumer gone: no wait


@pytest.mark.parametrize("rows_per_item", [10, 15])
def test_resume_inside_a_workers_hand_over(tmp_path, vocab, monkeypatch, rows_per_item):
    """Workers hand over groups of batches; a cut inside a group resumes with its rest."""
    from trimodal.shards import loader
    monkeypatch.setattr(loader, "_ITEM_ROWS", rows_per_item)  # 2 or 3 batches of 5 per hand-over
    url = str(tmp_path / "set")
    write_set(url, vocab, 47, per_shard=6)
    cfg = ReaderConfig(seed=4, shuffle_buffer=5, infinite=True)

    def run(n, state=None):
        loader = make_loader(ShardDataset([url], vocab, L, cfg), batch_size=5, num_workers=2)
        if state:
            loader.load_state_dict(state)
        out = []
        for b in loader:
            out.append(list(b.keys))
            if len(out) == n:
                break
        return out, loader.state_dict()

    full, _ = run(16)
    for cut in (1, 2, 3, 5, 8):
        head, state = run(cut)
        assert head == full[:cut]
        tail, _ = run(16 - cut, state)
        assert head + tail == full, cut
