"""The tokenization job: a corpus's work units, split by rank, encoded batch by batch.

Guarantees, and how they are kept:
- *Resumable*: a unit's table is written to a temp name and renamed, then its stats file the
  same way; a unit counts as done only when both exist, so a kill at any point loses at most
  the unit in flight and a rerun redoes exactly that.
- *Deterministic*: DataLoader worker w of N prepares the samples with index i % N == w and
  tags each with i; the main process re-sorts by i before batching. The output is therefore
  the same for any worker count, and the same on every rerun.
- *Robust*: a bad sample (from the reader or from `prepare`) is a counted skip with its
  reason and key; it never stops the unit. Errors in `encode` (the model) do stop the job,
  because they are not about one sample.
- *Distributed*: rank r of W takes the units i with i % W == r (RANK/WORLD_SIZE from
  torchrun, SLURM_PROCID/SLURM_NTASKS from SLURM, or flags); ranks never write the same file.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import fsspec
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from trimodal.config import ConfigError, require
from trimodal.jobs.protocol import Corpus, Encoder, SkipSample, WorkUnit
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
    #: At most this many sample keys per skip reason are kept in a unit's stats file.
    max_skip_keys: int = 1000
    progress: bool = True

    def __post_init__(self) -> None:
        require(bool(self.out), "JobConfig.out must be set")
        require(self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}")
        require(self.workers >= 0, f"workers must be >= 0, got {self.workers}")
        require(self.prefetch_factor > 0, f"prefetch_factor must be > 0, got {self.prefetch_factor}")
        if self.world_size is not None:
            require(self.world_size > 0, f"world_size must be > 0, got {self.world_size}")
        if self.rank is not None and self.world_size is not None:
            require(0 <= self.rank < self.world_size,
                    f"rank {self.rank} out of range for world size {self.world_size}")


# --- rank and device ------------------------------------------------------------------------
def resolve_rank(rank: int | None = None, world_size: int | None = None,
                 env: dict[str, str] | None = None) -> tuple[int, int]:
    """(rank, world size): flags win, then torchrun's RANK/WORLD_SIZE, then SLURM's, then 0/1."""
    env = dict(os.environ) if env is None else env
    def from_env(*names: str) -> int | None:
        for n in names:
            if env.get(n, "").strip():
                try:
                    return int(env[n])
                except ValueError:
                    raise ConfigError(f"environment variable {n}={env[n]!r} is not an integer") from None
        return None
    r = rank if rank is not None else from_env("RANK", "SLURM_PROCID")
    w = world_size if world_size is not None else from_env("WORLD_SIZE", "SLURM_NTASKS")
    r = 0 if r is None else r
    w = 1 if w is None else w
    if w <= 0 or not 0 <= r < w:
        raise ConfigError(f"rank {r} out of range for world size {w}")
    return r, w


def split_units(units: list[WorkUnit], rank: int, world_size: int) -> list[WorkUnit]:
    """The units of one rank: index i goes to rank i % world_size."""
    return [u for i, u in enumerate(units) if i % world_size == rank]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return dev


# --- output paths and atomic writes ---------------------------------------------------------
def table_path(out: str, unit_id: str) -> str:
    return f"{out.rstrip('/')}/tables/{unit_id}.parquet"


def stats_path(out: str, unit_id: str) -> str:
    return f"{out.rstrip('/')}/tables/{unit_id}.stats.json"


def _atomic_write(fs: fsspec.AbstractFileSystem, path: str, write) -> None:
    """Write via `write(f)` to a temp name beside `path`, then rename into place."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        with fs.open(tmp, "wb") as f:
            write(f)
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            if fs.exists(tmp):
                fs.rm(tmp)
        raise


def _write_json(fs: fsspec.AbstractFileSystem, path: str, data: dict) -> None:
    _atomic_write(fs, path, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True).encode()))


def _read_json(fs: fsspec.AbstractFileSystem, path: str) -> dict:
    with fs.open(path, "rb") as f:
        return json.loads(f.read().decode())


def unit_done(fs: fsspec.AbstractFileSystem, out: str, unit_id: str) -> bool:
    """Done means table *and* stats exist (stats are written last)."""
    return fs.exists(_strip(fs, stats_path(out, unit_id))) and fs.exists(_strip(fs, table_path(out, unit_id)))


def _strip(fs: fsspec.AbstractFileSystem, url: str) -> str:
    return fs._strip_protocol(url)


# --- the per-unit dataset -------------------------------------------------------------------
@dataclass
class _Item:
    """One sample's outcome as it travels from a worker: prepared data, a skip, or the end
    marker of unit `unit` (so the main process knows when a unit is complete)."""

    index: int
    unit: int
    key: str = ""
    prepared: Any = None
    skip_reason: str = ""
    end_of_unit: bool = False


class UnitsDataset(IterableDataset):
    """Samples of several units in sequence, prepared in DataLoader workers.

    One loader for all of a rank's pending units (not one per unit) keeps the workers busy
    across unit boundaries: the next unit is decoded while the last batch of this one is on
    the device. Every sample and every end-of-unit marker gets a running index g; worker w of
    N handles g % N == w, so the main process can restore the exact order.
    """

    def __init__(self, corpus: Corpus, units: list[WorkUnit], encoder: Encoder):
        super().__init__()
        self.corpus, self.units, self.encoder = corpus, units, encoder

    def __iter__(self) -> Iterator[_Item]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        g = 0
        for u, unit in enumerate(self.units):
            for sample in self.corpus.read(unit):
                if g % n_workers == worker:
                    yield self._prepare(g, u, unit, sample)
                g += 1
            if g % n_workers == worker:
                yield _Item(g, u, end_of_unit=True)
            g += 1

    def _prepare(self, g: int, u: int, unit: WorkUnit, sample: Any) -> _Item:
        if isinstance(sample, SkipSample):
            return _Item(g, u, sample.key, skip_reason=sample.reason)
        try:
            return _Item(g, u, sample.key, prepared=self.encoder.prepare(sample))
        except SkipSample as skip:
            return _Item(g, u, sample.key, skip_reason=skip.reason)
        except Exception as err:  # one odd file must not kill the unit
            log.warning("%s/%s: prepare failed (%s: %s); skipped", unit.id, sample.key,
                        type(err).__name__, err)
            return _Item(g, u, sample.key, skip_reason=f"{PREPARE_ERROR}:{type(err).__name__}")


def _in_order(items: Iterator[_Item]) -> Iterator[_Item]:
    """Re-sort worker outputs by sample index (cheap insurance on top of DataLoader order)."""
    heap: list[tuple[int, int, _Item]] = []
    expected = 0
    seq = 0
    for item in items:
        heapq.heappush(heap, (item.index, seq, item))
        seq += 1
        while heap and heap[0][0] == expected:
            yield heapq.heappop(heap)[2]
            expected += 1
    while heap:  # only reached if indices had gaps, which the dataset never produces
        yield heapq.heappop(heap)[2]


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
    loader_kwargs: dict[str, Any] = {}
    if config.workers > 0:
        loader_kwargs = {"prefetch_factor": config.prefetch_factor, "persistent_workers": False}
    loader = DataLoader(UnitsDataset(corpus, units, encoder), batch_size=None,
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

    for item in _in_order(iter(loader)):
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
    device = resolve_device(config.device)
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
    for unit, rows, stats in encode_units(corpus, pending, encoder, config, device, rank):
        _atomic_write(fs, _strip(fs, table_path(out, unit.id)), lambda f: _write_rows(rows, f))
        _write_json(fs, _strip(fs, stats_path(out, unit.id)), stats.to_dict())
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
    _write_json(fs, _strip(fs, f"{out}/report_rank{rank}.json"), result)
    merged = merge_reports(out, units_total=len(units))
    _write_json(fs, _strip(fs, f"{out}/report.json"), merged)
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
    for path in fs.glob(_strip(fs, f"{out}/tables/{unit_id}.*.tmp-*")):
        with contextlib.suppress(FileNotFoundError):
            fs.rm(path)


# --- reports --------------------------------------------------------------------------------
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
