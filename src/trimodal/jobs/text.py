"""The text encoder of tokenization jobs: documents -> rows with task "text".

SentencePiece is fast and releases the GIL, so documents are encoded in `prepare` (in the
DataLoader workers, in parallel) and `encode` only assembles rows; no device is involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trimodal.corpora.samples import Sample, TextDoc
from trimodal.jobs.protocol import SkipSample
from trimodal.packing.table import TokenRow

EMPTY_TEXT = "empty_text"
WRONG_SAMPLE_TYPE = "wrong_sample_type"


@dataclass
class PreparedText:
    key: str
    source: str
    text_ids: np.ndarray


class TextEncoder:
    """Job `Encoder` for text documents with a text tokenizer (`encode(list[str])`, `name`, `hash`)."""

    def __init__(self, text_tokenizer: Any):
        self.text_tokenizer = text_tokenizer
        self.name = str(text_tokenizer.name)
        self.tokenizer_hash = str(text_tokenizer.hash)

    def prepare(self, sample: Sample) -> PreparedText:
        if not isinstance(sample, TextDoc):
            raise SkipSample(getattr(sample, "key", "?"), WRONG_SAMPLE_TYPE)
        if not sample.text.strip():
            raise SkipSample(sample.key, EMPTY_TEXT)
        ids = np.asarray(self.text_tokenizer.encode([sample.text])[0], dtype=np.int32)
        if ids.size == 0:
            raise SkipSample(sample.key, EMPTY_TEXT)
        return PreparedText(sample.key, sample.source, ids)

    def encode(self, prepared: list[PreparedText], device: Any) -> list[TokenRow]:
        # Text-only rows: no modality tokenizer (the table schema wants "" there).
        return [TokenRow(key=p.key, source=p.source, task="text", text_ids=p.text_ids,
                         modality="text", text_tokenizer_hash=self.tokenizer_hash)
                for p in prepared]
