"""One packed sequence: the unit the packer emits, shards store and the trainer reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PackedSequence:
    """A fixed-length sequence of global token ids and what is where in it.

    spans: (modality, start, end) half-open, one per segment *including* its BOS and EOS
    (text-only packs: one span per document piece; pairs: the image/audio span, then the text
    span). The TASK token and PAD lie outside every span.
    """

    tokens: np.ndarray  # int32 [L]
    task: str
    keys: list[str]
    spans: list[tuple[str, int, int]]
    pad_count: int
    source: str = ""
    #: Shape info of the non-text segment needed to decode it (image [h, w]; audio
    #: {"n_q": .., "frames": .., "audio_length": .., "sample_rate": ..}); empty for text.
    extra: dict = field(default_factory=dict)
