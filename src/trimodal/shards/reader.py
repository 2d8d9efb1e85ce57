"""Stream shard sets into training: split by rank and worker, shuffle, mix, resume exactly.

Design (the why is in docs/shards.md, "Exact resume"):

* **Positions, not buffers.** For each source and epoch the global sample order is the
  shards in a seeded permutation, each shard's samples in write order. That order is cut into
  `world_size * num_workers` contiguous slices by sample count (from the manifest), one per
  *slot* (rank, worker): no sample is lost or read twice, and slices differ by at most one
  sample, so ranks stay in step. A slot's position in its slice is one integer.
* **Windowed shuffle.** A slot reads its slice in windows of `shuffle_buffer` samples and
  emits each window in a permutation seeded by (seed, source, epoch, slot, window). The state
  after any sample is therefore just (epoch, position, exhausted) per source; resuming
  re-reads at most one window. (A rolling reservoir would need its whole content in the state.)
* **Mixing by counter.** Draw k of a slot picks a source from a uniform number seeded by
  (seed, epoch, slot, k // 4096): no generator state to carry, only the draw count k.
* **DataLoader workers** are slots like ranks. Each batch carries the state of the worker
  that made it; the loader (loader.py) records it when the consumer takes the batch. On
  resume the worker that would have been served next is made worker 0 (logical id =
  (id + rotation) % num_workers, `_open_slot`), so the batch order continues exactly.
* **Batches, not samples.** Shards are read whole (mmap when local) and indexed with numpy
  (tario.index_shard), the next shard of the slice in a background thread while the current
  one is served (`_Opening`: storage reads overlap batch making); a slot's draws for a whole
  batch run in one loop (`_Slot.take`) and the rows are copied once, straight into the
  batch, where the vocabulary check runs while they are in cache (in a worker: a slot of
  the loader's shared ring). meta.json, tasks, modality ids and the pad mask are decoded or
  derived only when a consumer asks (batch.py; the trainer reads only the tokens).
* **Bad shards** (missing, truncated, corrupt) and bad samples are skipped with a logged
  warning; their positions still count, so the state stays exact.
"""

from __future__ import annotations

import logging
import mmap
import os
import posixpath
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem
import torch
from torch.utils.data import IterableDataset, get_worker_info

from trimodal.packing.vocab import Vocab
from trimodal.shards.batch import JsonRows, RawBatch, TaskRows
from trimodal.shards.manifest import Manifest, ShardError, read_manifest
from trimodal.shards.tario import (SampleRef, ShardIndex, TokenDecoder, decode_meta, index_shard,
                                   out_of_vocab)

if TYPE_CHECKING:
    from trimodal.shards.loader import _Ring

log = logging.getLogger(__name__)

STATE_VERSION = 1
_DRAW_CHUNK = 4096
#: Per shard, how many bad-sample warnings are logged before the rest are only counted.
_MAX_SAMPLE_WARNINGS = 3


@dataclass(frozen=True)
class Source:
    """One shard set (a folder with manifest.json) and its mixing weight."""

    url: str
    weight: float = 1.0
    name: str = ""

    def __post_init__(self) -> None:
        if not (self.weight > 0):
            raise ShardError(f"source {self.url}: weight must be > 0, got {self.weight}")


@dataclass
class ReaderConfig:
    seed: int = 0
    shuffle: bool = True
    #: Window of the shuffle (samples held in memory per worker and source); 1 = no shuffle
    #: inside the slice (shard order is still shuffled when `shuffle`).
    shuffle_buffer: int = 1000
    #: True: every source loops forever (each with its own epoch counter); False: one pass.
    infinite: bool = False
    #: Explicit rank/world; None = torch.distributed when initialized, else 0 of 1.
    rank: int | None = None
    world_size: int | None = None

    def __post_init__(self) -> None:
        if self.shuffle_buffer < 1:
            raise ShardError(f"ReaderConfig.shuffle_buffer must be >= 1, got {self.shuffle_buffer}")
        if (self.rank is None) != (self.world_size is None):
            raise ShardError("ReaderConfig: give both rank and world_size, or neither")
        if self.world_size is not None and not 0 <= self.rank < self.world_size:  # type: ignore[operator]
            raise ShardError(f"ReaderConfig: rank {self.rank} not in [0, {self.world_size})")


class ShardSample:
    """One sample; `state` is its worker's resume state right after it. meta decodes lazily."""

    __slots__ = ("key", "tokens", "_meta", "_meta_bytes", "source", "state")

    def __init__(self, key: str, tokens: np.ndarray, meta: dict | None, source: str,
                 meta_bytes: bytes = b""):
        self.key = key
        self.tokens = tokens
        self._meta = meta
        self._meta_bytes = meta_bytes
        self.source = source
        self.state: tuple | None = None

    @property
    def meta(self) -> dict:
        if self._meta is None:
            self._meta = decode_meta(self._meta_bytes)
        return self._meta

    @classmethod
    def from_ref(cls, ref: SampleRef, length: int, source: str) -> "ShardSample":
        arr, start, buf, mlo, mhi, key = ref
        return cls(key, arr[start:start + length], None, source, bytes(buf[mlo:mhi]))


# --- one source, one slot -----------------------------------------------------------------
def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in key])


def slot_slice(manifest: Manifest, source_index: int, seed: int, epoch: int, shuffle: bool,
               slot: int, n_slots: int) -> list[tuple[int, int, int]]:
    """The slot's share of one epoch: [(shard index, first sample, count)] in read order."""
    counts = [s.samples for s in manifest.shards]
    order = list(range(len(counts)))
    if shuffle:
        order = [int(i) for i in _rng(seed, source_index, epoch, 0x5A4D).permutation(len(counts))]
    total = sum(counts)
    lo, hi = slot * total // n_slots, (slot + 1) * total // n_slots
    out, start = [], 0
    for idx in order:
        end = start + counts[idx]
        a, b = max(lo, start), min(hi, end)
        if a < b:
            out.append((idx, a - start, b - a))
        start = end
    return out


def _open_shard(url: str):
    """The whole shard as bytes, or as a read-only mmap for local files (no copy, no decode).

    Shards are immutable once written (the writer renames complete files into place), so
    mapping them is safe; remote filesystems get one read of the whole object.
    """
    fs, path = fsspec.core.url_to_fs(url)
    if isinstance(fs, LocalFileSystem):
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return b""
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            return mmap.mmap(f.fileno(), size, flags=flags, prot=mmap.PROT_READ)
    with fs.open(path, "rb") as f:
        return f.read()


def _read_index(url: str, decoder: TokenDecoder) -> ShardIndex:
    return index_shard(_open_shard(url), url, decoder, check_ranges=False)


class _Opening:
    """A shard being read and indexed (`_read_index`) in a background thread.

    Reading a shard is I/O (disk, or an object store for remote URLs) and indexing it is
    mostly numpy: doing both for the next shard of the slice while the current one is served
    overlaps them with making batches. mmap (MAP_POPULATE), fsspec reads and numpy's large
    array loops release the GIL.
    """

    def __init__(self, url: str, decoder: TokenDecoder):
        self.url, self.decoder = url, decoder
        self._result: ShardIndex | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="trimodal-shard-open", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = _read_index(self.url, self.decoder)
        except BaseException as err:  # handed to the reader thread, which reports or skips
            self._error = err

    def result(self) -> ShardIndex:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


class _SliceReader:
    """Serves a slot's slice by position; a missing/corrupt sample reads as None.

    Each shard is read whole and indexed once (tario.index_shard); the last one stays cached,
    since windows run through the slice in order, and the next one in the slice is already
    being opened in the background (`_Opening`). After the last one comes `then` (infinite
    mode: the first shard of this slot's next epoch), so a slot with one shard per epoch
    still overlaps its reads; `ahead` is an opening handed over from the previous epoch.
    """

    def __init__(self, manifest: Manifest, segments: list[tuple[int, int, int]], name: str,
                 decoder: TokenDecoder, then: int | None = None,
                 ahead: tuple[int, _Opening] | None = None):
        self.manifest = manifest
        self.segments = segments
        self.name = name
        self.decoder = decoder
        self.then = then
        self._cached: tuple[int, list[SampleRef | None]] | None = None
        self._ahead = ahead

    def read(self, start: int, stop: int) -> list[SampleRef | None]:
        out: list[SampleRef | None] = []
        base = 0
        for shard_idx, first, count in self.segments:
            lo, hi = max(start, base), min(stop, base + count)
            if lo < hi:
                samples = self._shard(shard_idx, first, count)
                a = first + lo - base
                out += samples[a:a + hi - lo]
            base += count
            if base >= stop:
                break
        return out

    def _shard(self, shard_idx: int, first: int, count: int) -> list[SampleRef | None]:
        """The shard's samples [0, first + count), None where bad or missing."""
        if self._cached is not None and self._cached[0] == shard_idx:
            return self._cached[1]
        need = first + count
        url = self.manifest.shard_url(self.manifest.shards[shard_idx])
        ahead, self._ahead = self._ahead, None
        self._open_next(shard_idx)
        try:
            index = (ahead[1].result() if ahead is not None and ahead[0] == shard_idx
                     else _read_index(url, self.decoder))
        except OSError as err:
            log.warning("%s: unreadable (%s); %d sample(s) skipped", url, err, count)
            samples: list[SampleRef | None] = [None] * need
        else:
            samples = index.samples[:need]
            bad = [i for i in index.errors if first <= i < need]
            for i in bad[:_MAX_SAMPLE_WARNINGS]:
                key = samples[i - 1][5] + "+1" if i and samples[i - 1] else f"#{i}"
                log.warning("%s: sample %s skipped: %s", url, key, index.errors[i])
            if len(samples) < need:
                if index.damage:
                    log.warning("%s: unreadable (%s); %d sample(s) skipped", url, index.damage,
                                need - max(first, len(samples)))
                else:
                    log.warning("%s: holds fewer samples than its manifest says; %d skipped",
                                url, need - max(first, len(samples)))
                samples = samples + [None] * (need - len(samples))
        self._cached = (shard_idx, samples)
        return samples

    def _open_next(self, shard_idx: int) -> None:
        """Start opening the shard that follows `shard_idx` in this slice (or `then`), if any."""
        order = [s for s, _, _ in self.segments] + ([self.then] if self.then is not None else [])
        if shard_idx in order and order.index(shard_idx) + 1 < len(order):
            nxt = order[order.index(shard_idx) + 1]
            self._ahead = (nxt, _Opening(self.manifest.shard_url(self.manifest.shards[nxt]), self.decoder))


class _SourceStream:
    """One source as seen by one slot: (epoch, position) plus the window being served."""

    def __init__(self, ds: "ShardDataset", index: int, slot: int, n_slots: int, epoch: int, pos: int,
                 dead: bool = False):
        self.ds, self.index, self.slot, self.n_slots = ds, index, slot, n_slots
        self.epoch, self.pos = epoch, pos
        self.skipped = 0
        #: Nothing more to give this slot (epoch mode: slice done; infinite: unreadable).
        #: Part of the state, because whether a draw can land on it decides the mix.
        self.dead = dead
        self._items: list[SampleRef | None] = []
        self.reader: _SliceReader | None = None
        self._wstart = self._wstop = 0  # slice positions the window covers
        self._plan_epoch()

    def _plan_epoch(self) -> None:
        ds = self.ds

        def plan(epoch: int) -> list[tuple[int, int, int]]:
            return slot_slice(ds.manifests[self.index], self.index, ds.config.seed, epoch,
                              ds.config.shuffle, self.slot, self.n_slots)

        segments = plan(self.epoch)
        then = None
        if ds.config.infinite:
            following = plan(self.epoch + 1)
            then = following[0][0] if following else None
        self.length = sum(c for _, _, c in segments)
        self.reader = _SliceReader(ds.manifests[self.index], segments, ds.names[self.index], ds.decoder,
                                   then, self.reader._ahead if self.reader is not None else None)
        self._items, self._wstart, self._wstop = [], 0, 0

    def _load_window(self) -> None:
        B = self.ds.config.shuffle_buffer
        j = self.pos // B
        start, stop = j * B, min(self.length, (j + 1) * B)
        items = self.reader.read(start, stop)
        if self.ds.config.shuffle and len(items) > 1:
            perm = _rng(self.ds.config.seed, self.index, self.epoch, self.slot, j, 0x51).permutation(len(items))
            items = [items[p] for p in perm.tolist()]
        self._items, self._wstart, self._wstop = items, start, stop

    def take_run(self, n: int) -> list[SampleRef]:
        """Up to n next samples from the loaded window, or [] when a bad sample or the window's
        end is in the way (the caller then goes one sample at a time through `next`)."""
        i = self.pos - self._wstart
        if i < 0 or self.pos >= self._wstop:
            return []
        run = self._items[i:i + n]
        if None in run:
            return []
        self.pos += len(run)
        return run

    def next(self) -> SampleRef | None:
        """The next sample, or None when this source has nothing more for this slot."""
        empty_epochs = 0
        while True:
            pos = self.pos
            if pos >= self.length:
                if not self.ds.config.infinite or self.length == 0 or empty_epochs >= 1:
                    if self.ds.config.infinite:
                        log.error("source %s has no readable samples for slot %d; dropped from the mix",
                                  self.ds.names[self.index], self.slot)
                    self.dead = True
                    return None
                self.epoch += 1
                self.pos = 0
                empty_epochs += 1
                self._plan_epoch()
                continue
            if not self._wstart <= pos < self._wstop:
                self._load_window()
            ref = self._items[pos - self._wstart]
            self.pos = pos + 1
            if ref is None:
                self.skipped += 1
                continue
            return ref


class _Slot:
    """What one (rank, worker) slot has drawn: source positions and the draw counter.

    `take(n)` runs the mixing draws for up to n samples in one Python loop; the resume state
    (`state()`) is built only when asked, once per batch, not per sample.
    """

    def __init__(self, ds: "ShardDataset", logical: int, slot: int, n_slots: int):
        self.ds, self.logical, self.slot = ds, logical, slot
        saved = ds.workers.get(logical)
        positions = saved.sources if saved else [[ds.epoch, 0, 0] for _ in ds.sources]
        self.streams = [_SourceStream(ds, i, slot, n_slots, e, p, bool(d))
                        for i, (e, p, d) in enumerate(positions)]
        self.draws = saved.draws if saved else 0
        self.skipped0 = saved.skipped if saved else 0
        self.mix_epoch = 0 if ds.config.infinite else ds.epoch
        self._active: list[int] | None = None
        self._chunk = -1
        self._choices: list[int] = []
        self.rejected = 0

    def _choose(self, active: list[int]) -> int:
        chunk = self.draws // _DRAW_CHUNK
        if chunk != self._chunk:
            u = _rng(self.ds.config.seed, self.mix_epoch, self.slot, chunk, 0x313).random(_DRAW_CHUNK)
            w = np.cumsum(self.ds.weights[active])
            idx = np.minimum(np.searchsorted(w / w[-1], u, side="right"), len(active) - 1)
            self._choices = np.asarray(active)[idx].tolist()
            self._chunk = chunk
        return self._choices[self.draws % _DRAW_CHUNK]

    def take(self, n: int) -> tuple[list[SampleRef], list[int]]:
        """Up to n samples and their source indices; fewer only when every source has run dry."""
        refs: list[SampleRef] = []
        sources: list[int] = []
        streams = self.streams
        while len(refs) < n:
            active = self._active
            if active is None:
                active = self._active = [i for i, s in enumerate(streams) if not s.dead]
                self._chunk = -1  # the choice table depends on the active set
            if not active:
                break
            if len(active) == 1:
                # One source left: a draw is just its next sample, so take a run of the window.
                run = streams[active[0]].take_run(n - len(refs))
                if run:
                    self.draws += len(run)
                    refs += run
                    sources += [active[0]] * len(run)
                    continue
                choice = active[0]
            else:
                choice = self._choose(active)
            self.draws += 1
            ref = streams[choice].next()
            if ref is None:
                self._active = None
                continue
            refs.append(ref)
            sources.append(choice)
        return refs, sources

    def reject(self, ref: SampleRef, source: int, tokens: np.ndarray) -> None:
        """A taken sample turned out bad (ids outside the vocabulary): count it as skipped."""
        self.streams[source].skipped += 1
        self.rejected += 1
        if self.rejected <= _MAX_SAMPLE_WARNINGS:
            log.warning("%s: sample %s skipped: token ids span [%d, %d], outside the vocabulary [0, %d)",
                        self.ds.names[source], ref[5], int(tokens.min()), int(tokens.max()),
                        self.ds.vocab.size)

    def state(self) -> tuple:
        streams = self.streams
        return (self.logical, self.draws, tuple((s.epoch, s.pos, int(s.dead)) for s in streams),
                self.skipped0 + sum(s.skipped for s in streams))


# --- the dataset --------------------------------------------------------------------------
@dataclass
class _WorkerState:
    draws: int = 0
    sources: list[list[int]] = field(default_factory=list)  # [[epoch, pos, dead], ...]
    skipped: int = 0
    #: Batches still to come in the hand-over (group of batches) the last consumed one was in.
    item_left: int = 0


class ShardDataset(IterableDataset):
    """Samples from one or more shard sets, mixed by weight; see the module docstring.

    Iterate it directly (one process), or through `make_loader` for batches, workers and
    exact resume. Shard sets made with another vocabulary or length are refused here.
    """

    def __init__(self, sources: Sequence[Source | str], vocab: Vocab, length: int | None = None,
                 config: ReaderConfig | None = None):
        super().__init__()
        if not sources:
            raise ShardError("ShardDataset needs at least one source")
        self.sources = [s if isinstance(s, Source) else Source(str(s)) for s in sources]
        self.vocab = vocab
        self.config = config or ReaderConfig()
        self.manifests = [read_manifest(s.url) for s in self.sources]
        if length is None:
            length = self.manifests[0].length
        for m in self.manifests:
            m.check_run(vocab, length)
            if not m.shards:
                raise ShardError(f"{m.url}: shard set holds no shards")
        self.length = length
        self.names = [s.name or posixpath.basename(m.root.rstrip("/")) or f"source{i}"
                      for i, (s, m) in enumerate(zip(self.sources, self.manifests))]
        if len(set(self.names)) != len(self.names):
            raise ShardError(f"source names must differ, got {self.names}; give Source(name=...)")
        w = np.array([s.weight for s in self.sources], dtype=np.float64)
        self.weights = w / w.sum()
        self.decoder = TokenDecoder(length, vocab.size)
        # Consumption record (lives in the main process; see ShardLoader).
        self.epoch = 0
        self.next_worker = 0
        self.num_workers: int | None = None
        self.workers: dict[int, _WorkerState] = {}
        self._managed = False  # True while a ShardLoader records consumption

    # --- topology -------------------------------------------------------------------------
    def rank_world(self) -> tuple[int, int]:
        if self.config.rank is not None:
            return self.config.rank, int(self.config.world_size)  # type: ignore[arg-type]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        """Samples this rank sees per epoch (all sources)."""
        rank, world = self.rank_world()
        return sum(m.total_samples * (rank + 1) // world - m.total_samples * rank // world
                   for m in self.manifests)

    # --- iteration ------------------------------------------------------------------------
    def _open_slot(self) -> tuple[_Slot, bool]:
        """This process's slot (rank x DataLoader worker), resumed from the recorded state."""
        info = get_worker_info()
        n_workers, worker_id = (1, 0) if info is None else (info.num_workers, info.id)
        if self.num_workers is not None and self.workers and self.num_workers != n_workers:
            raise ShardError(f"reader state was saved with {self.num_workers} DataLoader worker(s); "
                             f"resume with the same number (got {n_workers})")
        logical = (worker_id + self.next_worker) % n_workers
        rank, world = self.rank_world()
        slot = _Slot(self, logical, rank * n_workers + logical, world * n_workers)
        return slot, info is None and not self._managed

    def __iter__(self) -> Iterator[ShardSample]:
        slot, record_here = self._open_slot()
        names, length = self.names, self.length
        while True:
            refs, sources = slot.take(1)
            if not refs:
                break
            sample = ShardSample.from_ref(refs[0], length, names[sources[0]])
            if len(out_of_vocab(sample.tokens[None], self.vocab.size)):
                slot.reject(refs[0], sources[0], sample.tokens)
                continue
            sample.state = slot.state()
            if record_here:
                self.record(sample.state, 1)
            yield sample
        if record_here and not self.config.infinite:
            self.end_epoch()

    def iter_raw_batches(self, batch_size: int, drop_last: bool = False,
                         ring: _Ring | None = None) -> Iterator[RawBatch]:
        """Batches made where the samples are read (a DataLoader worker, or the main process).

        Rows are copied once, from the shard buffers into the batch, and checked against the
        vocabulary right there (cache-hot); with a `ring` that batch is a slot of shared memory
        the main process reads, so nothing but the row info and the state is pickled.
        """
        slot, _ = self._open_slot()
        info = get_worker_info()
        worker = 0 if info is None else info.id
        names, length, vocab_size = self.names, self.length, self.vocab.size
        seq = 0
        while True:
            refs, sources = slot.take(batch_size)
            if ring is not None:
                full = ring.slot(worker, seq)
                if full is None:
                    return
            else:
                full = np.empty((batch_size, length), dtype=np.int32)
            while True:
                if not refs or (drop_last and len(refs) < batch_size):
                    return
                out = full[:len(refs)]
                for r, (arr, start, _, _, _, _) in enumerate(refs):
                    out[r] = arr[start:start + length]
                bad = out_of_vocab(out, vocab_size).tolist()
                if not bad:
                    break
                for r in bad:  # rare: drop the rows, draw replacements, copy again
                    slot.reject(refs[r], sources[r], out[r])
                keep = [r for r in range(len(refs)) if r not in set(bad)]
                more, more_sources = slot.take(len(bad))
                refs = [refs[r] for r in keep] + more
                sources = [sources[r] for r in keep] + more_sources
            meta = JsonRows.of([buf[lo:hi] for _, _, buf, lo, hi, _ in refs])
            yield RawBatch(None if ring is not None else torch.from_numpy(out), TaskRows(meta),
                           [ref[5] for ref in refs], [names[i] for i in sources], meta,
                           slot.state(), (worker, seq, len(refs)) if ring is not None else None)
            seq += 1

    # --- state ----------------------------------------------------------------------------
    def record(self, state: tuple, num_workers: int, item_left: int = 0) -> None:
        """Note that the consumer has taken everything up to the sample/batch with `state`.

        item_left > 0: more batches of the same worker's hand-over follow, so that worker (not
        the next one) is served first on resume, with a hand-over of just those batches.
        """
        logical, draws, positions, skipped = state
        self.num_workers = num_workers
        self.workers[logical] = _WorkerState(draws, [list(p) for p in positions], skipped, item_left)
        self.next_worker = logical if item_left else (logical + 1) % num_workers

    def end_epoch(self) -> None:
        self.epoch += 1
        self.workers = {}
        self.next_worker = 0

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its beginning (epoch mode)."""
        self.epoch = int(epoch)
        self.workers = {}
        self.next_worker = 0

    def state_dict(self) -> dict[str, Any]:
        rank, world = self.rank_world()
        return {
            "version": STATE_VERSION, "seed": self.config.seed, "shuffle": self.config.shuffle,
            "shuffle_buffer": self.config.shuffle_buffer, "infinite": self.config.infinite,
            "sources": [[n, m.url, m.total_samples] for n, m in zip(self.names, self.manifests)],
            "weights": [float(x) for x in self.weights],
            "rank": rank, "world_size": world, "num_workers": self.num_workers,
            "epoch": self.epoch, "next_worker": self.next_worker,
            "workers": {str(k): {"draws": v.draws, "sources": v.sources, "skipped": v.skipped,
                                 "item_left": v.item_left}
                        for k, v in sorted(self.workers.items())},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ShardError(f"reader state version {state.get('version')} is not {STATE_VERSION}")
        mine = self.state_dict()
        for k in ("seed", "shuffle", "shuffle_buffer", "infinite", "rank", "world_size"):
            if state[k] != mine[k]:
                raise ShardError(f"reader state has {k}={state[k]!r} but this reader has {mine[k]!r}; "
                                 "exact resume needs the same setting")
        theirs = [(n, c) for n, _, c in state["sources"]]
        ours = [(n, c) for n, _, c in mine["sources"]]
        if theirs != ours:
            raise ShardError(f"reader state was saved for sources {theirs}, this reader has {ours}")
        if not np.allclose(state["weights"], mine["weights"]):
            log.warning("mixing weights changed since the state was saved: %s -> %s",
                        state["weights"], mine["weights"])
        self.num_workers = state["num_workers"]
        self.epoch = int(state["epoch"])
        self.next_worker = int(state["next_worker"])
        self.workers = {int(k): _WorkerState(int(v["draws"]), [list(map(int, p)) for p in v["sources"]],
                                             int(v.get("skipped", 0)), int(v.get("item_left", 0)))
                        for k, v in state["workers"].items()}

    @property
    def skipped(self) -> int:
        """Bad samples skipped so far by the workers whose batches were consumed."""
        return sum(w.skipped for w in self.workers.values())
