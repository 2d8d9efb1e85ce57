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


@dataclass(frozen=True)
class WorkUnit:
    """An input shard: the smallest piece of work whose output is written atomically.

    `id` must be stable across runs (it names the output file, which is how reruns skip
    finished work); `payload` tells the corpus what to read (a tar path, a row range, ...).
    """

    id: str
    source: str
    payload: dict[str, Any] = field(default_factory=dict)


class SkipSample(Exception):
    """Raised for one bad sample; the job counts it under `reason` and goes on."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason
