"""Audio-text corpus readers (folders, WebDataset tars, HF datasets on disk) and audio decoding.

Readers implement `trimodal.jobs.protocol.Corpus` and yield `AudioText` with the *raw file
bytes*; they reject only what they can see without decoding (missing or empty audio, missing or
non-UTF-8 transcripts, unsafe archive names) as `SkipSample`. Decoding and the checks that need
the samples (unreadable header, NaN/inf, length limits) are in `decode_audio`, which the audio
job calls inside its DataLoader workers, so one bad file is one counted skip.

Skip reasons are fixed strings (below) because job reports count skips by reason.
"""

from __future__ import annotations

import io
import logging
import posixpath
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from trimodal.config import ConfigError, require
from trimodal.corpora.common import (
    BAD_RECORD, PositionalCorpus, folder_units, has_lone_surrogates, is_regular_path, read_tar_positions,
    hf_splits, row_range_rows, row_range_units, tar_units,
)
from trimodal.corpora.samples import AudioText
from trimodal.corpora.samples import SkipSample, WorkUnit

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS: tuple[str, ...] = ("flac", "wav", "ogg", "mp3", "opus")
FORMATS: tuple[str, ...] = ("folder", "wds", "hf")

MISSING_AUDIO = "missing_audio"
EMPTY_AUDIO = "empty_audio"
MISSING_TRANSCRIPT = "missing_transcript"
EMPTY_TRANSCRIPT = "empty_transcript"
BAD_TRANSCRIPT_ENCODING = "bad_transcript_encoding"
UNREADABLE_AUDIO = "unreadable_audio"
NON_FINITE_AUDIO = "non_finite_audio"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"


@dataclass(frozen=True)
class AudioCorpusOptions:
    """How to read an audio-text corpus. Column names apply to `hf` only."""

    name: str = ""
    #: folder/hf: samples per work unit (the unit of atomic output and resume).
    unit_size: int = 1000
    audio_column: str = "audio"
    #: hf: transcript column; "" picks the first of text, transcription, sentence, transcript.
    text_column: str = ""
    key_column: str = ""
    #: hf: which split of a DatasetDict ("" = all splits, in sorted order).
    split: str = ""

    def __post_init__(self) -> None:
        require(self.unit_size > 0, f"unit_size must be > 0, got {self.unit_size}")
        require(bool(self.audio_column), "audio_column must not be empty")


# --- decoding (runs in job workers) ----------------------------------------------------------
@dataclass(frozen=True)
class AudioLimits:
    """Length limits in seconds, checked on the decoded audio before resampling."""

    min_seconds: float = 0.05
    max_seconds: float = 60.0

    def __post_init__(self) -> None:
        require(0 <= self.min_seconds < self.max_seconds,
                f"need 0 <= min_seconds < max_seconds, got {self.min_seconds}, {self.max_seconds}")


def decode_audio(key: str, data: bytes, limits: AudioLimits = AudioLimits()) -> tuple[np.ndarray, int]:
    """Audio file bytes -> (float32 [channels, samples], sample rate), or `SkipSample`.

    soundfile (libsndfile) reads WAV (any PCM width: 8-bit unsigned, 16/24/32-bit, float),
    FLAC, OGG/Vorbis/Opus and MP3 and converts to float in [-1, 1]. Multichannel audio is kept
    here and downmixed by the tokenizer's `to_codec_input`.
    """
    import soundfile as sf

    if not data:
        raise SkipSample(key, EMPTY_AUDIO)
    try:
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError) as err:
        log.debug("%s: unreadable audio (%s)", key, err)
        raise SkipSample(key, UNREADABLE_AUDIO) from None
    if audio.size == 0 or sr <= 0:
        raise SkipSample(key, EMPTY_AUDIO)
    if not np.isfinite(audio).all():
        raise SkipSample(key, NON_FINITE_AUDIO)
    seconds = audio.shape[0] / sr
    if seconds < limits.min_seconds:
        raise SkipSample(key, TOO_SHORT)
    if seconds > limits.max_seconds:
        raise SkipSample(key, TOO_LONG)
    return np.ascontiguousarray(audio.T), int(sr)


# --- shared sample building ------------------------------------------------------------------
def _transcript(key: str, value: bytes | str | None) -> str | SkipSample:
    if value is None:
        return SkipSample(key, MISSING_TRANSCRIPT)
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return SkipSample(key, BAD_TRANSCRIPT_ENCODING)
    if not isinstance(value, str):
        return SkipSample(key, BAD_RECORD)
    if has_lone_surrogates(value):
        return SkipSample(key, BAD_TRANSCRIPT_ENCODING)
    value = value.strip()
    return value if value else SkipSample(key, EMPTY_TRANSCRIPT)


def _sample(key: str, audio: bytes | None, transcript: bytes | str | None, source: str,
            meta: dict[str, Any] | None = None) -> AudioText | SkipSample:
    """One sample from its raw parts, or why it cannot be one (audio checked first)."""
    if audio is None:
        return SkipSample(key, MISSING_AUDIO)
    if len(audio) == 0:
        return SkipSample(key, EMPTY_AUDIO)
    text = _transcript(key, transcript)
    if isinstance(text, SkipSample):
        return text
    return AudioText(key=key, audio=bytes(audio), transcript=text, source=source, meta=meta or {})


def _first_audio(files: dict[str, Any]) -> Any:
    return next((files[e] for e in AUDIO_EXTENSIONS if e in files), None)


# --- folder of audio files with transcript files ----------------------------------------------
class FolderAudioCorpus(PositionalCorpus):
    """`a.wav` (or .flac, ...) + `a.txt` anywhere below a folder.

    Units are chunks of `unit_size` samples within one directory, so adding a directory does not
    renumber the units of the others. A transcript without audio is a counted `missing_audio`.
    """

    default_name = "folder"

    def __init__(self, path: str, options: AudioCorpusOptions | None = None):
        self.options = options or AudioCorpusOptions()
        super().__init__(path, self.options.name)

    def units(self) -> list[WorkUnit]:
        units = folder_units(self, (*AUDIO_EXTENSIONS, "txt"), self.options.unit_size)
        if not units:
            raise ConfigError(f"{self.path}: no audio ({'/'.join(AUDIO_EXTENSIONS)}) or .txt files found")
        return units

    def _read_positions(self, unit: WorkUnit, keep: Callable[[int], bool]
                        ) -> Iterator[AudioText | SkipSample]:
        for i, (key, files) in enumerate(unit.payload["samples"]):
            if not keep(i):
                continue  # another worker's files: not opened here
            audio_path = _first_audio(files)
            audio = self._read(audio_path) if audio_path else None
            text = self._read(files["txt"]) if "txt" in files else None
            yield _sample(key, audio, text, unit.source, {"path": audio_path} if audio_path else {})


# --- WebDataset tars --------------------------------------------------------------------------
class WdsAudioCorpus(PositionalCorpus):
    """WebDataset tars with `.flac`/`.wav` + `.txt` per key; one unit per tar."""

    default_name = "wds"

    def __init__(self, path: str, options: AudioCorpusOptions | None = None):
        self.options = options or AudioCorpusOptions()
        super().__init__(path, self.options.name)

    def units(self) -> list[WorkUnit]:
        return tar_units(self)

    def _read_positions(self, unit: WorkUnit, keep: Callable[[int], bool]
                        ) -> Iterator[AudioText | SkipSample]:
        return read_tar_positions(self, unit, keep, lambda group: _sample(
            group.key, _first_audio(group.files), group.files.get("txt"), unit.source))


# --- Hugging Face datasets saved with save_to_disk --------------------------------------------
TEXT_COLUMN_GUESSES = ("text", "transcription", "sentence", "transcript")


class HFAudioCorpus(PositionalCorpus):
    """A `datasets` Dataset/DatasetDict saved to disk (e.g. built with `audiofolder`).

    The `Audio` column is cast to `Audio(decode=False)`: decoding it through `datasets` needs
    torchcodec and ffmpeg, and would happen in the wrong place (the reader, not the job
    workers). We take the stored bytes, or read the stored path when there are no bytes.
    """

    default_name = "hf"

    def __init__(self, path: str, options: AudioCorpusOptions | None = None):
        self.options = options or AudioCorpusOptions()
        super().__init__(path, self.options.name)
        self._datasets: dict[str, Any] | None = None
        self._text_columns: dict[str, str] = {}

    def _load(self) -> dict[str, Any]:
        if self._datasets is not None:
            return self._datasets
        import datasets

        out = {}
        for split, ds in hf_splits(self.path, self.options.split).items():
            col = self.options.audio_column
            if col not in ds.column_names:
                raise ConfigError(f"{self.path}: no audio column {col!r}; have {ds.column_names}")
            if isinstance(ds.features[col], datasets.Audio):
                ds = ds.cast_column(col, datasets.Audio(decode=False))
            text_col = self.options.text_column or next(
                (c for c in TEXT_COLUMN_GUESSES if c in ds.column_names), "")
            if not text_col or text_col not in ds.column_names:
                raise ConfigError(f"{self.path}: no transcript column "
                                  f"{self.options.text_column or TEXT_COLUMN_GUESSES!r}; have {ds.column_names}")
            self._text_columns[split] = text_col
            out[split] = ds
        self._datasets = out
        return out

    def units(self) -> list[WorkUnit]:
        return row_range_units(self, self._load(), self.options.unit_size)

    def _read_positions(self, unit: WorkUnit, keep: Callable[[int], bool]
                        ) -> Iterator[AudioText | SkipSample]:
        chunk, keys = row_range_rows(self._load(), unit, keep)
        text_col, kc = self._text_columns[unit.payload["split"]], self.options.key_column
        for k, key in enumerate(keys):
            if kc and kc in chunk and chunk[kc][k] not in (None, ""):
                key = str(chunk[kc][k])
            audio = self._audio_bytes(key, chunk[self.options.audio_column][k])
            if isinstance(audio, SkipSample):
                yield audio
                continue
            yield _sample(key, audio, chunk[text_col][k], unit.source)

    def _audio_bytes(self, key: str, cell: Any) -> bytes | None | SkipSample:
        if cell is None:
            return None
        if isinstance(cell, (bytes, bytearray)):
            return bytes(cell)
        if not isinstance(cell, dict):
            return SkipSample(key, BAD_RECORD)
        if cell.get("bytes") is not None:  # b"" is an empty file (counted), not a missing one
            return bytes(cell["bytes"])
        path = cell.get("path")
        if not path:
            return None
        full = path if path.startswith("/") or "://" in path else posixpath.join(self.root, path)
        if not is_regular_path(self.fs, full):  # absent, a FIFO, a device: never opened
            return None
        try:
            with self.fs.open(full, "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def __getstate__(self) -> dict[str, Any]:
        # Arrow-backed datasets reopen cheaply; do not ship them to DataLoader workers.
        state = dict(self.__dict__)
        state["_datasets"] = None
        return state


def open_audio_corpus(path: str, fmt: str, options: AudioCorpusOptions | None = None):
    """The reader for `fmt` (one of FORMATS) over `path`."""
    readers = {"folder": FolderAudioCorpus, "wds": WdsAudioCorpus, "hf": HFAudioCorpus}
    if fmt not in readers:
        raise ConfigError(f"unknown audio corpus format {fmt!r}; expected one of {list(readers)}")
    return readers[fmt](path, options)
