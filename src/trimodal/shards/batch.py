"""What the shard reader hands to a consumer: token rows, and row info decoded on demand.

The trainer reads only the tokens, so parsing every sample's meta.json in the worker (and
pickling the dicts to the main process) would be spent for nothing: a batch's meta.json rows
travel as one bytes blob (`JsonRows`) and are decoded when someone indexes them; tasks
(`TaskRows`), modality ids and the pad mask are derived from them, or from the tokens, on
first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from trimodal.shards.manifest import ShardError


class _LazyRows(Sequence):
    """A sequence whose rows are made on first access (`_row`); slices give lists."""

    def _row(self, i: int):
        raise NotImplementedError

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._row(i)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)


class JsonRows(_LazyRows):
    """meta.json of a batch's rows: one bytes blob, each row parsed (once) when indexed."""

    def __init__(self, blob: bytes, ends: Sequence[int]):
        self._blob = blob
        self._ends = list(ends)
        self._cache: dict[int, dict] = {}

    @classmethod
    def of(cls, parts: Sequence[bytes]) -> "JsonRows":
        ends, total = [], 0
        for p in parts:
            total += len(p)
            ends.append(total)
        return cls(b"".join(parts), ends)

    def __len__(self) -> int:
        return len(self._ends)

    def _row(self, i: int) -> dict:
        row = self._cache.get(i)
        if row is None:
            lo = self._ends[i - 1] if i else 0
            row = self._cache[i] = json.loads(self._blob[lo:self._ends[i]])
        return row

    def __repr__(self) -> str:
        return f"JsonRows({len(self)} rows)"

    def __getstate__(self) -> dict:
        return {"_blob": self._blob, "_ends": self._ends, "_cache": {}}


class TaskRows(_LazyRows):
    """Each row's meta["task"], read through a JsonRows only when asked for."""

    def __init__(self, meta: JsonRows):
        self._meta = meta

    def __len__(self) -> int:
        return len(self._meta)

    def _row(self, i: int) -> str:
        return self._meta[i].get("task", "")

    def __repr__(self) -> str:
        return repr(list(self))


class Batch:
    """One training batch. `modality` and `pad_mask` are derived from the tokens on first use.

    tokens  [B, L] int64 global ids
    modality [B, L] int64: 0 text, 1 image, 2 audio, -1 PAD/TASK
    pad_mask [B, L] bool, True at PAD positions
    tasks, keys (shard sample keys), sources (shard set name per row), meta (per-row dicts;
    source keys are in meta[i]["keys"]); state: the producing worker's state after the last row.

    The trainer looks up modalities itself, on the device; deriving them here for every
    batch cost more than reading the shard did, so it happens only when a consumer asks.
    """

    def __init__(self, tokens: torch.Tensor, modality: torch.Tensor | None, pad_mask: torch.Tensor | None,
                 tasks: Sequence[str], keys: list[str], sources: list[str], meta: Sequence[dict],
                 state: tuple | None = None, *, modality_table: np.ndarray | None = None,
                 pad_id: int | None = None):
        if (modality is None or pad_mask is None) and (modality_table is None or pad_id is None):
            raise ShardError("Batch: give modality and pad_mask, or the modality table and PAD id")
        self.tokens = tokens
        self._modality = modality
        self._pad_mask = pad_mask
        self._table = modality_table
        self._pad_id = pad_id
        self.tasks, self.keys, self.sources, self.meta, self.state = tasks, keys, sources, meta, state

    @property
    def modality(self) -> torch.Tensor:
        if self._modality is None:
            if self.tokens.device.type == "cpu":
                ids = self.tokens.numpy()
                self._modality = torch.from_numpy(np.take(self._table, ids).astype(np.int64))
            else:
                table = torch.from_numpy(self._table.astype(np.int64)).to(self.tokens.device)
                self._modality = table[self.tokens]
        return self._modality

    @property
    def pad_mask(self) -> torch.Tensor:
        if self._pad_mask is None:
            self._pad_mask = self.tokens == self._pad_id
        return self._pad_mask

    def __len__(self) -> int:
        return len(self.keys)

    def _with(self, fn) -> "Batch":
        return Batch(fn(self.tokens), None if self._modality is None else fn(self._modality),
                     None if self._pad_mask is None else fn(self._pad_mask), self.tasks, self.keys,
                     self.sources, self.meta, self.state, modality_table=self._table, pad_id=self._pad_id)

    def pin_memory(self) -> "Batch":
        return self._with(lambda t: t.pin_memory())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return self._with(lambda t: t.to(device, non_blocking=non_blocking))


@dataclass
class RawBatch:
    """What a DataLoader worker sends: int32 tokens (or where in the shared ring they lie)
    and the row info, nothing derived."""

    tokens: torch.Tensor | None  # [B, L] int32; None when the rows are in the ring
    tasks: Sequence[str]
    keys: list[str]
    sources: list[str]
    meta: Sequence[dict]
    state: tuple | None = None
    ring: tuple[int, int, int] | None = None  # (worker id, batch number, rows)
    more: int = 0  # batches after this one in the same hand-over
