"""Audio-text readers and audio decoding, including every kind of bad input we reject or convert."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from trimodal.config import ConfigError
from trimodal.corpora import audio as A
from trimodal.corpora.audio import AudioCorpusOptions, AudioLimits, decode_audio, open_audio_corpus
from trimodal.corpora.samples import AudioText
from trimodal.jobs.protocol import SkipSample

SR = 16000


def wav_bytes(data: np.ndarray, sr: int = SR, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, data, sr, subtype=subtype, format=fmt)
    return buf.getvalue()


def tone(seconds: float, sr: int = SR, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def nan_wav() -> bytes:
    x = tone(0.3)
    x[100] = np.nan
    return wav_bytes(x, subtype="FLOAT")


def make_bad_folder(root: Path) -> Counter:
    """A folder with good, convertible and bad files; returns the expected skip counts."""
    root.mkdir(parents=True, exist_ok=True)
    good = {
        "ok_mono": wav_bytes(tone(0.3)),
        "ok_stereo_44k": wav_bytes(np.stack([tone(0.25, 44100), tone(0.25, 44100, 220)], 1), 44100),
        "ok_8bit": wav_bytes(tone(0.3), subtype="PCM_U8"),
        "ok_flac": wav_bytes(tone(0.3), subtype="PCM_16", fmt="FLAC"),
    }
    for k, data in good.items():
        (root / f"{k}.{'flac' if 'flac' in k else 'wav'}").write_bytes(data)
        (root / f"{k}.txt").write_text(f"transcript of {k}\n")
    bad = {  # name -> (audio bytes or None, transcript bytes or None)
        "empty": (b"", b"x"),
        "bad_header": (b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4, b"x"),
        "nan": (nan_wav(), b"x"),
        "short": (wav_bytes(tone(0.01)), b"x"),
        "long": (wav_bytes(tone(2.5)), b"x"),
        "no_text": (wav_bytes(tone(0.3)), None),
        "blank_text": (wav_bytes(tone(0.3)), b"  \n"),
        "latin1_text": (wav_bytes(tone(0.3)), "caf\xe9".encode("latin-1")),
        "no_audio": (None, b"orphan transcript"),
    }
    for k, (audio, text) in bad.items():
        if audio is not None:
            (root / f"{k}.wav").write_bytes(audio)
        if text is not None:
            (root / f"{k}.txt").write_bytes(text)
    return Counter({A.EMPTY_AUDIO: 1, A.UNREADABLE_AUDIO: 1, A.NON_FINITE_AUDIO: 1, A.TOO_SHORT: 1,
                    A.TOO_LONG: 1, A.MISSING_TRANSCRIPT: 1, A.EMPTY_TRANSCRIPT: 1,
                    A.BAD_TRANSCRIPT_ENCODING: 1, A.MISSING_AUDIO: 1})


LIMITS = AudioLimits(min_seconds=0.05, max_seconds=2.0)


def read_and_decode(corpus) -> tuple[dict[str, tuple[np.ndarray, int]], Counter]:
    ok, skips = {}, Counter()
    for unit in corpus.units():
        for item in corpus.read(unit):
            if isinstance(item, SkipSample):
                skips[item.reason] += 1
                continue
            assert isinstance(item, AudioText) and item.transcript == item.transcript.strip()
            try:
                ok[item.key] = decode_audio(item.key, item.audio, LIMITS)
            except SkipSample as skip:
                skips[skip.reason] += 1
    return ok, skips


def test_folder_bad_inputs_counted_exactly(tmp_path: Path):
    expected = make_bad_folder(tmp_path / "c")
    corpus = open_audio_corpus(str(tmp_path / "c"), "folder", AudioCorpusOptions(unit_size=5))
    ok, skips = read_and_decode(corpus)
    assert skips == expected
    assert sorted(ok) == ["ok_8bit", "ok_flac", "ok_mono", "ok_stereo_44k"]
    stereo, sr = ok["ok_stereo_44k"]
    assert stereo.shape == (2, int(0.25 * 44100)) and sr == 44100
    eight, _ = ok["ok_8bit"]  # 8-bit unsigned PCM comes back as float around 0, not 0..255
    assert eight.dtype == np.float32 and abs(float(eight.mean())) < 0.02 and np.abs(eight).max() > 0.3
    # units are deterministic and cover each sample once
    units = corpus.units()
    assert [u.id for u in units] == [u.id for u in corpus.units()]
    assert sum(len(u.payload["samples"]) for u in units) == 13


def tar_with(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_wds_reader_safe_names_and_pairs(tmp_path: Path):
    d = tmp_path / "wds"
    d.mkdir()
    tar_with(d / "000.tar", [
        ("s/000.flac", wav_bytes(tone(0.2), fmt="FLAC")), ("s/000.txt", b"hello world"),
        ("s/001.wav", wav_bytes(tone(0.2))), ("s/001.txt", b"second"),
        ("../evil.wav", wav_bytes(tone(0.2))), ("../evil.txt", b"x"),
        ("s/002.wav", wav_bytes(tone(0.2))),
    ])
    tar_with(d / "001.tar", [("003.txt", b"text only")])
    (d / "002.tar").write_bytes(b"this is not a tar archive at all" * 40)
    corpus = open_audio_corpus(str(d), "wds")
    ok, skips = read_and_decode(corpus)
    assert sorted(ok) == ["s/000", "s/001"]
    assert skips == Counter({"unsafe_member_name": 1, A.MISSING_TRANSCRIPT: 1, A.MISSING_AUDIO: 1,
                             "corrupt_archive": 1})
    assert len(corpus.units()) == 3


def test_hf_reader_bytes_and_paths_without_decoding(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    (tmp_path / "a.wav").write_bytes(wav_bytes(tone(0.2)))
    rows = {
        "audio": [{"bytes": wav_bytes(tone(0.3)), "path": None}, {"bytes": None, "path": str(tmp_path / "a.wav")},
                  None, {"bytes": nan_wav(), "path": None}],
        "transcription": ["one", "two", "three", "four"],
    }
    ds = datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(decode=False))
    ds.save_to_disk(str(tmp_path / "hf"))
    corpus = open_audio_corpus(str(tmp_path / "hf"), "hf", AudioCorpusOptions(unit_size=3))
    assert [u.id for u in corpus.units()] == ["hf__00000", "hf__00001"]
    ok, skips = read_and_decode(corpus)
    assert sorted(ok) == ["0", "1"] and ok["1"][0].shape == (1, int(0.2 * SR))
    assert skips == Counter({A.MISSING_AUDIO: 1, A.NON_FINITE_AUDIO: 1})
    with pytest.raises(ConfigError, match="transcript column"):
        open_audio_corpus(str(tmp_path / "hf"), "hf", AudioCorpusOptions(text_column="nope")).units()


def test_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown audio corpus format"):
        open_audio_corpus(str(tmp_path), "zip")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("nothing")
    with pytest.raises(ConfigError, match="no audio"):
        open_audio_corpus(str(tmp_path / "empty"), "folder").units()
    with pytest.raises(ConfigError):
        AudioLimits(min_seconds=2, max_seconds=1)


def _describe(item) -> tuple:
    if isinstance(item, SkipSample):
        return ("skip", item.key, item.reason)
    return ("ok", item.key, item.audio, item.transcript)


@pytest.mark.parametrize("fmt", ["folder", "wds", "hf"])
def test_read_parts_interleave_to_read(tmp_path: Path, fmt: str):
    """Worker w of N gets exactly the entries of read() at positions i % N == w, hostile
    entries (bad names, missing halves, a file that is not a tar) included."""
    if fmt == "folder":
        make_bad_folder(tmp_path / "c")
        corpus = open_audio_corpus(str(tmp_path / "c"), "folder", AudioCorpusOptions(unit_size=5))
    elif fmt == "hf":
        datasets = pytest.importorskip("datasets")
        rows = {"audio": [{"bytes": wav_bytes(tone(0.1 + 0.05 * i)), "path": None} if i % 4 else None
                          for i in range(11)],
                "transcription": [f"clip {i}" for i in range(11)],
                "id": ["" if i == 5 else f"id{i}" for i in range(11)]}
        datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(decode=False)).save_to_disk(
            str(tmp_path / "c"))
        corpus = open_audio_corpus(str(tmp_path / "c"), "hf", AudioCorpusOptions(unit_size=7, key_column="id"))
    else:
        d = tmp_path / "c"
        d.mkdir()
        tar_with(d / "000.tar", [
            ("s/000.flac", wav_bytes(tone(0.2), fmt="FLAC")), ("s/000.txt", b"hello"),
            ("../evil.wav", wav_bytes(tone(0.2))), ("../evil.txt", b"x"),
            ("s/001.wav", wav_bytes(tone(0.2))), ("s/002.txt", b"text only")])
        (d / "001.tar").write_bytes(b"not a tar archive" * 40)
        corpus = open_audio_corpus(str(d), "wds")
    for unit in corpus.units():
        whole = [_describe(x) for x in corpus.read(unit)]
        for n in (1, 2, 3):
            parts = [[_describe(x) for x in corpus.read_part(unit, p, n)] for p in range(n)]
            assert parts == [whole[p::n] for p in range(n)]
    with pytest.raises(ValueError, match="out of range"):
        list(corpus.read_part(corpus.units()[0], 2, 2))
