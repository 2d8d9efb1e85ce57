"""Typed samples every corpus reader yields.

Readers stop at bytes: decoding images and audio happens later, inside the tokenization
job's DataLoader workers, so that a bad file is caught (and counted) per sample, and decoding
overlaps with encoding on the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TextDoc:
    key: str
    text: str
    source: str = ""


@dataclass(frozen=True)
class ImageText:
    key: str
    image: bytes
    caption: str
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AudioText:
    key: str
    audio: bytes
    transcript: str
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


Sample = TextDoc | ImageText | AudioText
