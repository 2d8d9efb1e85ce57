"""Unified vocabulary: ranges, id mapping both ways, audio flattening, persistence and hash."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trimodal.packing.vocab import MODALITIES, NO_MODALITY, Vocab, VocabError, VocabSpec


@pytest.fixture(params=[False, True], ids=["separate", "shared"])
def vocab(request) -> Vocab:
    return Vocab.from_sizes(100, 50, 8, 3, audio_shared=request.param)


def test_layout_separate_and_shared():
    sep = Vocab.from_sizes(100, 50, 8, 3)
    assert sep.range("text") == (0, 100) and sep.range("image") == (100, 150)
    assert [sep.range("audio", q) for q in range(3)] == [(150, 158), (158, 166), (166, 174)]
    assert sep.range("audio") == (150, 174) and sep.pad == 174
    assert [sep.bos(m) for m in MODALITIES] == [175, 178, 181]
    assert sep.eos("text") == 176 and sep.mask("audio") == 183 and sep.task("text") == 184
    assert sep.size == 184 + 7
    shared = Vocab.from_sizes(100, 50, 8, 3, audio_shared=True)
    assert shared.range("audio", 2) == shared.range("audio") == (150, 158) and shared.pad == 158
    assert shared.hash != sep.hash
    ids = list(sep.specials.values())
    assert len(set(ids)) == len(ids) and max(ids) == sep.size - 1


def test_to_global_and_back_per_modality_and_codebook(vocab):
    text = np.array([0, 5, 99])
    assert vocab.to_global("text", text).tolist() == [0, 5, 99]
    assert vocab.to_local("text", vocab.to_global("text", text)).tolist() == text.tolist()
    img = np.array([0, 49, 7])
    assert vocab.to_global("image", img).tolist() == [100, 149, 107]
    assert vocab.to_local("image", vocab.to_global("image", img)).tolist() == img.tolist()
    codes = np.array([0, 3, 7])
    for q in range(3):
        g = vocab.to_global("audio", codes, codebook=q)
        offset = 150 if vocab.spec.audio_shared else 150 + 8 * q
        assert g.tolist() == (codes + offset).tolist()
        assert vocab.to_local("audio", g, codebook=q).tolist() == codes.tolist()


def test_out_of_range_ids_raise_clear_errors(vocab):
    with pytest.raises(VocabError, match=r"doc7: text id 100 out of range \[0, 100\)"):
        vocab.to_global("text", np.array([1, 100]), where="doc7")
    with pytest.raises(VocabError, match="image id -1 out of range"):
        vocab.to_global("image", np.array([-1]))
    with pytest.raises(VocabError, match=r"audio id 8 out of range \[0, 8\)"):
        vocab.to_global("audio", np.array([8]), codebook=0)
    with pytest.raises(VocabError, match="not a image code"):
        vocab.to_local("image", np.array([99]))
    with pytest.raises(VocabError, match=r"k1: audio code out of range \[0, 8\)"):
        vocab.audio_to_global(np.array([[0], [8]]), where="k1")
    with pytest.raises(VocabError, match="4 codebooks but the vocabulary has 3"):
        vocab.audio_to_global(np.zeros((4, 2), int))
    with pytest.raises(VocabError, match=r"\[n_q, frames\]"):
        vocab.audio_to_global(np.zeros(6, int))
    with pytest.raises(VocabError, match="do not split into 2 codebooks"):
        vocab.audio_to_local(np.arange(150, 155), n_q=2)
    with pytest.raises(VocabError, match="unknown modality 'video'"):
        vocab.range("video")
    with pytest.raises(VocabError, match="unknown task 'x'"):
        vocab.task("x")
    with pytest.raises(VocabError, match="out of vocabulary range"):
        vocab.modality_of(np.array([vocab.size]))
    if not vocab.spec.audio_shared:
        with pytest.raises(VocabError, match="codebook 3 out of range"):
            vocab.range("audio", 3)


def test_audio_frame_major_flattening(vocab):
    codes = np.array([[1, 2, 3, 4], [5, 6, 7, 0], [0, 1, 2, 3]])  # [n_q=3, frames=4]
    flat = vocab.audio_to_global(codes)
    K = 0 if vocab.spec.audio_shared else 8
    expected = [150 + 1, 150 + K + 5, 150 + 2 * K + 0, 150 + 2, 150 + K + 6, 150 + 2 * K + 1]
    assert flat[:6].tolist() == expected  # t0q0 t0q1 t0q2 t1q0 ...
    assert vocab.audio_to_local(flat, n_q=3).tolist() == codes.tolist()
    two = vocab.audio_to_global(codes[:2])  # fewer codebooks -> fewer tokens
    assert two.size == 8 and vocab.audio_to_local(two, n_q=2).tolist() == codes[:2].tolist()


def test_modality_of(vocab):
    ids = np.array([0, 99, 100, 149, 150, vocab.range("audio")[1] - 1, vocab.pad,
                    vocab.bos("text"), vocab.eos("image"), vocab.mask("audio"), vocab.task("t2s")])
    assert vocab.modality_of(ids).tolist() == [0, 0, 1, 1, 2, 2, NO_MODALITY, 0, 1, 2, NO_MODALITY]
    assert vocab.mask_ids().tolist() == [vocab.mask(m) for m in MODALITIES]
    assert vocab.special_name(vocab.pad) == "PAD" and vocab.special_name(3) is None


def test_json_round_trip_and_hash_check(vocab, tmp_path):
    path = str(tmp_path / "vocab.json")
    vocab.save(path)
    again = Vocab.load(path)
    assert again == vocab and again.hash == vocab.hash and again.specials == vocab.specials
    assert json.loads(open(path).read())["size"] == vocab.size
    body = json.loads(open(path).read())
    body["spec"]["text_size"] = 101  # an edit that keeps the file valid JSON
    (tmp_path / "edited.json").write_text(json.dumps(body))
    with pytest.raises(VocabError, match="edited.json: stored hash .* was edited or is corrupt"):
        Vocab.load(str(tmp_path / "edited.json"))
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(VocabError, match="junk.json: not a trimodal vocabulary"):
        Vocab.load(str(tmp_path / "junk.json"))
    with pytest.raises(VocabError, match="not found"):
        Vocab.load(str(tmp_path / "missing.json"))
    vocab.check_hash(vocab.hash, "shard-0")
    with pytest.raises(VocabError, match="shard-0: made with vocabulary"):
        vocab.check_hash("0" * 16, "shard-0")


def test_hash_depends_on_every_spec_field():
    base = VocabSpec(100, 50, 8, 3)
    variants = [VocabSpec(101, 50, 8, 3), VocabSpec(100, 51, 8, 3), VocabSpec(100, 50, 9, 3),
                VocabSpec(100, 50, 8, 2), VocabSpec(100, 50, 8, 3, audio_shared=True),
                VocabSpec(100, 50, 8, 3, tasks=("text",)),
                VocabSpec(100, 50, 8, 3, tokenizers={"text": "abc"})]
    hashes = {Vocab(s).hash for s in variants}
    assert Vocab(base).hash not in hashes and len(hashes) == len(variants)
    assert Vocab(VocabSpec(100, 50, 8, 3)).hash == Vocab(base).hash


@pytest.mark.parametrize("bad", [dict(text_size=0, image_size=1, audio_codebook_size=0, audio_codebooks=0),
                                 dict(text_size=5, image_size=-1, audio_codebook_size=0, audio_codebooks=0),
                                 dict(text_size=5, image_size=0, audio_codebook_size=8, audio_codebooks=0),
                                 dict(text_size=5, image_size=0, audio_codebook_size=0, audio_codebooks=0,
                                      tasks=("a", "a"))])
def test_bad_specs(bad):
    with pytest.raises(VocabError, match="VocabSpec"):
        VocabSpec(**bad)


@settings(max_examples=60, deadline=None)
@given(text=st.integers(1, 300), image=st.integers(0, 300), K=st.integers(1, 64), n_q=st.integers(1, 6),
       shared=st.booleans(), data=st.data())
def test_property_mapping_round_trips(text, image, K, n_q, shared, data):
    vocab = Vocab.from_sizes(text, image, K, n_q, audio_shared=shared)
    t = data.draw(arrays(np.int64, st.integers(0, 20), elements=st.integers(0, text - 1)))
    g = vocab.to_global("text", t)
    assert vocab.to_local("text", g).tolist() == t.tolist()
    assert (vocab.modality_of(g) == 0).all()
    if image:
        i = data.draw(arrays(np.int64, st.integers(0, 20), elements=st.integers(0, image - 1)))
        g = vocab.to_global("image", i)
        assert vocab.to_local("image", g).tolist() == i.tolist() and (vocab.modality_of(g) == 1).all()
    q = data.draw(st.integers(1, n_q))
    frames = data.draw(st.integers(0, 10))
    codes = data.draw(arrays(np.int64, (q, frames), elements=st.integers(0, K - 1)))
    flat = vocab.audio_to_global(codes)
    assert flat.size == q * frames and (vocab.modality_of(flat) == 2).all()
    assert vocab.audio_to_local(flat, n_q=q).tolist() == codes.tolist()
    for qq in range(q):  # each frame's qq-th token lies in codebook qq's range
        lo, hi = vocab.range("audio", qq)
        assert ((flat[qq::q] >= lo) & (flat[qq::q] < hi)).all()
