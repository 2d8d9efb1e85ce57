"""Batches from a ShardDataset, made in DataLoader workers, with the consumer's position.

* **Workers make whole batches.** Each worker runs `ShardDataset.iter_raw_batches` for its
  slot and writes the rows into its part of a shared-memory ring (`_Ring`); through the
  DataLoader queue travel only groups of small `RawBatch` records (keys, a lazy meta blob,
  the worker's state, where in the ring the rows lie). See docs/shards.md, "Reader
  throughput", for what each hand-over costs.
* **Consumption is recorded here.** `ShardLoader` records a batch's worker state when it
  hands the batch to the trainer, so prefetched but unconsumed batches never count; a group
  of batches cut by a checkpoint is finished first on resume (`_BatchStream`), so groups and
  the DataLoader's round-robin order line up with an uninterrupted run.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from trimodal.packing.vocab import Vocab
from trimodal.shards.batch import Batch, RawBatch
from trimodal.shards.manifest import ShardError
from trimodal.shards.reader import ReaderConfig, ShardDataset, ShardSample, Source

log = logging.getLogger(__name__)

#: How long a worker waits for a free shared batch slot before giving up (never, normally).
_RING_WAIT_S = 60.0
#: Rows per DataLoader hand-over when batches are small (see batches_per_item).
_ITEM_ROWS = 128


class _Ring:
    """Per-worker shared-memory batch slots, allocated once per loader iteration.

    Sending a fresh tensor per batch through a DataLoader queue moves it into a new shared
    memory segment (measured ~2 ms for a 256 KiB batch here, more than reading its samples);
    pickling a numpy array copies it through a pipe. Here each worker writes batch n into its
    slot n % slots and sends only (worker, n, rows); the main process copies the rows out and
    marks the batch consumed. The DataLoader serves workers round-robin with prefetch_factor
    requests each in flight (one more while the main process takes a batch), so prefetch_factor
    + 2 slots per worker are enough in steady state. When one worker gets more requests (the
    others finished their slices), it waits for the main process to take its older batches,
    which are already made, so the wait always ends; `stop` ends it when the consumer quits.
    """

    def __init__(self, num_workers: int, slots: int, batch_size: int, length: int):
        self.slots = slots
        shape = (num_workers, slots, batch_size, length)
        try:
            self.rows = torch.empty(shape, dtype=torch.int32).share_memory_()
        except RuntimeError as err:
            mib = int(np.prod(shape)) * 4 / 2**20
            raise ShardError(f"shared batch ring of {mib:.0f} MiB could not be allocated ({err}); give the "
                             "process more shared memory (/dev/shm, docker --shm-size) or use fewer "
                             "workers / a smaller prefetch_factor") from None
        self.done = torch.zeros(num_workers, dtype=torch.int64).share_memory_()  # batches consumed
        self.stop = torch.zeros(1, dtype=torch.int64).share_memory_()

    def slot(self, worker: int, seq: int) -> np.ndarray | None:
        """Batch `seq`'s slot, once the main process has taken what was there; None: stopping."""
        deadline = time.monotonic() + _RING_WAIT_S
        while seq - int(self.done[worker]) >= self.slots:
            if int(self.stop[0]):
                return None
            if time.monotonic() > deadline:
                raise ShardError(f"shared batch ring: worker {worker} waited {_RING_WAIT_S}s for a free slot")
            time.sleep(0.0005)
        return self.rows[worker, seq % self.slots].numpy()

    def release(self, worker: int, seq: int, rows: int) -> np.ndarray:
        """The rows of batch `seq` as int64 (a copy), and the slot given back."""
        out = self.rows[worker, seq % self.slots, :rows].numpy().astype(np.int64)
        self.done[worker] = seq + 1
        return out


def _identity(x):
    return x


def batches_per_item(batch_size: int) -> int:
    """Batches a worker hands over at once: each DataLoader hand-over costs ~0.1 ms of queue
    work and process wake-ups whatever it carries, so small batches travel in groups of about
    _ITEM_ROWS rows (one batch each when batches are that large)."""
    return max(1, _ITEM_ROWS // batch_size)


class _BatchStream(IterableDataset):
    """The dataset as a stream of groups of ready batches, for a DataLoader with batch_size=None.

    A resumed worker whose last group was only partly consumed first sends the rest of that
    group, so groups (and with them the round-robin order) line up with an uninterrupted run.
    """

    def __init__(self, ds: "ShardDataset", batch_size: int, drop_last: bool, ring: _Ring | None):
        super().__init__()
        self.ds, self.batch_size, self.drop_last, self.ring = ds, batch_size, drop_last, ring

    def __iter__(self) -> Iterator[list[RawBatch]]:
        ds = self.ds
        info = get_worker_info()
        n_workers, worker_id = (1, 0) if info is None else (info.num_workers, info.id)
        saved = ds.workers.get((worker_id + ds.next_worker) % n_workers)
        per_item = batches_per_item(self.batch_size)
        size = saved.item_left if saved and saved.item_left else per_item
        group: list[RawBatch] = []
        for raw in ds.iter_raw_batches(self.batch_size, self.drop_last, self.ring):
            group.append(raw)
            if len(group) == size:
                yield _close(group)
                group, size = [], per_item
        if group:
            yield _close(group)


def _close(group: list[RawBatch]) -> list[RawBatch]:
    for i, raw in enumerate(group):
        raw.more = len(group) - 1 - i
    return group


class Collate:
    """Samples -> Batch (for code that holds ShardSamples); RawBatch -> Batch (the loader)."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self._table: np.ndarray | None = None

    @property
    def table(self) -> np.ndarray:
        if self._table is None:
            self._table = self.vocab.modality_of(np.arange(self.vocab.size)).astype(np.int8)
        return self._table

    def raw(self, samples: list[ShardSample]) -> RawBatch:
        tokens = torch.from_numpy(np.stack([s.tokens for s in samples]))
        return RawBatch(tokens, [s.meta.get("task", "") for s in samples], [s.key for s in samples],
                        [s.source for s in samples], [s.meta for s in samples], samples[-1].state)

    def expand(self, raw: RawBatch, ring: _Ring | None = None) -> Batch:
        if raw.ring is not None:
            if ring is None:
                raise ShardError("a batch from the shared ring arrived without the ring")
            tokens = ring.release(*raw.ring)
        else:
            tokens = raw.tokens.numpy().astype(np.int64)  # type: ignore[union-attr]
        return Batch(torch.from_numpy(tokens), None, None, raw.tasks, raw.keys, raw.sources, raw.meta,
                     raw.state, modality_table=self.table, pad_id=self.vocab.pad)

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
        ring = None
        if self.num_workers:
            # per worker: the group being filled + prefetch_factor groups in flight + one more
            slots = ((self.prefetch_factor or 2) + 2) * batches_per_item(self.batch_size)
            ring = _Ring(self.num_workers, slots, self.batch_size, ds.length)
            groups = DataLoader(
                _BatchStream(ds, self.batch_size, self.drop_last, ring), batch_size=None,
                num_workers=self.num_workers, collate_fn=_identity, pin_memory=False,
                prefetch_factor=self.prefetch_factor, persistent_workers=False,
                multiprocessing_context=self.multiprocessing_context)
            raws: Iterator[RawBatch] = (raw for group in groups for raw in group)
        else:
            raws = ds.iter_raw_batches(self.batch_size, self.drop_last)
        n = max(1, self.num_workers)
        try:
            for raw in raws:
                batch = collate_fn.expand(raw, ring)
                if self.pin_memory:
                    batch = batch.pin_memory()
                if batch.state is not None:
                    ds.record(batch.state, n, raw.more)
                yield batch
        finally:
            ds._managed = False
            if ring is not None:
                ring.stop[0] = 1
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
