"""One packed sequence: the unit the packer emits, shards store and the trainer reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from trimodal.packing.vocab import MODALITIES, Vocab


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


# --- building one pair sequence --------------------------------------------------------
# Kept as free functions (not PackedSequence methods) so the dataclass stays the plain record
# shards and the trainer exchange; these are the rules that give it its content.

#: Framing tokens of a pair: TASK, BOS_m, EOS_m, BOS_text, EOS_text.
PAIR_FRAMING = 5
#: Framing tokens of one text document: BOS_text, EOS_text.
TEXT_FRAMING = 2

OverflowPolicy = Literal["truncate_text", "drop"]


class SkipRow(Exception):
    """One token-table row cannot be packed; the packer counts it under `reason` and goes on."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def modality_codes(vocab: Vocab, modality: str, ids: np.ndarray, shape: Sequence[int], key: str,
                   n_q: int = 0) -> tuple[np.ndarray, dict]:
    """Local modality ids of a token-table row -> (global ids, extra needed to decode them).

    Image ids are row-major [h, w]; audio ids are frame-major over shape [n_q, frames] as the
    token table stores them. `n_q` > 0 keeps only the first n_q audio codebooks (fewer tokens).
    """
    ids = np.asarray(ids).reshape(-1)
    if ids.size == 0:
        raise SkipRow(key, f"empty {modality} ids")
    if modality == "image":
        if len(shape) == 2 and int(np.prod(shape)) != ids.size:
            raise SkipRow(key, "image ids do not match shape")
        extra = {"grid": [int(s) for s in shape]} if len(shape) == 2 else {}
        return vocab.to_global("image", ids, where=key), extra
    if modality == "audio":
        if len(shape) != 2 or shape[0] * shape[1] != ids.size:
            raise SkipRow(key, "audio ids do not match shape [n_q, frames]")
        rows_q, frames = int(shape[0]), int(shape[1])
        codes = ids.reshape(frames, rows_q).T  # frame-major storage -> [n_q, frames]
        if n_q:
            if n_q > rows_q:
                raise SkipRow(key, f"audio has {rows_q} codebooks, fewer than the {n_q} asked for")
            codes = codes[:n_q]
        return vocab.audio_to_global(codes, where=key), {"n_q": int(codes.shape[0]), "frames": frames}
    raise SkipRow(key, f"unknown modality {modality!r} for a pair")


def pair_tokens(vocab: Vocab, task: str, modality: str, modality_global: np.ndarray,
                text_ids: np.ndarray, length: int, overflow: OverflowPolicy, key: str,
                ) -> tuple[np.ndarray, list[tuple[str, int, int]], bool]:
    """[TASK] [BOS_m] codes [EOS_m] [BOS_text] text [EOS_text] PAD... -> (tokens, spans, truncated).

    Too long: "truncate_text" cuts the *text* (never the codes, which would not decode) and keeps
    EOS_text, so every segment stays closed and decodable; at least one text token must remain,
    otherwise the row is skipped like under "drop" (raised as SkipRow "too long").
    """
    text_ids = np.asarray(text_ids).reshape(-1)
    if text_ids.size == 0:
        raise SkipRow(key, "empty text")
    text_global = vocab.to_global("text", text_ids, where=key)
    n_m = modality_global.size
    room = length - PAIR_FRAMING - n_m  # text tokens that fit
    truncated = False
    if text_global.size > room:
        if overflow == "drop" or room < 1:
            raise SkipRow(key, "too long")
        text_global = text_global[:room]
        truncated = True
    out = np.full(length, vocab.pad, dtype=np.int32)
    m_end = 2 + n_m + 1  # TASK, BOS_m, codes, EOS_m
    out[0] = vocab.task(task)
    out[1] = vocab.bos(modality)
    out[2:2 + n_m] = modality_global
    out[m_end - 1] = vocab.eos(modality)
    t_end = m_end + text_global.size + 2
    out[m_end] = vocab.bos("text")
    out[m_end + 1:t_end - 1] = text_global
    out[t_end - 1] = vocab.eos("text")
    return out, [(modality, 1, m_end), ("text", m_end, t_end)], truncated


# --- reading sequences back ------------------------------------------------------------
@dataclass
class Segment:
    """One decoded segment: local ids of its modality, and whether it is complete here.

    ids: text/image 1-D local ids (image reshaped to its grid [h, w] when complete and the
    grid is known); audio [n_q, frames]. `starts`/`ends`: the segment's BOS/EOS lie in this
    sequence (False for a document piece continued from / into a neighbouring sequence).
    """

    modality: str
    ids: np.ndarray
    starts: bool
    ends: bool
    key: str = ""


def unpack(seq: PackedSequence, vocab: Vocab) -> list[Segment]:
    """Per-segment local ids of a packed sequence (the inverse of the packer, per span)."""
    keys = seq.keys if len(seq.keys) == len(seq.spans) else [seq.keys[0] if seq.keys else ""] * len(seq.spans)
    return [segment(seq.tokens, span, vocab, seq.extra, key) for span, key in zip(seq.spans, keys)]


def segment(tokens: np.ndarray, span: tuple[str, int, int], vocab: Vocab, extra: dict | None = None,
            key: str = "") -> Segment:
    """Local ids of one span of `tokens`; `extra` supplies image grid / audio n_q."""
    modality, start, end = span
    extra = extra or {}
    body = np.asarray(tokens[start:end], dtype=np.int64)
    starts = bool(body.size) and int(body[0]) == vocab.bos(modality)
    ends = bool(body.size) and int(body[-1]) == vocab.eos(modality)
    body = body[int(starts): body.size - int(ends)]
    where = f"{key or 'sequence'} span {span}"
    if modality == "audio":
        n_q = int(extra.get("n_q", vocab.spec.audio_codebooks))
        return Segment(modality, vocab.audio_to_local(body, n_q, where=where), starts, ends, key)
    ids = vocab.to_local(modality, body, where=where)
    grid = extra.get("grid")
    if modality == "image" and grid and starts and ends and ids.size == grid[0] * grid[1]:
        ids = ids.reshape(grid)
    return Segment(modality, ids, starts, ends, key)


def find_spans(tokens: np.ndarray, vocab: Vocab) -> list[tuple[str, int, int]]:
    """Spans recovered from the tokens alone (e.g. a sampler's output, which has no meta).

    A segment opens at BOS_m and runs to the next EOS_m inclusive, or stops before the next
    BOS, PAD or TASK token if its EOS never came.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    bos = {vocab.bos(m): m for m in MODALITIES}
    task_ids = [vocab.task(t) for t in vocab.spec.tasks]
    stops = np.flatnonzero(np.isin(tokens, list(bos) + [vocab.pad] + task_ids))
    spans = []
    for start in np.flatnonzero(np.isin(tokens, list(bos))).tolist():
        m = bos[int(tokens[start])]
        nxt = stops[stops > start]
        limit = int(nxt[0]) if nxt.size else tokens.size
        eos = np.flatnonzero(tokens[start + 1:limit] == vocab.eos(m))
        spans.append((m, start, start + 1 + int(eos[0]) + 1 if eos.size else limit))
    return spans
