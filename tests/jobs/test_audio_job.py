"""Audio tokenization through the job runner: rows equal the bare codec, exact skips, resume."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from trimodal.corpora.audio import AudioCorpusOptions, AudioLimits, decode_audio, open_audio_corpus
from trimodal.jobs.audio import AudioEncoder
from trimodal.jobs.runner import JobConfig, run_job
from trimodal.packing.table import read_table
from trimodal.tokenizers.audio import AudioTokenizer, DACConfig, to_codec_input, unflatten_codes
from trimodal.tokenizers.text import TextTokenizer, TextTokenizerConfig

pytest.importorskip("dac")

TINY = DACConfig(sample_rate=16000, encoder_dim=8, encoder_rates=[2, 4, 5, 8], decoder_dim=32,
                 decoder_rates=[8, 5, 4, 2], n_codebooks=4, codebook_size=256, codebook_dim=8)
LIMITS = AudioLimits(min_seconds=0.05, max_seconds=1.0)


@pytest.fixture(scope="module")
def audio_tok() -> AudioTokenizer:
    return AudioTokenizer.from_config(TINY, n_q=3, seed=1)


@pytest.fixture(scope="module")
def text_tok() -> TextTokenizer:
    docs = [f"clip {i} says a red circle on the left" for i in range(40)]
    return TextTokenizer.train(docs, config=TextTokenizerConfig(vocab_size=300, hard_vocab_limit=False))


def _wav(x: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, subtype=subtype, format="WAV")
    return buf.getvalue()


def make_corpus(root: Path) -> dict[str, int]:
    """10 good clips (lengths, rates and formats vary) + bad ones; returns expected skip counts."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(10):
        sr = 44100 if i % 3 == 0 else 16000
        n = int(sr * (0.1 + 0.07 * i))
        t = np.arange(n) / sr
        x = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.02 * rng.standard_normal(n)
        if i == 4:
            x = np.stack([x, -x * 0.5], 1)  # stereo
        (root / f"c{i:02d}.wav").write_bytes(_wav(x, sr, "PCM_U8" if i == 5 else "PCM_16"))
        (root / f"c{i:02d}.txt").write_text(f"clip {i} says a red circle")
    (root / "x_empty.wav").write_bytes(b"")
    (root / "x_empty.txt").write_text("empty")
    (root / "x_junk.wav").write_bytes(b"not audio" * 50)
    (root / "x_junk.txt").write_text("junk")
    (root / "x_long.wav").write_bytes(_wav(np.zeros(16000 * 2), 16000))
    (root / "x_long.txt").write_text("long")
    (root / "x_notext.wav").write_bytes(_wav(np.zeros(4000), 16000))
    return {"empty_audio": 1, "unreadable_audio": 1, "too_long": 1, "missing_transcript": 1}


def _tables(out: Path) -> dict[str, list]:
    return {p.name: [(r.key, r.text_ids.tolist(), r.ids.tolist(), r.shape, r.audio_length)
                     for r in read_table(str(p))]
            for p in sorted((out / "tables").glob("*.parquet"))}


def _skips(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in (out / "tables").glob("*.stats.json"):
        for reason, entry in json.loads(p.read_text())["skipped"].items():
            counts[reason] = counts.get(reason, 0) + entry["count"]
    return counts


def test_job_rows_equal_bare_codec_and_skips_are_exact(tmp_path: Path, audio_tok, text_tok):
    expected_skips = make_corpus(tmp_path / "c")
    corpus = open_audio_corpus(str(tmp_path / "c"), "folder", AudioCorpusOptions(name="speech", unit_size=5))
    enc = AudioEncoder(audio_tok, text_tok, limits=LIMITS)
    run_job(corpus, enc, JobConfig(out=str(tmp_path / "out"), batch_size=3, workers=2, progress=False))
    assert _skips(tmp_path / "out") == expected_skips
    rows = [r for p in sorted((tmp_path / "out" / "tables").glob("*.parquet")) for r in read_table(str(p))]
    assert [r.key for r in rows] == [f"c{i:02d}" for i in range(10)]
    for r in rows:
        data = (tmp_path / "c" / f"{r.key}.wav").read_bytes()
        audio, sr = decode_audio(r.key, data, LIMITS)
        wave = to_codec_input(audio, sr, 16000)
        codes = unflatten_codes(r.ids, 3)
        np.testing.assert_array_equal(codes, audio_tok.encode([wave])[0])  # batch == alone
        assert r.task == "audio_text" and r.modality == "audio" and r.shape == (3, codes.shape[1])
        assert r.audio_length == wave.size and r.sample_rate == 16000
        assert r.tokenizer == audio_tok.name and r.tokenizer_hash == audio_tok.hash
        assert r.text_tokenizer_hash == text_tok.hash
        assert text_tok.decode([r.text_ids])[0] == (tmp_path / "c" / f"{r.key}.txt").read_text()
    out = audio_tok.decode([unflatten_codes(r.ids, 3) for r in rows], [r.audio_length for r in rows])
    assert [o.size for o in out] == [r.audio_length for r in rows]


class _CrashAfter(AudioEncoder):
    def __init__(self, *args, batches: int, **kw):
        super().__init__(*args, **kw)
        self.left = batches

    def encode(self, prepared, device):
        if self.left == 0:
            raise RuntimeError("simulated crash")
        self.left -= 1
        return super().encode(prepared, device)


def test_resume_after_crash_gives_identical_tables(tmp_path: Path, audio_tok, text_tok):
    make_corpus(tmp_path / "c")
    corpus = open_audio_corpus(str(tmp_path / "c"), "folder", AudioCorpusOptions(unit_size=4))
    cfg = dict(batch_size=2, workers=0, progress=False)
    run_job(corpus, AudioEncoder(audio_tok, text_tok, limits=LIMITS), JobConfig(out=str(tmp_path / "a"), **cfg))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_job(corpus, _CrashAfter(audio_tok, text_tok, limits=LIMITS, batches=3),
                JobConfig(out=str(tmp_path / "b"), **cfg))
    partial = _tables(tmp_path / "b")
    assert 0 < len(partial) < len(_tables(tmp_path / "a"))
    report = run_job(corpus, AudioEncoder(audio_tok, text_tok, limits=LIMITS), JobConfig(out=str(tmp_path / "b"), **cfg))
    assert report["units_already_done"] == len(partial)
    assert _tables(tmp_path / "b") == _tables(tmp_path / "a")
    assert _skips(tmp_path / "b") == _skips(tmp_path / "a")


def test_encoder_pickles_without_codec(audio_tok, text_tok):
    enc = AudioEncoder(audio_tok, text_tok)
    clone = pickle.loads(pickle.dumps(enc))
    assert clone.tokenizer is None and clone.tokenizer_hash == audio_tok.hash and clone.sample_rate == 16000


def test_cli_tokenize_audio_with_upstream_weights(tmp_path: Path, audio_tok, text_tok):
    from trimodal.cli import main

    root = tmp_path / "c"
    root.mkdir()
    (root / "a.wav").write_bytes(_wav(0.2 * np.sin(np.arange(6000) / 7.0), 16000))
    (root / "a.txt").write_text("clip one")
    audio_tok.model.save(str(tmp_path / "w.pth"), package=False)  # the upstream weight format
    text_tok.save(str(tmp_path / "t.model"))
    rc = main(["tokenize", "audio", "--corpus", str(root), "--format", "folder", "--dac-weights",
               str(tmp_path / "w.pth"), "--n-q", "2", "--text-tokenizer", str(tmp_path / "t.model"),
               "--out", str(tmp_path / "out"), "--workers", "0", "--no-progress"])
    assert rc == 0
    (row,) = [r for p in (tmp_path / "out" / "tables").glob("*.parquet") for r in read_table(str(p))]
    assert row.shape == (2, 19) and row.tokenizer_hash == audio_tok.with_n_q(2).hash
    wave = to_codec_input(decode_audio("a", (root / "a.wav").read_bytes())[0], 16000, 16000)
    np.testing.assert_array_equal(unflatten_codes(row.ids, 2), audio_tok.with_n_q(2).encode([wave])[0])
