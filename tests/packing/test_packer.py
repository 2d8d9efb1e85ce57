"""Packing: exact layouts on hand-made rows, policies and their counts, bad input, round trips."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimodal.config import ConfigError
from trimodal.packing.layout import PackedSequence, find_spans, segment, unpack
from trimodal.packing.packer import Packer, PackerConfig, pack_rows
from trimodal.packing.table import TokenRow, read_table, write_table
from trimodal.packing.vocab import Vocab, VocabError

# text 0..9, image 10..13, audio codebooks 14..16 / 17..19; PAD 20, BOS/EOS/MASK text 21/22/23,
# image 24/25/26, audio 27/28/29; TASK text 30, image_text 31, audio_text 32, ...
V = Vocab.from_sizes(10, 4, 3, 2)
PAD, BT, ET, BI, EI, BA, EA = 20, 21, 22, 24, 25, 27, 28
T_IMG, T_AUD = 31, 32


def doc(key, ids, source="web"):
    return TokenRow(key, source, "text", np.array(ids, dtype=np.int32))


def image(key, text, codes, shape):
    return TokenRow(key, "cc", "image_text", np.array(text), "image", np.array(codes), tuple(shape),
                    tokenizer="movq", tokenizer_hash="abc")


def audio(key, text, flat_codes, n_q, frames):
    return TokenRow(key, "ls", "audio_text", np.array(text), "audio", np.array(flat_codes), (n_q, frames),
                    audio_length=320, sample_rate=16000)


DOCS = [doc("d0", [1, 2, 3]), doc("d1", [4, 5]), doc("d2", [6, 7, 8, 9, 0, 1, 2, 3, 4])]


def run(rows, **cfg):
    packer = Packer(PackerConfig(**cfg), V)
    seqs = list(packer.pack(rows))
    for s in seqs:
        assert s.tokens.dtype == np.int32 and s.tokens.shape == (cfg["length"],)
        assert s.pad_count == int((s.tokens == PAD).sum())
    return seqs, packer.stats


def test_text_cross_boundaries_exact():
    seqs, stats = run(DOCS, length=8)
    assert [s.tokens.tolist() for s in seqs] == [
        [BT, 1, 2, 3, ET, BT, 4, 5],
        [ET, BT, 6, 7, 8, 9, 0, 1],
        [2, 3, 4, ET, PAD, PAD, PAD, PAD]]
    assert [s.spans for s in seqs] == [[("text", 0, 5), ("text", 5, 8)],
                                       [("text", 0, 1), ("text", 1, 8)], [("text", 0, 4)]]
    assert [s.keys for s in seqs] == [["d0", "d1"], ["d1", "d2"], ["d2"]]
    assert all(s.task == "text" and s.source == "web" for s in seqs)
    assert (stats.sequences, stats.tokens, stats.pad_tokens) == (3, 24, 4)
    assert stats.per_task["text"].samples == 3


def test_text_no_cross_boundaries_exact():
    rows = DOCS + [doc("d3", [7]), doc("d4", [8, 9])]
    seqs, stats = run(rows, length=8, cross_boundaries=False)
    assert [s.tokens.tolist() for s in seqs] == [
        [BT, 1, 2, 3, ET, PAD, PAD, PAD],      # d1 (4 tokens) does not fit in the 3 left
        [BT, 4, 5, ET, PAD, PAD, PAD, PAD],    # d2 (11 tokens) is longer than L: own boundary
        [BT, 6, 7, 8, 9, 0, 1, 2],
        [3, 4, ET, BT, 7, ET, PAD, PAD],       # its tail is followed by the next documents
        [BT, 8, 9, ET, PAD, PAD, PAD, PAD]]
    assert seqs[3].spans == [("text", 0, 3), ("text", 3, 6)] and seqs[3].keys == ["d2", "d3"]
    assert stats.pad_tokens == 3 + 4 + 0 + 2 + 4


def test_text_pad_mode_one_document_per_sequence():
    seqs, _ = run(DOCS, length=8, mode="pad")
    assert [s.tokens.tolist() for s in seqs] == [
        [BT, 1, 2, 3, ET, PAD, PAD, PAD], [BT, 4, 5, ET, PAD, PAD, PAD, PAD],
        [BT, 6, 7, 8, 9, 0, 1, 2], [3, 4, ET, PAD, PAD, PAD, PAD, PAD]]
    assert [s.keys for s in seqs] == [["d0"], ["d1"], ["d2"], ["d2"]]


def test_sources_never_share_a_sequence():
    rows = [doc("a0", [1, 2], "A"), doc("b0", [3], "B"), doc("a1", [4], "A")]
    seqs, _ = run(rows, length=8)
    assert [(s.source, s.tokens.tolist()) for s in seqs] == [
        ("A", [BT, 1, 2, ET, BT, 4, ET, PAD]), ("B", [BT, 3, ET, PAD, PAD, PAD, PAD, PAD])]


def test_image_pair_exact_and_unpack():
    seqs, stats = run([image("i0", [1, 2], [0, 1, 2, 3], (2, 2))], length=12)
    (s,) = seqs
    assert s.tokens.tolist() == [T_IMG, BI, 10, 11, 12, 13, EI, BT, 1, 2, ET, PAD]
    assert s.spans == [("image", 1, 7), ("text", 7, 11)] and s.pad_count == 1 and s.keys == ["i0"]
    assert s.extra == {"grid": [2, 2], "tokenizer": "movq", "tokenizer_hash": "abc"}
    img, txt = unpack(s, V)
    assert img.ids.tolist() == [[0, 1], [2, 3]] and img.starts and img.ends
    assert txt.ids.tolist() == [1, 2] and txt.modality == "text"
    assert find_spans(s.tokens, V) == s.spans
    assert stats.per_task["image_text"].samples == 1 and stats.per_task["image_text"].pad_tokens == 1


def test_audio_pair_frame_major_and_fewer_codebooks():
    # table stores frame-major: frame0=(q0=0,q1=1), frame1=(q0=2,q1=0)
    row = audio("a0", [5], [0, 1, 2, 0], n_q=2, frames=2)
    (s,), _ = run([row], length=10)
    assert s.tokens.tolist() == [T_AUD, BA, 14, 18, 16, 17, EA, BT, 5, ET]
    assert s.extra["n_q"] == 2 and s.extra["frames"] == 2 and s.extra["audio_length"] == 320
    assert s.extra["sample_rate"] == 16000
    codes, _ = unpack(s, V)
    assert codes.ids.tolist() == [[0, 2], [1, 0]]  # [n_q, frames]
    (s1,), _ = run([row], length=10, audio_codebooks=1)
    assert s1.tokens.tolist() == [T_AUD, BA, 14, 16, EA, BT, 5, ET, PAD, PAD]
    assert unpack(s1, V)[0].ids.tolist() == [[0, 2]]


def test_overflow_policies_are_counted():
    rows = [image("long", [1, 2, 3, 4, 5], [0, 1, 2, 3], (2, 2)),   # 5 + 4 + 5 = 14 > 10
            image("fits", [1], [0, 1, 2, 3], (2, 2)),
            image("codes_too_long", [1], list(range(4)) * 2, (2, 4))]  # 8 codes + 5 > 10 - 1
    seqs, stats = run(rows, length=10, overflow="truncate_text")
    assert seqs[0].tokens.tolist() == [T_IMG, BI, 10, 11, 12, 13, EI, BT, 1, ET]  # EOS kept
    assert [s.keys[0] for s in seqs] == ["long", "fits"]
    assert (stats.truncated, stats.dropped) == (1, 1)
    assert stats.per_task["image_text"].truncated == 1 and stats.per_task["image_text"].dropped == 1
    seqs, stats = run(rows, length=10, overflow="drop")
    assert [s.keys[0] for s in seqs] == ["fits"]
    assert (stats.truncated, stats.dropped, stats.sequences) == (0, 2, 1)


def test_bad_rows_are_skipped_and_counted():
    rows = [doc("empty", []), image("no_text", [], [0], (1, 1)), image("no_codes", [1], [], (0, 0)),
            image("bad_shape", [1], [0, 1, 2], (2, 2)), audio("bad_audio", [1], [0, 1, 2], 2, 2),
            TokenRow("text_pair", "x", "image_text", np.array([1])), doc("ok", [1])]
    seqs, stats = run(rows, length=8)
    assert [s.keys for s in seqs] == [["ok"]]
    assert stats.skipped == {"empty document": 1, "empty text": 1, "empty image ids": 1,
                             "image ids do not match shape": 1,
                             "audio ids do not match shape [n_q, frames]": 1,
                             "image_text row without image or audio ids": 1}


def test_out_of_range_ids_name_the_key():
    with pytest.raises(VocabError, match=r"d9: text id 10 out of range \[0, 10\)"):
        run([doc("d0", [1]), doc("d9", [3, 10])], length=8)
    with pytest.raises(VocabError, match=r"i3: image id 4 out of range"):
        run([image("i3", [1], [0, 4], (1, 2))], length=12)
    with pytest.raises(VocabError, match=r"a2: audio code out of range"):
        run([audio("a2", [1], [0, 3], 2, 1)], length=12)
    with pytest.raises(VocabError, match=r"t1: text id -1"):
        run([image("t1", [-1], [0], (1, 1))], length=12)


@pytest.mark.parametrize("cfg,match", [
    (dict(length=6), "length=6 is too small.*>= 7"),
    (dict(mode="stream"), "mode"), (dict(overflow="cut"), "overflow"),
    (dict(audio_codebooks=-1), "audio_codebooks"), (dict(chunk_tokens=0), "chunk_tokens")])
def test_config_validation(cfg, match):
    with pytest.raises(ConfigError, match=match):
        PackerConfig(**cfg)


def test_pack_rows_stats_fill_while_consuming(tmp_path):
    path = str(tmp_path / "t.parquet")
    write_table(DOCS + [image("i0", [1], [0, 1], (1, 2))], path)
    seqs, stats = pack_rows(read_table(path), V, PackerConfig(length=8))
    assert stats.sequences == 0
    out = list(seqs)
    assert stats.sequences == len(out) == 4 and set(stats.per_task) == {"text", "image_text"}
    assert stats.as_dict()["per_task"]["text"]["sequences"] == 3


def test_segment_and_find_spans_on_partial_pieces():
    tokens = np.array([3, 4, ET, BT, 7, 8, BI, 10, PAD, PAD])
    assert find_spans(tokens, V) == [("text", 3, 6), ("image", 6, 8)]
    head = segment(tokens, ("text", 0, 3), V)
    assert head.ids.tolist() == [3, 4] and not head.starts and head.ends
    open_img = segment(tokens, ("image", 6, 8), V, {"grid": [1, 2]})
    assert open_img.ids.tolist() == [0] and open_img.starts and not open_img.ends
    with pytest.raises(VocabError, match="not a text code"):
        segment(tokens, ("text", 5, 8), V)


# --- properties ------------------------------------------------------------------------
docs_strategy = st.lists(st.lists(st.integers(0, 9), min_size=1, max_size=30), min_size=1, max_size=25)


def stream_of(seqs: list[PackedSequence]) -> np.ndarray:
    return np.concatenate([s.tokens for s in seqs])


@settings(max_examples=80, deadline=None)
@given(docs=docs_strategy, length=st.integers(7, 40), chunk=st.integers(1, 60))
def test_property_cross_boundaries_every_token_once_in_order(docs, length, chunk):
    rows = [doc(f"d{i}", d) for i, d in enumerate(docs)]
    seqs, stats = run(rows, length=length, chunk_tokens=chunk)
    flat = stream_of(seqs)
    content = flat[flat != PAD]
    expected = np.concatenate([[BT, *d, ET] for d in docs])
    assert content.tolist() == expected.tolist()
    assert (flat[content.size:] == PAD).all()          # padding only at the very end
    assert flat.size - content.size < length
    assert stats.pad_tokens == flat.size - content.size
    pieces = [(g.key, g) for s in seqs for g in unpack(s, V)]
    rebuilt: dict[str, list[int]] = {}
    for key, g in pieces:
        rebuilt.setdefault(key, []).extend(g.ids.tolist())
    assert rebuilt == {f"d{i}": d for i, d in enumerate(docs)}
    assert sum(g.starts for _, g in pieces) == sum(g.ends for _, g in pieces) == len(docs)
    # chunking is invisible: one big chunk gives the same sequences
    big, _ = run(rows, length=length)
    assert [s.tokens.tolist() for s in big] == [s.tokens.tolist() for s in seqs]
    assert [s.spans for s in big] == [s.spans for s in seqs]


@settings(max_examples=80, deadline=None)
@given(docs=docs_strategy, length=st.integers(7, 40), chunk=st.integers(1, 60),
       mode=st.sampled_from(["pack", "pad"]))
def test_property_no_cross_keeps_documents_whole(docs, length, chunk, mode):
    rows = [doc(f"d{i}", d) for i, d in enumerate(docs)]
    seqs, _ = run(rows, length=length, cross_boundaries=False, mode=mode, chunk_tokens=chunk)
    rebuilt: dict[str, list[int]] = {}
    for s in seqs:
        segs = unpack(s, V)
        assert len(segs) == len(s.spans) == len(s.keys) and segs
        if mode == "pad":
            assert len(set(s.keys)) == 1
        for g in segs:
            rebuilt.setdefault(g.key, []).extend(g.ids.tolist())
            n = len(docs[int(g.key[1:])]) + 2
            if n <= length:  # a document that fits in L is never split
                assert g.starts and g.ends
    assert rebuilt == {f"d{i}": d for i, d in enumerate(docs)}
    big, _ = run(rows, length=length, cross_boundaries=False, mode=mode)
    assert [s.tokens.tolist() for s in big] == [s.tokens.tolist() for s in seqs]


@settings(max_examples=60, deadline=None)
@given(text=st.lists(st.integers(0, 9), min_size=1, max_size=20), n_q=st.integers(1, 2),
       frames=st.integers(1, 8), length=st.integers(7, 40), data=st.data())
def test_property_audio_pair_round_trip(text, n_q, frames, length, data):
    codes = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n_q * frames, max_size=n_q * frames)))
    seqs, stats = run([audio("a", text, codes, n_q, frames)], length=length)
    if n_q * frames + 5 + 1 > length:
        assert seqs == [] and stats.dropped == 1
        return
    (s,) = seqs
    a, t = unpack(s, V)
    assert a.ids.tolist() == codes.reshape(frames, n_q).T.tolist()
    assert t.ids.tolist() == text[: t.ids.size] and t.ends
    assert stats.truncated == int(t.ids.size < len(text))


@settings(max_examples=40, deadline=None)
@given(docs=st.lists(st.lists(st.integers(0, 9), max_size=30), min_size=1, max_size=25),
       sources=st.lists(st.sampled_from("AB"), min_size=25, max_size=25),
       length=st.integers(7, 40), chunk=st.integers(1, 60), cross=st.booleans(),
       mode=st.sampled_from(["pack", "pad"]), split=st.integers(0, 25))
def test_property_pack_tables_matches_pack(docs, sources, length, chunk, cross, mode, split):
    from trimodal.packing.table import rows_to_table

    rows = [doc(f"d{i}", d, sources[i]) for i, d in enumerate(docs)]
    rows.insert(min(split, len(rows)), image("i0", [1], [0, 1], (1, 2)))
    cfg = PackerConfig(length=length, chunk_tokens=chunk, cross_boundaries=cross, mode=mode)
    by_rows = Packer(cfg, V)
    expected = list(by_rows.pack(rows))
    by_tables = Packer(cfg, V)
    tables = [rows_to_table(rows[:split]), rows_to_table(rows[split:])]  # state carries across
    got = list(by_tables.pack_tables(tables))
    # pairs come first per table, so compare as multisets, then text order per source
    assert sorted(((s.tokens.tolist(), s.spans, s.keys, s.source) for s in got), key=str) == \
        sorted(((s.tokens.tolist(), s.spans, s.keys, s.source) for s in expected), key=str)
    text_got = [(s.source, s.tokens.tolist(), s.keys) for s in got if s.task == "text"]
    text_exp = [(s.source, s.tokens.tolist(), s.keys) for s in expected if s.task == "text"]
    for src in "AB":  # within a source the order is the same
        assert [t for t in text_got if t[0] == src] == [t for t in text_exp if t[0] == src]
    assert by_tables.stats == by_rows.stats


def test_pack_tables_rejects_other_tables():
    import pyarrow as pa
    with pytest.raises(ValueError, match="not a token table"):
        list(Packer(PackerConfig(length=8), V).pack_tables([pa.table({"key": ["a"]})]))
