"""Token-table rows -> fixed-length `PackedSequence`s (text packed, pairs right-padded).

Text-only documents become BOS_text ids EOS_text and are laid out in a *virtual stream* per
source: with `cross_boundaries=True` back to back; with False, a document that does not fit
in what is left of the current sequence starts the next one (the gap is PAD), and a document
longer than L starts on a boundary, fills whole sequences and its tail is followed by the
next documents as usual. `mode="pad"` puts every document on its own sequence(s). The stream
is then cut every L tokens. Placement is computed on document lengths and all token copying
is one numpy scatter per chunk, so the cost per token is a few array operations, not Python.

Sources are packed separately (a sequence never mixes sources) so that downstream mixing by
source stays exact. Pairs (image_text, audio_text) are never packed together: one pair per
sequence, right-padded, as in the paper's sequence format.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from itertools import repeat
from typing import Iterable, Iterator, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trimodal.config import require
from trimodal.packing.layout import (PAIR_FRAMING, TEXT_FRAMING, OverflowPolicy, PackedSequence,
                                     SkipRow, modality_codes, pair_tokens)
from trimodal.packing.table import TokenRow, table_to_rows
from trimodal.packing.vocab import Vocab, VocabError

log = logging.getLogger(__name__)


@dataclass
class PackerConfig:
    #: L, the sequence length every output has.
    length: int = 2048
    #: "pack": text documents share sequences; "pad": one document per sequence (pairs are
    #: always one per sequence).
    mode: Literal["pack", "pad"] = "pack"
    #: Text packing only: may a document continue in the next sequence?
    cross_boundaries: bool = True
    #: A pair longer than L: cut its text (keeping EOS_text) or drop it. Counted either way.
    overflow: OverflowPolicy = "truncate_text"
    #: Audio codebooks to keep per frame (0: all the token table has). Fewer -> fewer tokens.
    audio_codebooks: int = 0
    #: Text tokens buffered per source before cutting; bounds memory, amortises Python work.
    #: 256k measured fastest: the chunk's arrays stay in cache and are not fresh pages.
    chunk_tokens: int = 1 << 18

    def __post_init__(self) -> None:
        require(isinstance(self.length, int) and self.length >= PAIR_FRAMING + 2,
                f"PackerConfig.length={self.length} is too small: a pair needs {PAIR_FRAMING} framing "
                f"tokens (TASK, BOS/EOS of both segments) plus at least one code and one text "
                f"token, so length must be >= {PAIR_FRAMING + 2}")
        require(self.mode in ("pack", "pad"), f"PackerConfig.mode must be 'pack' or 'pad', got {self.mode!r}")
        require(self.overflow in ("truncate_text", "drop"),
                f"PackerConfig.overflow must be 'truncate_text' or 'drop', got {self.overflow!r}")
        require(self.audio_codebooks >= 0, "PackerConfig.audio_codebooks must be >= 0")
        require(self.chunk_tokens >= 1, "PackerConfig.chunk_tokens must be >= 1")


@dataclass
class TaskStats:
    samples: int = 0
    sequences: int = 0
    tokens: int = 0
    pad_tokens: int = 0
    truncated: int = 0
    dropped: int = 0


@dataclass
class PackStats:
    """Counts of what the packer did; filled in while its iterator is consumed."""

    sequences: int = 0
    tokens: int = 0
    pad_tokens: int = 0
    #: Pairs whose text was cut to fit (overflow="truncate_text").
    truncated: int = 0
    #: Pairs left out for being too long (overflow="drop", or nothing of the text would fit).
    dropped: int = 0
    #: Rows that could not be packed at all, by reason (empty document, shape mismatch, ...).
    skipped: dict[str, int] = field(default_factory=dict)
    per_task: dict[str, TaskStats] = field(default_factory=dict)

    def task(self, name: str) -> TaskStats:
        return self.per_task.setdefault(name, TaskStats())

    def add_sequences(self, task: str, n: int, length: int, pads: int) -> None:
        t = self.task(task)
        self.sequences += n
        t.sequences += n
        self.tokens += n * length
        t.tokens += n * length
        self.pad_tokens += pads
        t.pad_tokens += pads

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _TextStream:
    """Per-source packing state: the unfinished last sequence and documents not yet laid out."""

    tail: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    tail_starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tail_ends: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tail_keys: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    #: Pending documents: one array per document (`lens` empty), or, from `pack_tables`, flat
    #: chunks of several documents with their lengths in `lens` (one array per chunk).
    docs: list[np.ndarray] = field(default_factory=list)
    lens: list[np.ndarray] = field(default_factory=list)
    pending_tokens: int = 0


def _exclusive_cumsum(x: np.ndarray) -> np.ndarray:
    out = np.zeros(x.size, dtype=np.int64)
    np.cumsum(x[:-1], out=out[1:])
    return out


class Packer:
    """Packs an iterable of `TokenRow`s; `stats` accumulates over every `pack` call."""

    def __init__(self, config: PackerConfig, vocab: Vocab):
        self.config = config
        self.vocab = vocab
        self.stats = PackStats()

    # --- public ------------------------------------------------------------------------
    def pack(self, rows: Iterable[TokenRow]) -> Iterator[PackedSequence]:
        """Rows in, sequences out; text sequences are emitted as chunks fill, the rest at the end."""
        streams: dict[str, _TextStream] = {}
        L, pad_mode, budget = self.config.length, self.config.mode == "pad", self.config.chunk_tokens
        for row in rows:
            if row.task != "text":
                seq = self._pair(row)
                if seq is not None:
                    yield seq
                continue
            ids = row.text_ids
            if not isinstance(ids, np.ndarray) or ids.ndim != 1:
                ids = np.asarray(ids).reshape(-1)
            if ids.size == 0:
                self.stats.skip("empty document")
                continue
            st = streams.get(row.source)
            if st is None:
                st = streams[row.source] = _TextStream()
            st.keys.append(row.key)
            st.docs.append(ids)
            n = ids.size + TEXT_FRAMING
            # Budget in stream positions, so pad mode's padding counts against the chunk too.
            st.pending_tokens += -(-n // L) * L if pad_mode else n
            if st.pending_tokens >= budget:
                yield from self._flush(st, row.source, final=False)
        for source, st in streams.items():
            yield from self._flush(st, source, final=True)
        self._log_summary()

    def pack_tables(self, tables: Iterable[pa.Table]) -> Iterator[PackedSequence]:
        """Token tables (`packing.table.SCHEMA`) in, sequences out, without a Python object per
        document: text ids are taken as one flat array per table and its list offsets. Same
        sequences as `pack` over the same rows, except that pairs come out first per table."""
        streams: dict[str, _TextStream] = {}
        for table in tables:
            missing = {"key", "source", "task", "text_ids"} - set(table.column_names)
            if missing:
                raise ValueError(f"not a token table: missing columns {sorted(missing)}")
            is_text = pc.equal(table.column("task"), "text")
            text = table
            if not pc.all(is_text).as_py():
                for row in table_to_rows(table.filter(pc.invert(is_text))):
                    seq = self._pair(row)
                    if seq is not None:
                        yield seq
                text = table.filter(is_text)
            sources = text.column("source")
            names = pc.unique(sources).to_pylist()
            for source in names:
                sub = text if len(names) == 1 else text.filter(pc.equal(sources, source))
                st = streams.get(source)
                if st is None:
                    st = streams[source] = _TextStream()
                yield from self._add_columns(st, source, sub)
        for source, st in streams.items():
            yield from self._flush(st, source, final=True)
        self._log_summary()

    def _add_columns(self, st: "_TextStream", source: str, table: pa.Table) -> Iterator[PackedSequence]:
        col = table.column("text_ids").combine_chunks()
        offsets = col.offsets.to_numpy().astype(np.int64)
        values = col.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
        offsets -= offsets[0]
        lens = np.diff(offsets)
        keys = table.column("key").to_pylist()
        empty = int((lens == 0).sum())
        if empty:
            self.stats.skipped["empty document"] = self.stats.skipped.get("empty document", 0) + empty
            keep = np.flatnonzero(lens > 0)
            keys = [keys[i] for i in keep.tolist()]
            lens = lens[keep]
            offsets = np.concatenate([[0], np.cumsum(lens)])
        # Cut into chunks of about chunk_tokens so memory stays bounded on big tables.
        ends = np.cumsum(lens + TEXT_FRAMING)
        cuts = np.searchsorted(ends, np.arange(self.config.chunk_tokens, int(ends[-1]) if ends.size else 0,
                                               self.config.chunk_tokens), side="right").tolist()
        for a, b in zip([0] + cuts, cuts + [lens.size]):
            if b > a:
                st.keys.extend(keys[a:b])
                st.docs.append(values[offsets[a]:offsets[b]])
                st.lens.append(lens[a:b])
                yield from self._flush(st, source, final=False)

    def _log_summary(self) -> None:
        s = self.stats
        log.info("packed %d sequences (%d tokens, %.1f%% pad); truncated %d, dropped %d, skipped %s",
                 s.sequences, s.tokens, 100.0 * s.pad_tokens / max(s.tokens, 1), s.truncated,
                 s.dropped, s.skipped or "none")

    # --- pairs -------------------------------------------------------------------------
    def _pair(self, row: TokenRow) -> PackedSequence | None:
        cfg = self.config
        task = self.stats.task(row.task)
        try:
            if row.modality not in ("image", "audio"):
                raise SkipRow(row.key, f"{row.task} row without image or audio ids")
            codes, extra = modality_codes(self.vocab, row.modality, row.ids, row.shape, row.key,
                                          n_q=cfg.audio_codebooks)
            tokens, spans, truncated = pair_tokens(self.vocab, row.task, row.modality, codes,
                                                   row.text_ids, cfg.length, cfg.overflow, row.key)
        except SkipRow as skip:
            if skip.reason == "too long":
                self.stats.dropped += 1
                task.dropped += 1
            else:
                self.stats.skip(skip.reason)
            log.debug("skipped %s", skip)
            return None
        task.samples += 1
        if truncated:
            self.stats.truncated += 1
            task.truncated += 1
        if row.modality == "audio":
            extra.update(audio_length=int(row.audio_length), sample_rate=int(row.sample_rate))
        extra.update(tokenizer=row.tokenizer, tokenizer_hash=row.tokenizer_hash)
        pads = cfg.length - spans[-1][2]
        self.stats.add_sequences(row.task, 1, cfg.length, pads)
        return PackedSequence(tokens=tokens, task=row.task, keys=[row.key], spans=spans,
                              pad_count=pads, source=row.source, extra=extra)

    # --- text --------------------------------------------------------------------------
    def _place(self, seg_len: np.ndarray, pos0: int) -> np.ndarray:
        """Start of every document in the virtual stream (the layout rules live here)."""
        L = self.config.length
        if self.config.mode == "pad":
            slots = -(-seg_len // L) * L
            return -(-pos0 // L) * L + _exclusive_cumsum(slots)
        if self.config.cross_boundaries:
            return pos0 + _exclusive_cumsum(seg_len)
        starts = np.empty(seg_len.size, dtype=np.int64)
        pos = pos0
        for i, n in enumerate(seg_len.tolist()):  # per document, not per token
            used = pos % L
            if used and n > L - used:
                pos += L - used
            starts[i] = pos
            pos += n
        return starts

    def _flush(self, st: _TextStream, source: str, final: bool) -> Iterator[PackedSequence]:
        L, vocab = self.config.length, self.vocab
        if st.lens:
            lens = np.concatenate(st.lens).astype(np.int64)
        else:
            lens = np.fromiter((d.size for d in st.docs), dtype=np.int64, count=len(st.docs))
        body = st.docs[0] if len(st.docs) == 1 else np.concatenate(st.docs) if st.docs else np.zeros(0, np.int32)
        if body.size and (body.min() < 0 or body.max() >= vocab.spec.text_size):
            bad = int(np.argmax((body < 0) | (body >= vocab.spec.text_size)))
            doc = int(np.searchsorted(np.cumsum(lens), bad, side="right"))
            raise VocabError(f"{st.keys[doc]}: text id {int(body[bad])} out of range "
                             f"[0, {vocab.spec.text_size}) of vocabulary {vocab.hash}")
        seg_len = lens + TEXT_FRAMING
        pos0 = st.tail.size
        vstart = self._place(seg_len, pos0)
        end = int(vstart[-1] + seg_len[-1]) if seg_len.size else pos0
        n_out = -(-end // L) if final else end // L

        # Documents are written as runs: a run is documents laid out back to back (one run in
        # all with cross_boundaries), so the work is a few array passes plus one copy per gap.
        cstart = _exclusive_cumsum(seg_len)
        cend = cstart + seg_len
        shift = vstart - cstart
        runs = (np.flatnonzero(np.diff(shift)) + 1).tolist()
        stream = np.empty(max(n_out * L, end), dtype=np.int32)
        stream[:pos0] = st.tail
        if len(runs) == 0 and seg_len.size:
            stream[pos0:int(vstart[0])] = vocab.pad
            stream[end:] = vocab.pad
            target = stream[int(vstart[0]):end]  # the compact layout, in place
        else:
            stream[pos0:] = vocab.pad
            target = np.empty(int(cend[-1]) if cend.size else 0, dtype=np.int32)
        is_body = np.ones(target.size, dtype=bool)
        is_body[cstart] = False
        is_body[cend - 1] = False
        target[cstart] = vocab.bos("text")
        target[cend - 1] = vocab.eos("text")
        target[is_body] = body + vocab.text_offset if vocab.text_offset else body
        if runs or not seg_len.size:
            for a, b in zip([0, *runs], [*runs, shift.size]):
                if b > a:
                    stream[vstart[a]:vstart[a] + cend[b - 1] - cstart[a]] = target[cstart[a]:cend[b - 1]]

        seg_s = np.concatenate([st.tail_starts, vstart])
        seg_e = np.concatenate([st.tail_ends, vstart + seg_len])
        keys = st.tail_keys + st.keys
        if st.keys:
            self.stats.task("text").samples += len(st.keys)
        out = self._cut(stream, seg_s, seg_e, keys, n_out, source)

        cut = n_out * L
        keep = seg_e > cut
        st.tail = stream[cut:end].copy()
        st.tail_starts = np.maximum(seg_s[keep] - cut, 0)
        st.tail_ends = seg_e[keep] - cut
        st.tail_keys = keys[len(keys) - int(keep.sum()):]  # seg_e is sorted: a suffix
        st.keys, st.docs, st.lens, st.pending_tokens = [], [], [], 0
        yield from out

    def _cut(self, stream: np.ndarray, seg_s: np.ndarray, seg_e: np.ndarray, keys: list[str],
             n_out: int, source: str) -> list[PackedSequence]:
        """The first n_out L-length sequences of the stream, with one span per document piece.

        Spans, keys and pad counts come from the pieces (array work per document); what is left
        per sequence is building the record itself. The tokens are views into `stream`.
        """
        if n_out == 0:
            return []
        L = self.config.length
        first = seg_s // L
        last = np.minimum((seg_e - 1) // L, n_out - 1)
        inside = first < n_out
        seg_idx = np.flatnonzero(inside)
        counts = (last - first + 1)[inside]
        p_seg = np.repeat(seg_idx, counts)
        p_seq = first[p_seg] + np.arange(p_seg.size) - np.repeat(_exclusive_cumsum(counts), counts)
        p_start = np.maximum(seg_s[p_seg], p_seq * L) - p_seq * L
        p_end = np.minimum(seg_e[p_seg], (p_seq + 1) * L) - p_seq * L
        used = np.bincount(p_seq, weights=p_end - p_start, minlength=n_out)
        pads = (L - used.astype(np.int64)).tolist()
        spans = list(zip(repeat("text"), p_start.tolist(), p_end.tolist()))
        p_key = [keys[i] for i in p_seg.tolist()]
        bounds = np.searchsorted(p_seq, np.arange(n_out + 1)).tolist()
        self.stats.add_sequences("text", n_out, L, int(sum(pads)))
        return [PackedSequence(tokens=tokens, task="text", keys=p_key[a:b], spans=spans[a:b],
                               pad_count=pad, source=source)
                for tokens, a, b, pad in zip(stream[: n_out * L].reshape(n_out, L), bounds[:-1],
                                             bounds[1:], pads)]


def pack_rows(rows: Iterable[TokenRow], vocab: Vocab, config: PackerConfig
              ) -> tuple[Iterator[PackedSequence], PackStats]:
    """The sequences (lazily) and the stats object they fill in as they are consumed."""
    packer = Packer(config, vocab)
    return packer.pack(rows), packer.stats
