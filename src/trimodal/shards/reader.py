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
* **DataLoader workers.** Each batch carries the state of the worker that made it after its
  last sample; `ShardLoader` records it when it hands the batch to the trainer, so prefetched
  but unconsumed batches never count. The DataLoader serves workers round-robin; on resume
  the worker that would have been served next is made worker 0 (logical id = (id + rotation)
  % num_workers), so the batch order continues exactly.
* **Bad shards** (missing, truncated, corrupt) and bad samples are skipped with a logged
  warning; their positions still count, so the state stays exact.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import fsspec
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from trimodal.packing.vocab import Vocab
from trimodal.shards.manifest import Manifest, ShardError, read_manifest
from trimodal.shards.tario import TarCorrupt, TokenDecoder, decode_meta, iter_samples

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
    """One decoded sample; `state` is its worker's resume state right after it."""

    __slots__ = ("key", "tokens", "meta", "source", "state")

    def __init__(self, key: str, tokens: np.ndarray, meta: dict, source: str):
        self.key = key
        self.tokens = tokens
        self.meta = meta
        self.source = source
        self.state: tuple | None = None


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


class _SliceReader:
    """Reads a slot's slice sequentially; a missing/corrupt sample reads as None."""

    def __init__(self, manifest: Manifest, segments: list[tuple[int, int, int]], name: str,
                 decoder: TokenDecoder):
        self.manifest = manifest
        self.segments = segments
        self.name = name
        self.decoder = decoder
        self._header = decoder.header
        self._pos = 0  # next slice position the open iterator would give
        self._it: Iterator[ShardSample | None] | None = None

    def read(self, start: int, stop: int) -> list[ShardSample | None]:
        if self._it is None or self._pos != start:
            self._it = self._iter_from(start)
            self._pos = start
        out = [next(self._it) for _ in range(stop - start)]
        self._pos = stop
        return out

    def _iter_from(self, start: int) -> Iterator[ShardSample | None]:
        base = 0
        for shard_idx, first, count in self.segments:
            if start < base + count:
                skip = max(0, start - base)
                yield from self._read_shard(shard_idx, first + skip, count - skip)
            base += count
        while True:  # callers never read past the slice; this keeps next() total
            yield None

    def _read_shard(self, shard_idx: int, first: int, count: int) -> Iterator[ShardSample | None]:
        entry = self.manifest.shards[shard_idx]
        url = self.manifest.shard_url(entry)
        given = warned = 0
        try:
            with fsspec.open(url, "rb") as f:
                for i, (key, fields) in enumerate(iter_samples(f, url)):
                    if i < first:
                        continue
                    if given == count:
                        return
                    sample, error = self._decode(key, fields)
                    if error and warned < _MAX_SAMPLE_WARNINGS:
                        warned += 1
                        log.warning("%s: sample %s skipped: %s", url, key, error)
                    given += 1
                    yield sample
            if given < count:
                log.warning("%s: holds fewer samples than its manifest says; %d skipped",
                            url, count - given)
        except (OSError, TarCorrupt) as err:
            log.warning("%s: unreadable (%s); %d sample(s) skipped", url, err, count - given)
        for _ in range(count - given):
            yield None

    def _decode(self, key: str, fields: dict[str, bytes]) -> tuple[ShardSample | None, str]:
        try:
            tokens = self.decoder.decode(fields["tokens.npy"], self._header)
            meta = decode_meta(fields["meta.json"])
        except KeyError as err:
            return None, f"missing field {err}"
        except ValueError as err:
            return None, str(err)
        return ShardSample(key, tokens, meta, self.name), ""


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
        self._window: tuple[int, list[ShardSample | None]] | None = None
        self._plan_epoch()

    def _plan_epoch(self) -> None:
        ds = self.ds
        segments = slot_slice(ds.manifests[self.index], self.index, ds.config.seed, self.epoch,
                              ds.config.shuffle, self.slot, self.n_slots)
        self.length = sum(c for _, _, c in segments)
        self.reader = _SliceReader(ds.manifests[self.index], segments, ds.names[self.index],
                                   ds.decoder)
        self._window = None

    def next(self) -> ShardSample | None:
        """The next sample, or None when this source has nothing more for this slot."""
        B = self.ds.config.shuffle_buffer
        empty_epochs = 0
        while True:
            if self.pos >= self.length:
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
            j = self.pos // B
            if self._window is None or self._window[0] != j:
                start, stop = j * B, min(self.length, (j + 1) * B)
                items = self.reader.read(start, stop)
                if self.ds.config.shuffle and len(items) > 1:
                    perm = _rng(self.ds.config.seed, self.index, self.epoch, self.slot, j, 0x51).permutation(len(items))
                    items = [items[int(p)] for p in perm]
                self._window = (j, items)
            sample = self._window[1][self.pos - j * B]
            self.pos += 1
            if sample is None:
                self.skipped += 1
                continue
            return sample


# --- the dataset --------------------------------------------------------------------------
@dataclass
class _WorkerState:
    draws: int = 0
    sources: list[list[int]] = field(default_factory=list)  # [[epoch, pos, dead], ...]
    skipped: int = 0


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
    def __iter__(self) -> Iterator[ShardSample]:
        info = get_worker_info()
        n_workers, worker_id = (1, 0) if info is None else (info.num_workers, info.id)
        if self.num_workers is not None and self.workers and self.num_workers != n_workers:
            raise ShardError(f"reader state was saved with {self.num_workers} DataLoader worker(s); "
                             f"resume with the same number (got {n_workers})")
        logical = (worker_id + self.next_worker) % n_workers
        rank, world = self.rank_world()
        slot, n_slots = rank * n_workers + logical, world * n_workers
        saved = self.workers.get(logical)
        positions = saved.sources if saved else [[self.epoch, 0, 0] for _ in self.sources]
        streams = [_SourceStream(self, i, slot, n_slots, e, p, bool(d))
                   for i, (e, p, d) in enumerate(positions)]
        draws = saved.draws if saved else 0
        skipped0 = saved.skipped if saved else 0
        mix_epoch = 0 if self.config.infinite else self.epoch
        record_here = info is None and not self._managed
        chunk_index, uniforms = -1, np.empty(0)
        while True:
            active = [i for i, s in enumerate(streams) if not s.dead]
            if not active:
                break
            if len(active) == 1:
                choice = active[0]
            else:
                if draws // _DRAW_CHUNK != chunk_index:
                    chunk_index = draws // _DRAW_CHUNK
                    uniforms = _rng(self.config.seed, mix_epoch, slot, chunk_index, 0x313).random(_DRAW_CHUNK)
                w = np.cumsum(self.weights[active])
                choice = active[min(int(np.searchsorted(w / w[-1], uniforms[draws % _DRAW_CHUNK], side="right")),
                                    len(active) - 1)]
            draws += 1
            sample = streams[choice].next()
            if sample is None:
                continue
            sample.state = (logical, draws, tuple((s.epoch, s.pos, int(s.dead)) for s in streams),
                            skipped0 + sum(s.skipped for s in streams))
            if record_here:
                self.record(sample.state, 1)
            yield sample
        if record_here and not self.config.infinite:
            self.end_epoch()

    # --- state ----------------------------------------------------------------------------
    def record(self, state: tuple, num_workers: int) -> None:
        """Note that the consumer has taken everything up to the sample/batch with `state`."""
        logical, draws, positions, skipped = state
        self.num_workers = num_workers
        self.workers[logical] = _WorkerState(draws, [list(p) for p in positions], skipped)
        self.next_worker = (logical + 1) % num_workers

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
            "workers": {str(k): {"draws": v.draws, "sources": v.sources, "skipped": v.skipped}
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
                                             int(v.get("skipped", 0)))
                        for k, v in state["workers"].items()}

    @property
    def skipped(self) -> int:
        """Bad samples skipped so far by the workers whose batches were consumed."""
        return sum(w.skipped for w in self.workers.values())


# --- batches ------------------------------------------------------------------------------
@dataclass
class Batch:
    tokens: torch.Tensor  # [B, L] int64 global ids
    modality: torch.Tensor  # [B, L] int64: 0 text, 1 image, 2 audio, -1 PAD/TASK
    pad_mask: torch.Tensor  # [B, L] bool, True at PAD positions
    tasks: list[str]
    keys: list[str]  # shard sample keys (source keys are in meta[i]["keys"])
    sources: list[str]  # source (shard set) name per row
    meta: list[dict]
    state: tuple | None = None  # producing worker's state after the last row

    def __len__(self) -> int:
        return len(self.keys)

    def pin_memory(self) -> "Batch":
        return Batch(self.tokens.pin_memory(), self.modality.pin_memory(), self.pad_mask.pin_memory(),
                     self.tasks, self.keys, self.sources, self.meta, self.state)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(self.tokens.to(device, non_blocking=non_blocking),
                     self.modality.to(device, non_blocking=non_blocking),
                     self.pad_mask.to(device, non_blocking=non_blocking),
                     self.tasks, self.keys, self.sources, self.meta, self.state)


@dataclass
class RawBatch:
    """What a DataLoader worker sends: int32 tokens and the row info, nothing derived.

    One small tensor per batch instead of three large ones: moving tensors between processes
    costs per tensor and per byte, and the modality ids and pad mask are cheap to derive in
    the main process (`Collate.expand`).
    """

    tokens: torch.Tensor  # [B, L] int32
    tasks: list[str]
    keys: list[str]
    sources: list[str]
    meta: list[dict]
    state: tuple | None = None


class Collate:
    """Samples -> Batch. Modality ids come from Vocab.modality_of, tabulated once per process."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self._table: np.ndarray | None = None

    def raw(self, samples: list[ShardSample]) -> RawBatch:
        tokens = torch.from_numpy(np.stack([s.tokens for s in samples]))
        return RawBatch(tokens, [s.meta.get("task", "") for s in samples], [s.key for s in samples],
                        [s.source for s in samples], [s.meta for s in samples], samples[-1].state)

    def expand(self, raw: RawBatch) -> Batch:
        # numpy, not torch, for the elementwise work: on CPU builds torch's int32->int64 and
        # comparisons cost several times numpy's here, and this runs once per batch.
        if self._table is None:
            self._table = self.vocab.modality_of(np.arange(self.vocab.size)).astype(np.int8)
        tokens = raw.tokens.numpy()
        modality = torch.from_numpy(np.take(self._table, tokens).astype(np.int64))
        pad_mask = torch.from_numpy(tokens == self.vocab.pad)
        t = torch.from_numpy(tokens.astype(np.int64))
        return Batch(t, modality, pad_mask, raw.tasks, raw.keys, raw.sources, raw.meta, raw.state)

    def __call__(self, samples: list[ShardSample]) -> Batch:
        return self.expand(self.raw(samples))

    def __getstate__(self) -> dict:
        return {"vocab": self.vocab, "_table": None}


def collate(samples: list[ShardSample], vocab: Vocab) -> Batch:
    return Collate(vocab)(samples)


class ShardLoader:
    """A DataLoader over a ShardDataset that knows which batches the trainer has taken.

    `state_dict()` after n batches + `load_state_dict()` on a fresh loader (same sources,
    seed, rank/world, num_workers, batch_size) gives exactly the batches an uninterrupted run
    would have given next. Workers are not persistent: the state travels to them when an
    iterator starts.
    """

    def __init__(self, dataset: ShardDataset, batch_size: int, num_workers: int = 0,
                 pin_memory: bool = False, drop_last: bool = False,
                 prefetch_factor: int | None = None, multiprocessing_context: Any = None):
        if batch_size < 1:
            raise ShardError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        self.prefetch_factor = prefetch_factor
        self.multiprocessing_context = multiprocessing_context

    def __iter__(self) -> Iterator[Batch]:
        ds = self.dataset
        ds._managed = True
        collate_fn = Collate(ds.vocab)
        loader = DataLoader(
            ds, batch_size=self.batch_size, num_workers=self.num_workers,
            collate_fn=collate_fn.raw, pin_memory=False, drop_last=self.drop_last,
            prefetch_factor=self.prefetch_factor if self.num_workers else None,
            persistent_workers=False, multiprocessing_context=self.multiprocessing_context,
        )
        n = max(1, self.num_workers)
        try:
            for raw in loader:
                batch = collate_fn.expand(raw)
                if self.pin_memory:
                    batch = batch.pin_memory()
                if batch.state is not None:
                    ds.record(batch.state, n)
                yield batch
        finally:
            ds._managed = False
        if not ds.config.infinite:
            ds.end_epoch()

    def state_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset.state_dict(), "batch_size": self.batch_size,
                "num_workers": self.num_workers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("batch_size") != self.batch_size:
            log.warning("batch size changed since the state was saved (%s -> %s): no sample is lost "
                        "or repeated, but batch order differs from an uninterrupted run",
                        state.get("batch_size"), self.batch_size)
        saved_workers = state["dataset"].get("num_workers")
        if saved_workers is not None and state["dataset"]["workers"] and saved_workers != max(1, self.num_workers):
            raise ShardError(f"reader state was saved with {saved_workers} worker(s); this loader "
                             f"has {max(1, self.num_workers)}; exact resume needs the same number")
        self.dataset.load_state_dict(state["dataset"])


def make_loader(sources: Sequence[Source | str] | ShardDataset, vocab: Vocab | None = None,
                batch_size: int = 8, length: int | None = None, config: ReaderConfig | None = None,
                num_workers: int = 0, pin_memory: bool | None = None, drop_last: bool = False,
                prefetch_factor: int | None = None) -> ShardLoader:
    """Build dataset + loader in one call; pin_memory defaults to True when CUDA is present."""
    if isinstance(sources, ShardDataset):
        ds = sources
    else:
        if vocab is None:
            raise ShardError("make_loader: pass the run's vocab (the shards' hash is checked against it)")
        ds = ShardDataset(sources, vocab, length, config)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return ShardLoader(ds, batch_size, num_workers, pin_memory, drop_last, prefetch_factor)
