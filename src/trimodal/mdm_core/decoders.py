"""What the sampler needs from the codecs, as `Protocol`s.

mdm_core must not import the tokenizers (DESIGN.md, dependency direction): the CLI builds
objects that satisfy these from the tokenizer checkpoints and hands them in. Tests use tiny
hand-made ones. All ids here are *local* to the codec (the sampler converts to and from the
unified vocabulary).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class TextCodec(Protocol):
    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Strings -> local text ids (no BOS/EOS)."""
        ...

    def decode(self, ids: Sequence[np.ndarray]) -> list[str]:
        """`trimodal.tokenizers.text.TextTokenizer` fits as is."""
        ...


@runtime_checkable
class ImageDecoder(Protocol):
    def decode(self, ids: Sequence[np.ndarray]) -> list[Any]:
        """B arrays of local image codes [h, w] -> B images (PIL images or uint8 [H, W, 3]).
        `trimodal.tokenizers.image.ImageTokenizer` fits as is."""
        ...


@runtime_checkable
class AudioDecoder(Protocol):
    sample_rate: int

    def decode(self, codes: Sequence[np.ndarray], lengths: Sequence[int] | None = None) -> list[np.ndarray]:
        """B arrays of local codes [n_q, T] (+ optional lengths in samples) -> B float
        waveforms at `sample_rate`. `trimodal.tokenizers.audio.AudioTokenizer` fits as is."""
        ...
