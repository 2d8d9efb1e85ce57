"""What a tokenization job needs from a corpus and from an encoder.

Keeping these two small protocols apart is what lets one job runner serve image and audio
(and text) alike: the corpus knows how to cut its input into work units and read them; the
encoder knows how to decode one raw sample on a CPU worker and encode a batch on the device.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol

from trimodal.corpora.samples import Sample, SkipSample, WorkUnit  # noqa: F401  (re-exported)
from trimodal.packing.table import TokenRow


class Corpus(Protocol):
    name: str

    def units(self) -> list[WorkUnit]:
        """All work units, in a deterministic order (every rank must see the same list)."""

    def read(self, unit: WorkUnit) -> Iterator[Sample | SkipSample]:
        """Samples of one unit in a deterministic order; unreadable entries come as SkipSample."""


class Encoder(Protocol):
    name: str
    tokenizer_hash: str

    def prepare(self, sample: Sample) -> Any:
        """CPU work for one sample (decode, resize, resample); runs in DataLoader workers.
        Raises SkipSample for bad input."""

    def encode(self, prepared: list[Any], device: Any) -> list[TokenRow]:
        """Encode a batch of prepared samples on `device`; one TokenRow per input, same order."""
