"""The audio-text encoder of tokenization jobs: decode + clean + resample in workers, DAC on device.

Workers do everything that can fail per file (decode with soundfile, reject empty / NaN / too
short / too long audio, downmix, resample to the codec rate, optional loudness normalization)
and tokenize the transcript. The main process runs the codec on whole batches; clips of any
lengths share a batch and still get exactly their single-clip codes (see
`trimodal.tokenizers.audio`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trimodal.corpora.audio import AudioLimits, decode_audio
from trimodal.corpora.samples import AudioText, Sample
from trimodal.jobs.protocol import SkipSample
from trimodal.packing.table import TokenRow
from trimodal.tokenizers.audio import AudioTokenizer, flatten_codes, to_codec_input

WRONG_SAMPLE_TYPE = "wrong_sample_type"


@dataclass
class PreparedAudio:
    """What a worker hands to `AudioEncoder.encode` for one sample."""

    key: str
    source: str
    wave: np.ndarray  # float32 mono at the codec's sample rate
    text_ids: np.ndarray  # int32


class AudioEncoder:
    """Job `Encoder` for audio-text pairs -> rows with task "audio_text", modality "audio".

    Rows hold the codes flattened frame-major with shape [n_q, frames], the clip's length in
    samples at the codec rate (so decoding returns exactly that many) and the codec rate.
    The codec is dropped when the encoder is pickled for spawned workers (they never use it).
    """

    def __init__(self, tokenizer: AudioTokenizer, text_tokenizer: Any,
                 limits: AudioLimits = AudioLimits(), loudness_db: float | None = None):
        self.tokenizer = tokenizer
        self.text_tokenizer = text_tokenizer
        self.limits = limits
        self.loudness_db = loudness_db
        self.sample_rate = tokenizer.sample_rate
        self.name = tokenizer.name
        self.tokenizer_hash = tokenizer.hash
        self.text_tokenizer_hash = str(text_tokenizer.hash)

    def prepare(self, sample: Sample) -> PreparedAudio:
        if not isinstance(sample, AudioText):
            raise SkipSample(getattr(sample, "key", "?"), WRONG_SAMPLE_TYPE)
        audio, sr = decode_audio(sample.key, sample.audio, self.limits)
        wave = to_codec_input(audio, sr, self.sample_rate, self.loudness_db)
        text_ids = np.asarray(self.text_tokenizer.encode([sample.transcript])[0], dtype=np.int32)
        return PreparedAudio(sample.key, sample.source, wave, text_ids)

    def encode(self, prepared: list[PreparedAudio], device: Any) -> list[TokenRow]:
        if not prepared:
            return []
        codes = self.tokenizer.encode([p.wave for p in prepared], device=torch.device(device))
        return [
            TokenRow(key=p.key, source=p.source, task="audio_text", text_ids=p.text_ids,
                     modality="audio", ids=flatten_codes(c).astype(np.int32), shape=tuple(c.shape),
                     audio_length=int(p.wave.size), sample_rate=self.sample_rate,
                     tokenizer=self.name, tokenizer_hash=self.tokenizer_hash,
                     text_tokenizer_hash=self.text_tokenizer_hash)
            for p, c in zip(prepared, codes)
        ]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["tokenizer"] = None
        return state
