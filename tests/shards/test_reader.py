"""Reader: rank/worker split, exact resume, mixing, bad shards, run checks, batches."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trimodal.packing.vocab import Vocab
from trimodal.shards import ReaderConfig, ShardDataset, ShardError, Source, make_loader, read_manifest
from trimodal.shards.reader import slot_slice

from shard_helpers import L, write_set


@pytest.fixture
def three_sets(tmp_path, vocab):
    """Uneven sizes and shard counts, so slices cross shard boundaries."""
    write_set(str(tmp_path / "text"), vocab, 61, "text", per_shard=9, source="t")
    write_set(str(tmp_path / "img"), vocab, 23, "image_text", per_shard=4, source="i")
    write_set(str(tmp_path / "aud"), vocab, 17, "audio_text", per_shard=17, source="a")
    return [str(tmp_path / n) for n in ("text", "img", "aud")]


def _sources(urls, weights=(5.0, 3.0, 2.0)):
    return [Source(u, w) for u, w in zip(urls, weights)]


def _ids(batch):
    return [f"{s}:{m['keys'][0]}" for s, m in zip(batch.sources, batch.meta)]


def _run(urls, vocab, config, num_workers, n_batches, state=None, batch_size=5, weights=(5.0, 3.0, 2.0)):
    """n_batches from a fresh dataset+loader (optionally resumed from `state`); -> (ids, state)."""
    ds = ShardDataset(_sources(urls, weights), vocab, L, config)
    loader = make_loader(ds, batch_size=batch_size, num_workers=num_workers)
    if state is not None:
        loader.load_state_dict(state)
    out = []
    while len(out) < n_batches:
        got_any = False
        for batch in loader:
            got_any = True
            out.append(_ids(batch))
            if len(out) == n_batches:
                break
        if not got_any:
            break
    return out, loader.state_dict()


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("infinite", [True, False])
def test_exact_resume(three_sets, vocab, num_workers, infinite):
    # 30 batches of 5 > one epoch of 101 samples: epoch mode crosses an epoch boundary.
    # The small audio set has a high weight, so in epoch mode it runs dry early while two
    # sources are still mixed: the resumed run must know it is exhausted.
    cfg = ReaderConfig(seed=3, shuffle_buffer=6, infinite=infinite)
    w = (2.0, 1.0, 4.0)
    full, _ = _run(three_sets, vocab, cfg, num_workers, 30, weights=w)
    for cut in (7, 13, 23):
        head, state = _run(three_sets, vocab, cfg, num_workers, cut, weights=w)
        tail, _ = _run(three_sets, vocab, cfg, num_workers, 30 - cut, state=state, weights=w)
        assert head + tail == full, f"resume after {cut} batches differs"


def test_state_dict_is_plain_json(three_sets, vocab):
    import json
    _, state = _run(three_sets, vocab, ReaderConfig(infinite=True), 0, 3)
    assert json.loads(json.dumps(state)) == state


def test_ranks_and_workers_see_every_sample_once(three_sets, vocab):
    manifests = [read_manifest(u) for u in three_sets]
    expected = {f"{name}:{k}" for name, m in zip(("text", "img", "aud"), manifests)
                for k in _all_keys(m, vocab)}
    for epoch in range(2):
        seen: list[str] = []
        per_rank = []
        for rank in range(2):
            cfg = ReaderConfig(seed=1, shuffle_buffer=4, rank=rank, world_size=2)
            ds = ShardDataset(_sources(three_sets), vocab, L, cfg)
            ds.set_epoch(epoch)
            ids = [i for b in make_loader(ds, batch_size=4, num_workers=2) for i in _ids(b)]
            per_rank.append(len(ids))
            assert len(ids) == len(ds)
            seen += ids
        assert len(seen) == len(set(seen)) == len(expected)
        assert set(seen) == expected
        assert abs(per_rank[0] - per_rank[1]) <= 3  # slices differ by at most one per source


def _all_keys(manifest, vocab):
    ds = ShardDataset([manifest.url], vocab, L, ReaderConfig(shuffle=False))
    return [s.meta["keys"][0] for s in ds]


def test_epochs_reshuffle(three_sets, vocab):
    ds = ShardDataset(_sources(three_sets), vocab, L, ReaderConfig(seed=0))
    first = [s.key for s in ds]
    second = [s.key for s in ds]  # direct iteration advances the epoch itself
    assert sorted(first) == sorted(second) and first != second
    assert ds.epoch == 2


def test_mixing_ratios_on_long_run(three_sets, vocab):
    weights = (0.6, 0.3, 0.1)
    ds = ShardDataset(_sources(three_sets, weights), vocab, L,
                      ReaderConfig(seed=7, shuffle_buffer=8, infinite=True))
    n = 6000
    counts = Counter(s.source for s, _ in zip(ds, range(n)))
    for name, w in zip(("text", "img", "aud"), weights):
        assert abs(counts[name] / n - w) < 0.02, counts
    # small sources loop: 0.1 * 6000 = 600 draws from 17 samples
    assert ds.workers[0].sources[2][0] > 10


def test_epoch_mode_mixing_drains_every_source(three_sets, vocab):
    ds = ShardDataset(_sources(three_sets, (100.0, 1.0, 1.0)), vocab, L, ReaderConfig())
    got = Counter(s.source for s in ds)
    assert got == {"text": 61, "img": 23, "aud": 17}


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 12), min_size=1, max_size=7),
       n_slots=st.integers(1, 9), epoch=st.integers(0, 3))
def test_slot_slices_partition_the_epoch(counts, n_slots, epoch):
    from trimodal.shards.manifest import Manifest, ShardEntry
    m = Manifest("h", 1, 4, "pad", [ShardEntry(f"s{i}", c, 4 * c, 0, 0, "") for i, c in enumerate(counts)])
    seen = []
    sizes = []
    for slot in range(n_slots):
        sl = slot_slice(m, 0, 5, epoch, True, slot, n_slots)
        sizes.append(sum(c for _, _, c in sl))
        seen += [(idx, first + k) for idx, first, c in sl for k in range(c)]
    assert sorted(seen) == [(i, k) for i, c in enumerate(counts) for k in range(c)]
    assert max(sizes) - min(sizes) <= 1


def test_batch_tensors(three_sets, vocab):
    loader = make_loader(_sources(three_sets), vocab, batch_size=8, pin_memory=False)
    batch = next(iter(loader))
    assert batch.tokens.shape == (8, L) and batch.tokens.dtype == torch.long
    np.testing.assert_array_equal(batch.modality.numpy(), vocab.modality_of(batch.tokens.numpy()))
    assert torch.equal(batch.pad_mask, batch.tokens == vocab.pad)
    assert len(batch.tasks) == len(batch.keys) == 8
    assert set(batch.tasks) <= {"text", "image_text", "audio_text"}
    assert batch.to("cpu").tokens.shape == (8, L)


def _truncate(path, keep_fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])


def _corrupt_header(path):
    data = bytearray(path.read_bytes())
    data[512 * 6 + 3] ^= 0xFF  # inside the 4th member's header: checksum no longer matches
    path.write_bytes(bytes(data))


def test_bad_shards_are_skipped_with_a_warning(tmp_path, vocab, caplog):
    url = str(tmp_path / "set")
    write_set(url, vocab, 40, per_shard=10)
    _truncate(tmp_path / "set" / "shard-000001.tar")
    _corrupt_header(tmp_path / "set" / "shard-000002.tar")
    (tmp_path / "set" / "shard-000003.tar").unlink()
    ds = ShardDataset([url], vocab, L, ReaderConfig(shuffle_buffer=5))
    with caplog.at_level(logging.WARNING, logger="trimodal.shards.reader"):
        keys = [k for b in make_loader(ds, batch_size=4) for k in b.keys]
    assert all(k.startswith(("shard-000000", "shard-000001", "shard-000002")) for k in keys)
    assert sum(k.startswith("shard-000000") for k in keys) == 10
    assert 10 + 1 <= len(keys) < 30
    text = caplog.text
    assert "shard-000001.tar" in text and "shard-000002.tar" in text and "shard-000003.tar" in text
    assert ds.epoch == 1 and ds.skipped == 0  # epoch finished; state reset


def test_bad_shards_with_workers_do_not_stop_training(tmp_path, vocab):
    url = str(tmp_path / "set")
    write_set(url, vocab, 40, per_shard=10)
    _truncate(tmp_path / "set" / "shard-000001.tar", 0.3)
    ds = ShardDataset([url], vocab, L, ReaderConfig(infinite=True))
    loader = make_loader(ds, batch_size=4, num_workers=2)
    batches = [b for b, _ in zip(loader, range(40))]
    assert len(batches) == 40
    assert ds.skipped > 0


def test_bad_sample_fields_are_skipped(tmp_path, vocab):
    from trimodal.shards.tario import add_member
    import tarfile
    url = tmp_path / "set"
    write_set(str(url), vocab, 5, per_shard=5)
    path = url / "shard-000000.tar"
    members = []
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            members.append((m.name, tar.extractfile(m).read()))
    bad = np.full(L, vocab.size + 5, np.int32)  # ids outside the vocabulary
    import io
    buf = io.BytesIO()
    np.save(buf, bad)
    members[2] = (members[2][0], buf.getvalue())  # sample 1 tokens
    members[5] = (members[5][0], b"{not json")  # sample 2 meta
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            add_member(tar, name, data)
    got = sorted(s.key for s in ShardDataset([str(url)], vocab, L, ReaderConfig(shuffle=False)))
    assert got == ["shard-000000_0000000", "shard-000000_0000003", "shard-000000_0000004"]


def test_vocab_or_length_mismatch_is_refused(tmp_path, vocab):
    url = str(tmp_path / "set")
    write_set(url, vocab, 3)
    other = Vocab.from_sizes(text_size=51, image_size=20, audio_codebook_size=8, audio_codebooks=2)
    with pytest.raises(ShardError, match=r"manifest\.json.*shard-000000\.tar.*vocabulary"):
        ShardDataset([url], other, L)
    with pytest.raises(ShardError, match=r"manifest\.json.*shard-000000\.tar.*length 24.*L=32"):
        ShardDataset([url], vocab, 32)


def test_resume_refuses_other_topology(three_sets, vocab):
    _, state = _run(three_sets, vocab, ReaderConfig(infinite=True), 2, 3)
    ds = ShardDataset(_sources(three_sets), vocab, L, ReaderConfig(infinite=True))
    with pytest.raises(ShardError, match="worker"):
        make_loader(ds, batch_size=5, num_workers=0).load_state_dict(state)
    ds = ShardDataset(_sources(three_sets), vocab, L, ReaderConfig(infinite=True, seed=9))
    with pytest.raises(ShardError, match="seed"):
        make_loader(ds, batch_size=5, num_workers=2).load_state_dict(state)
