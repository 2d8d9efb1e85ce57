"""The tokenization job: a corpus's work units, split by rank, encoded batch by batch.

Guarantees, and how they are kept:
- *Resumable*: a unit's table is written to a temp name and renamed, then its stats file the
  same way; a unit counts as done only when both exist, so a kill at any point loses at most
  the unit in flight and a rerun redoes exactly that.
- *Deterministic*: DataLoader worker w of N prepares the samples at positions i % N == w of
  every unit (`read_part(unit, w, N)`, so it opens only its own files) and tags each with
  (unit, i); the main process merges the workers' streams back into (unit, i) order before
  batching. The output is therefore the same for any worker count, and on every rerun.
- *Fast*: workers send their samples in messages of several at once (one queue round trip per
  message, not per sample), and the main process only batches, encodes and writes.
- *Robust*: a bad sample (from the reader or from `prepare`) is a counted skip with its
  reason and key; it never stops the unit. Errors in `encode` (the model) do stop the job,
  because they are not about one sample.
- *Distributed*: rank r of W takes the units i with i % W == r (RANK/WORLD_SIZE from
  torchrun, SLURM_PROCID/SLURM_NTASKS from SLURM, or flags); ranks never write the same file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterator

import fsspec
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from trimodal.config import ConfigError, require
from trimodal.jobs.protocol import Corpus, Encoder, SkipSample, WorkUnit
from trimodal.io import atomic_open, resolve_device, stale_temps
from trimodal.launch import local_rank, resolve_rank
from trimodal.packing.table import TokenRow

log = logging.getLogger(__name__)

#: Skip reason for a prepare() that raised something other than SkipSample.
PREPARE_ERROR = "prepare_error"
DUPLICATE_KEY = "duplicate_key"
_SAFE_UNIT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class JobConfig:
    """One tokenization job (one rank of it)."""

    out: str
    batch_size: int = 32
    workers: int = 2
    #: None: from RANK/WORLD_SIZE or SLURM_PROCID/SLURM_NTASKS, else 0 of 1.
    rank: int | None = None
    world_size: int | None = None
    #: "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    bf16: bool = False
    prefetch_factor: int = 4
    #: Samples per worker -> main message; 0: batch_size / workers (one batch per round).
    items_per_message: int = 0
    #: torch intra-op threads of the encoder on CPU; 0: torch's setting capped at the cores this
    #: process may use, none held back for the workers (see `encoder_threads`). Ignored on CUDA.
    threads: int = 0
    #: At most this many sample keys per skip reason are kept in a unit's stats file.
    max_skip_keys: int = 1000
    progress: bool = True

    def __post_init__(self) -> None:
        require(bool(self.out), "JobConfig.out must be set")
        require(self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}")
        require(self.workers >= 0, f"workers must be >= 0, got {self.workers}")
        require(self.prefetch_factor > 0, f"prefetch_factor must be > 0, got {self.prefetch_factor}")
        require(self.items_per_message >= 0,
                f"items_per_message must be >= 0, got {self.items_per_message}")
        require(self.threads >= 0, f"threads must be >= 0, got {self.threads}")
        if self.world_size is not None:
            require(self.world_size > 0, f"world_size must be > 0, got {self.world_size}")
        if self.rank is not None and self.world_size is not None:
            require(0 <= self.rank < self.world_size,
                    f"rank {self.rank} out of range for world size {self.world_size}")


# --- rank and device ------------------------------------------------------------------------
def split_units(units: list[WorkUnit], rank: int, world_size: int) -> list[WorkUnit]:
    """The units of one rank: index i goes to rank i % world_size."""
    return [u for i, u in enumerate(units) if i % world_size == rank]


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers and SLURM set)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def encoder_threads(config: JobConfig, device: torch.device, cores: int | None = None,
                    current: int | None = None) -> int | None:
    """torch intra-op threads for the encoder, or None to leave torch's setting alone (CUDA).

    Default: torch's current setting (physical cores, or what the user chose), capped at the
    cores the affinity mask allows (torch can see a container's host cores). No core is held
    back for the workers (not cores - workers): decoding and resizing a sample costs a few
    percent of encoding it (0.6 ms vs ~27 CPU-ms for the 64 px fsq-f8 image tokenizer), so the
    workers mostly sleep and a reserved core would mostly idle. Measured on 2 cores: the bare
    encoder does 35-42 images/s on 1 thread, 59-73 on 2.
    """
    if device.type != "cpu":
        return None
    if config.threads > 0:
        return config.threads
    cores = cpu_cores() if cores is None else cores
    current = torch.get_num_threads() if current is None else current
    return max(1, min(current, cores))


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Set torch's intra-op threads for the job and give the caller's setting back after."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- output paths and atomic writes ---------------------------------------------------------
def table_path(out: str, unit_id: str) -> str:
    return f"{out.rstrip('/')}/tables/{unit_id}.parquet"


def stats_path(out: str, unit_id: str) -> str:
    return f"{out.rstrip('/')}/tables/{unit_id}.stats.json"


def _atomic_write(url: str, write: Callable[[IO[bytes]], Any], fsync: bool = True) -> None:
    """Every output file of a job goes through here (`trimodal.io.atomic_open`): one place
    for the reliability tests to kill the process between two files."""
    with atomic_open(url, "wb", fsync) as f:
        write(f)


def _write_json(url: str, data: dict, fsync: bool = True) -> None:
    _atomic_write(url, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True).encode()), fsync)


def _read_json(fs: fsspec.AbstractFileSystem, path: str) -> dict:
    with fs.open(path, "rb") as f:
        return json.loads(f.read().decode())


def unit_done(fs: fsspec.AbstractFileSystem, out: str, unit_id: str) -> bool:
    """Done means table *and* stats exist (stats are written last)."""
    return fs.exists(_strip(fs, stats_path(out, unit_id))) and fs.exists(_strip(fs, table_path(out, unit_id)))


def _strip(fs: fsspec.AbstractFileSystem, url: str) -> str:
    return fs._strip_protocol(url)


# --- the per-unit dataset -------------------------------------------------------------------
def read_part(corpus: Corpus, unit: WorkUnit, part: int, n_parts: int) -> Iterator[Any]:
    """Entries of `corpus.read(unit)` at positions i % n_parts == part, in order.

    Uses the corpus's own `read_part` when it has one (which can avoid opening the other
    parts' files); otherwise reads everything and keeps its part.
    """
    own = getattr(corpus, "read_part", None)
    if n_parts == 1:
        return iter(corpus.read(unit))
    if callable(own):
        return iter(own(unit, part, n_parts))
    return (s for i, s in enumerate(corpus.read(unit)) if i % n_parts == part)


@dataclass
class _Item:
    """One sample's outcome as it travels from a worker: prepared data, a skip, or worker
    `worker`'s end marker of unit `unit` (it has no more samples of that unit)."""

    index: int
    unit: int
    key: str = ""
    prepared: Any = None
    skip_reason: str = ""
    end_of_unit: bool = False
    worker: int = 0


class UnitsDataset(IterableDataset):
    """Samples of several units in sequence, prepared in DataLoader workers.

    One loader for all of a rank's pending units (not one per unit) keeps the workers busy
    across unit boundaries: the next unit is decoded while the last batch of this one is on
    the device. Worker w of N takes positions i % N == w of each unit and ends each unit with
    its own end marker; it yields lists of up to `items_per_message` items.
    """

    def __init__(self, corpus: Corpus, units: list[WorkUnit], encoder: Encoder,
                 items_per_message: int = 1):
        super().__init__()
        self.corpus, self.units, self.encoder = corpus, units, encoder
        self.items_per_message = max(1, items_per_message)

    def __iter__(self) -> Iterator[list[_Item]]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        message: list[_Item] = []
        for u, unit in enumerate(self.units):
            samples = read_part(self.corpus, unit, worker, n_workers)
            for k, sample in enumerate(samples):
                message.append(self._prepare(worker + k * n_workers, u, unit, sample))
                if len(message) >= self.items_per_message:
                    yield message
                    message = []
            message.append(_Item(-1, u, end_of_unit=True, worker=worker))
        if message:
            yield message

    def _prepare(self, i: int, u: int, unit: WorkUnit, sample: Any) -> _Item:
        if isinstance(sample, SkipSample):
            return _Item(i, u, sample.key, skip_reason=sample.reason)
        try:
            return _Item(i, u, sample.key, prepared=self.encoder.prepare(sample))
        except SkipSample as skip:
            return _Item(i, u, sample.key, skip_reason=skip.reason)
        except Exception as err:  # one odd file must not kill the unit
            log.warning("%s/%s: prepare failed (%s: %s); skipped", unit.id, sample.key,
                        type(err).__name__, err)
            return _Item(i, u, sample.key, skip_reason=f"{PREPARE_ERROR}:{type(err).__name__}")


def _in_order(messages: Iterator[list[_Item]], n_workers: int, n_units: int) -> Iterator[_Item]:
    """Merge the workers' streams into (unit, position) order, one end marker per unit.

    Position i of a unit belongs to worker i % N, so the next item is always at the head of
    one known worker's queue. When that worker's head is instead its end marker of the unit,
    the unit has no position i: it is complete. The other workers' end markers of finished
    units are dropped as they come up. Memory stays bounded by what the loader prefetches.
    """
    queues: list[deque[_Item]] = [deque() for _ in range(n_workers)]
    unit, position = 0, 0
    for message in messages:
        for item in message:
            queues[item.worker if item.end_of_unit else item.index % n_workers].append(item)
        while True:
            queue = queues[position % n_workers]
            while queue and queue[0].unit < unit:  # end markers of units already complete
                queue.popleft()
            if not queue:
                break
            head = queue.popleft()
            if head.unit != unit or (not head.end_of_unit and head.index != position):
                raise RuntimeError(f"job workers out of step: expected unit {unit} position "
                                   f"{position}, got unit {head.unit} position {head.index}")
            if head.end_of_unit:
                yield _Item(position, unit, end_of_unit=True)
                unit, position = unit + 1, 0
            else:
                yield head
                position += 1
    if unit != n_units:
        raise RuntimeError(f"job workers stopped early: unit {unit} position {position} never came")


@dataclass
class UnitStats:
    unit: str
    source: str
    samples_ok: int = 0
    skipped: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    rank: int = 0
    encoder: str = ""
    tokenizer_hash: str = ""

    def skip(self, reason: str, key: str, max_keys: int) -> None:
        entry = self.skipped.setdefault(reason, {"count": 0, "keys": []})
        entry["count"] += 1
        if len(entry["keys"]) < max_keys:
            entry["keys"].append(key)

    @property
    def skipped_total(self) -> int:
        return sum(e["count"] for e in self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit, "source": self.source, "samples_ok": self.samples_ok,
            "skipped_total": self.skipped_total, "skipped": self.skipped,
            "seconds": round(self.seconds, 4),
            "items_per_s": round(self.samples_ok / self.seconds, 2) if self.seconds > 0 else 0.0,
            "rank": self.rank, "encoder": self.encoder, "tokenizer_hash": self.tokenizer_hash,
        }


def _autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def encode_units(corpus: Corpus, units: list[WorkUnit], encoder: Encoder, config: JobConfig,
                 device: torch.device, rank: int = 0
                 ) -> Iterator[tuple[WorkUnit, list[TokenRow], UnitStats]]:
    """(unit, rows in sample order, stats) for each unit as soon as it is complete. Writes nothing."""
    if not units:
        return
    n_workers = max(1, config.workers)
    per_message = config.items_per_message or -(-config.batch_size // n_workers)
    loader_kwargs: dict[str, Any] = {}
    if config.workers > 0:
        loader_kwargs = {"prefetch_factor": config.prefetch_factor, "persistent_workers": False}
    # batch_size=None: the dataset's messages pass through as they are (lists of _Item).
    loader = DataLoader(UnitsDataset(corpus, units, encoder, per_message), batch_size=None,
                        num_workers=config.workers, pin_memory=device.type == "cuda", **loader_kwargs)

    def new_stats(u: WorkUnit) -> UnitStats:
        return UnitStats(unit=u.id, source=u.source, rank=rank, encoder=encoder.name,
                         tokenizer_hash=encoder.tokenizer_hash)

    rows: list[TokenRow] = []
    seen: set[str] = set()
    batch: list[_Item] = []
    stats = new_stats(units[0])
    t0 = time.perf_counter()

    def flush() -> None:
        with torch.inference_mode(), _autocast(device, config.bf16):
            out = encoder.encode([it.prepared for it in batch], device)
        if len(out) != len(batch):
            raise RuntimeError(f"{encoder.name}.encode returned {len(out)} rows for {len(batch)} inputs")
        for it, row in zip(batch, out):
            if row.key != it.key:
                raise RuntimeError(f"{encoder.name}.encode returned key {row.key!r} where "
                                   f"{it.key!r} was expected: rows must keep input order")
        rows.extend(out)
        batch.clear()

    for item in _in_order(iter(loader), n_workers, len(units)):
        if item.end_of_unit:
            if batch:
                flush()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stats.samples_ok = len(rows)
            stats.seconds = time.perf_counter() - t0
            yield units[item.unit], rows, stats
            rows, seen = [], set()
            if item.unit + 1 < len(units):
                stats = new_stats(units[item.unit + 1])
            t0 = time.perf_counter()
        elif item.skip_reason:
            stats.skip(item.skip_reason, item.key, config.max_skip_keys)
        elif item.key in seen:
            stats.skip(DUPLICATE_KEY, item.key, config.max_skip_keys)
        else:
            seen.add(item.key)
            batch.append(item)
            if len(batch) >= config.batch_size:
                flush()


# --- the job --------------------------------------------------------------------------------
@dataclass
class RankReport:
    rank: int
    world_size: int
    units_assigned: int = 0
    units_done: int = 0
    units_already_done: int = 0
    samples_ok: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    device: str = ""
    encoder: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "world_size": self.world_size,
            "units_assigned": self.units_assigned, "units_done": self.units_done,
            "units_already_done": self.units_already_done, "samples_ok": self.samples_ok,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_total": sum(self.skipped.values()),
            "seconds": round(self.seconds, 4),
            "items_per_s": round(self.samples_ok / self.seconds, 2) if self.seconds > 0 else 0.0,
            "device": self.device, "encoder": self.encoder,
        }


def _check_units(units: list[WorkUnit]) -> None:
    ids = [u.id for u in units]
    bad = [i for i in ids if not _SAFE_UNIT_ID.match(i)]
    if bad:
        raise ConfigError(f"unit ids must be safe file names ([A-Za-z0-9._-]), got {bad[:3]}")
    dupes = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if dupes:
        raise ConfigError(f"duplicate unit ids {dupes[:3]}: every unit needs its own output file")


def run_job(corpus: Corpus, encoder: Encoder, config: JobConfig) -> dict[str, Any]:
    """Encode this rank's units of `corpus` into `<out>/tables`; returns the rank report.

    Also writes `<out>/report_rank<r>.json` and refreshes the merged `<out>/report.json`.
    """
    rank, world = resolve_rank(config.rank, config.world_size)
    device = resolve_device(config.device, local_rank())
    fs, _ = fsspec.core.url_to_fs(config.out)
    out = config.out.rstrip("/")
    fs.makedirs(_strip(fs, f"{out}/tables"), exist_ok=True)
    units = corpus.units()
    _check_units(units)
    mine = split_units(units, rank, world)
    report = RankReport(rank=rank, world_size=world, units_assigned=len(mine),
                        device=str(device), encoder=encoder.name)
    log.info("rank %d/%d: %d of %d units of %s -> %s (device %s, %d workers, batch %d)",
             rank, world, len(mine), len(units), corpus.name, out, device, config.workers,
             config.batch_size)
    t0 = time.perf_counter()
    pending = []
    for unit in mine:
        if unit_done(fs, out, unit.id):
            prev = _read_json(fs, _strip(fs, stats_path(out, unit.id)))
            if prev.get("tokenizer_hash") != encoder.tokenizer_hash:
                raise ConfigError(
                    f"{stats_path(out, unit.id)}: made with tokenizer {prev.get('tokenizer_hash')!r}, "
                    f"this job uses {encoder.tokenizer_hash!r}; use a new --out folder")
            report.units_already_done += 1
        else:
            _remove_stale_temps(fs, out, unit.id)
            pending.append(unit)
    if report.units_already_done:
        log.info("rank %d: %d units already done, %d to go", rank, report.units_already_done,
                 len(pending))
    bar = tqdm(total=len(pending), desc=f"tokenize[{rank}]", unit="unit", disable=not config.progress)
    threads = encoder_threads(config, device)
    if threads is not None:
        log.info("rank %d: encoder uses %d torch threads beside %d decoding workers", rank,
                 threads, config.workers)
    with _torch_threads(threads):
        for unit, rows, stats in encode_units(corpus, pending, encoder, config, device, rank):
            _atomic_write(table_path(out, unit.id), lambda f: _write_rows(rows, f))
            _write_json(stats_path(out, unit.id), stats.to_dict())
            report.units_done += 1
            report.samples_ok += stats.samples_ok
            for reason, entry in stats.skipped.items():
                report.skipped[reason] = report.skipped.get(reason, 0) + entry["count"]
            bar.update(1)
            bar.set_postfix(ok=report.samples_ok, skipped=sum(report.skipped.values()))
            log.debug("%s: %d ok, %d skipped in %.2fs", unit.id, stats.samples_ok,
                      stats.skipped_total, stats.seconds)
    bar.close()
    report.seconds = time.perf_counter() - t0
    result = report.to_dict()
    _write_json(f"{out}/report_rank{rank}.json", result)
    write_merged_report(out, len(units))
    log.info("rank %d: %d units encoded, %d already done, %d samples ok, %d skipped, %.1f items/s",
             rank, report.units_done, report.units_already_done, report.samples_ok,
             sum(report.skipped.values()), result["items_per_s"])
    return result


def _write_rows(rows: list[TokenRow], f) -> None:
    import pyarrow.parquet as pq

    from trimodal.packing.table import rows_to_table

    pq.write_table(rows_to_table(rows), f)


def _remove_stale_temps(fs: fsspec.AbstractFileSystem, out: str, unit_id: str) -> None:
    """Temp files of this unit left by a killed earlier run (this rank owns the unit)."""
    for target in (table_path(out, unit_id), stats_path(out, unit_id)):
        for path in stale_temps(fs, _strip(fs, target)):
            with contextlib.suppress(FileNotFoundError):
                fs.rm(path)


# --- reports --------------------------------------------------------------------------------
def write_merged_report(out: str, units_total: int, max_rounds: int = 8) -> dict[str, Any]:
    """Refresh `<out>/report.json` until it agrees with what is on disk after the write.

    Ranks that finish together race: rank A merges before rank B's files exist, B writes its
    complete merge, then A's stale one lands on top. Re-reading after each write closes that:
    a rank's last write is followed by a merge that equals it, so every file written before
    that last merge (another rank's stats and report) is in the report a rank leaves. Not
    fsynced: it is rebuilt from the stats files whenever it is lost."""
    path = f"{out.rstrip('/')}/report.json"
    merged = merge_reports(out, units_total=units_total)
    for _ in range(max_rounds):
        _write_json(path, merged, fsync=False)
        again = merge_reports(out, units_total=units_total)
        if again == merged:
            break
        merged = again
    return merged


def merge_reports(out: str, units_total: int | None = None) -> dict[str, Any]:
    """The job-wide report from every unit's stats and every rank's report found in `out`.

    Unit stats are the source of truth for counts (they survive reruns); rank reports add
    timing. Safe to call at any time, by any rank.
    """
    fs, _ = fsspec.core.url_to_fs(out)
    out = out.rstrip("/")
    stats = [_read_json(fs, p) for p in sorted(fs.glob(_strip(fs, f"{out}/tables/*.stats.json")))]
    ranks = [_read_json(fs, p) for p in sorted(fs.glob(_strip(fs, f"{out}/report_rank*.json")))]
    ranks.sort(key=lambda r: r.get("rank", 0))
    skipped: dict[str, int] = {}
    for s in stats:
        for reason, entry in s.get("skipped", {}).items():
            skipped[reason] = skipped.get(reason, 0) + entry["count"]
    encode_seconds = sum(s.get("seconds", 0.0) for s in stats)
    samples_ok = sum(s.get("samples_ok", 0) for s in stats)
    return {
        "units_total": units_total,
        "units_with_output": len(stats),
        "samples_ok": samples_ok,
        "skipped": dict(sorted(skipped.items())),
        "skipped_total": sum(skipped.values()),
        "unit_seconds": round(encode_seconds, 4),
        "items_per_s_per_rank": round(samples_ok / encode_seconds, 2) if encode_seconds > 0 else 0.0,
        "items_per_s_last_run": round(sum(r.get("items_per_s", 0.0) for r in ranks), 2),
        "ranks": ranks,
    }


def format_summary(report: dict[str, Any]) -> str:
    """A short markdown summary of a merged report (printed by the CLI)."""
    total = report.get("units_total")
    lines = [
        "| units with output | samples ok | skipped | items/s (per rank) |",
        "|---|---|---|---|",
        f"| {report['units_with_output']}{'' if total is None else f' / {total}'} | "
        f"{report['samples_ok']} | {report['skipped_total']} | {report['items_per_s_per_rank']} |",
    ]
    if report["skipped"]:
        lines += ["", "| skip reason | count |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in report["skipped"].items()]
    for r in report.get("ranks", []):
        lines.append("")
        lines.append(f"rank {r['rank']}/{r['world_size']}: {r['units_done']} units encoded, "
                     f"{r['units_already_done']} already done, {r['samples_ok']} samples, "
                     f"{r['items_per_s']} items/s on {r['device']}")
    return "\n".join(lines)
