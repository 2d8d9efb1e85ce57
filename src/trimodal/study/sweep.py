"""Sweep runner: a base training config, blocks of axes, one result file per point.

A sweep is a list of *blocks* (one question each: scaling grid, masking schedule, anti-masking,
mixing ratios, batch size with/without the SDE rule, ...). A block is a Cartesian product of
axes over dotted settings. A setting is either a `TrainConfig` field (`model.d_model`,
`masking.schedule`, `data.batch_size`, `sde.enabled`, ...) or one of the study's own keys:

    tokens        token budget (forward rows x L per step x steps; sets max_steps); the table's
                  D counts unique data tokens, half of it under anti-masking
    mix.<task>    mixing weight of the text / image_text / audio_text pool
    warmup_frac   warmup as a fraction of the run (default 0.1)

Points are named `<block>-<hash of the full merged settings>`, so editing a preset keeps the
results of unchanged points and reruns changed ones. Point i (in sweep order) belongs to rank
i % W (RANK/WORLD_SIZE, as torchrun and SLURM set them); a point is done when
`points/<name>/result.json` exists, which is written to a temporary name and renamed, so an
interrupted sweep restarted with the same command runs only what is missing (and a point cut
off mid-run resumes from its own training checkpoint). A failing point is logged, its error
written beside it, and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from tqdm import tqdm

from trimodal.config import ConfigError, require
from trimodal.io import atomic_write_json
from trimodal.launch import resolve_rank
from trimodal.study.data import TASKS, StudyData, StudyDataConfig

log = logging.getLogger(__name__)

STUDY_KEYS = ("tokens", "warmup_frac") + tuple(f"mix.{t}" for t in TASKS)
#: Final metrics copied from the last evaluation into the table (nats per maskable token).
EVAL_METRICS = ("eval/elbo",) + tuple(f"eval/elbo/{m}" for m in ("text", "image", "audio")) \
    + ("eval/elbo/task/image_text", "eval/elbo/task/audio_text")  # text rows carry no TASK token


@dataclass
class Block:
    """One question: a grid of axes (Cartesian product) on top of fixed settings."""

    name: str
    axes: dict[str, list[Any]]
    fixed: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def __post_init__(self) -> None:
        require(bool(self.name) and "/" not in self.name and "-" not in self.name,
                f"block name {self.name!r} must be non-empty without '/' or '-'")
        for key, values in self.axes.items():
            require(isinstance(values, list) and len(values) > 0,
                    f"block {self.name}: axis {key} needs a non-empty list of values")


@dataclass
class SweepConfig:
    """Everything that defines a sweep; saved as sweep.yaml beside the results."""

    name: str = "study"
    #: TrainConfig fields (nested mapping) every point starts from.
    base: dict[str, Any] = field(default_factory=dict)
    #: Study defaults every point starts from (tokens, mix.*, warmup_frac).
    defaults: dict[str, Any] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)
    data: StudyDataConfig = field(default_factory=StudyDataConfig)
    #: Evaluations per run (the last at the final step): the loss curves.
    eval_points: int = 4
    #: Passes over the held-out rows per evaluation (fresh masks each pass: less noise).
    eval_repeats: int = 4
    #: Analysis: the block the scaling law is fitted on, the batch block(s) for the critical
    #: batch (the first with the SDE rule on, optional others compared with it), the metric.
    scaling_block: str = "scaling"
    batch_block: str = "batch"
    batch_compare_blocks: list[str] = field(default_factory=list)
    metric: str = "eval/elbo"
    critical_tol: float = 0.02
    bootstrap: int = 200

    def __post_init__(self) -> None:
        require(self.critical_tol >= 0, "sweep.critical_tol must be >= 0")
        require(self.bootstrap >= 0, "sweep.bootstrap must be >= 0")
        require(len({b.name for b in self.blocks}) == len(self.blocks), "sweep: block names must be unique")
        require(self.eval_points >= 1 and self.eval_repeats >= 1, "sweep: eval_points, eval_repeats must be >= 1")
        for key in self.defaults:
            require(key in STUDY_KEYS, f"sweep.defaults: unknown study key {key!r}; known: {list(STUDY_KEYS)}")


@dataclass(frozen=True)
class SweepPoint:
    name: str
    block: str
    #: The block's axis values of this point (what the plots vary).
    axes: dict[str, Any]
    #: Every setting of the point: defaults, block fixed settings, axis values (dotted keys).
    settings: dict[str, Any]


def _slug(settings: dict[str, Any], base: dict[str, Any]) -> str:
    text = json.dumps({"settings": settings, "base": base}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def expand(cfg: SweepConfig) -> list[SweepPoint]:
    """All points of the sweep in a fixed order (blocks in order, axes as a nested loop).

    An axis value that is a mapping sets several keys at once (`mix: [{text: 2, image_text: 1,
    audio_text: 1}, ...]`, `model: [{d_model: 64, n_layers: 2}, ...]`); the point's axis label
    is then the values joined by ':' (e.g. "2:1:1").

    Points with identical settings in two blocks are kept once per block (each block's table
    is then complete on its own) but share nothing on disk: their names differ by block.
    """
    points: list[SweepPoint] = []
    for block in cfg.blocks:
        keys = list(block.axes)
        for values in itertools.product(*(block.axes[k] for k in keys)):
            axes, settings = {}, {**cfg.defaults, **block.fixed}
            for key, value in zip(keys, values):
                if isinstance(value, dict):  # a joint axis value, e.g. mix or (width, depth)
                    settings.update({f"{key}.{k}": v for k, v in value.items()})
                    axes[key] = ":".join(f"{v:g}" if isinstance(v, (int, float)) else str(v)
                                         for v in value.values())
                else:
                    settings[key] = value
                    axes[key] = value
            points.append(SweepPoint(f"{block.name}-{_slug(settings, cfg.base)}", block.name, axes, settings))
    return points


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    *path, last = key.split(".")
    for part in path:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"setting {key}: {part!r} is not a section")
        node = child
    node[last] = value


# --- running ------------------------------------------------------------------------------
TrainFn = Callable[[SweepPoint, Path], dict]


@dataclass
class SweepSummary:
    ran: list[str] = field(default_factory=list)
    done_before: list[str] = field(default_factory=list)
    other_ranks: int = 0
    failed: list[str] = field(default_factory=list)


def result_path(out: Path, point: SweepPoint) -> Path:
    return Path(out) / "points" / point.name / "result.json"


def write_json_atomic(path: Path, data: Any) -> None:
    atomic_write_json(str(path), data, indent=1, sort_keys=True, default=float)


def run_sweep(points: list[SweepPoint], out: str | Path, train_fn: TrainFn, rank: int | None = None,
              world_size: int | None = None, progress: bool = True) -> SweepSummary:
    """Run this rank's missing points with `train_fn(point, point_dir) -> result dict`."""
    out = Path(out)
    r, w = resolve_rank(rank, world_size)
    summary = SweepSummary()
    mine = []
    for i, p in enumerate(points):
        if i % w != r:
            summary.other_ranks += 1
        elif result_path(out, p).exists():
            summary.done_before.append(p.name)
        else:
            mine.append(p)
    log.info("sweep rank %d/%d: %d points to run, %d done before, %d on other ranks",
             r, w, len(mine), len(summary.done_before), summary.other_ranks)
    for p in tqdm(mine, desc="sweep", unit="point", disable=not progress):
        pdir = result_path(out, p).parent
        pdir.mkdir(parents=True, exist_ok=True)
        (pdir / "point.json").write_text(json.dumps({"name": p.name, "block": p.block, "axes": p.axes,
                                                     "settings": p.settings}, indent=1, default=str))
        t0 = time.perf_counter()
        try:
            result = train_fn(p, pdir)
        except Exception as err:  # one bad point never kills the sweep; rerun retries it
            log.error("point %s failed: %s", p.name, err)
            (pdir / "error.txt").write_text(traceback.format_exc())
            summary.failed.append(p.name)
            continue
        result = {**result, "name": p.name, "block": p.block, "axes": p.axes, "settings": p.settings,
                  "wall_s": time.perf_counter() - t0}
        write_json_atomic(result_path(out, p), result)
        (pdir / "error.txt").unlink(missing_ok=True)
        summary.ran.append(p.name)
        log.info("point %s done in %.1fs: %s", p.name, result["wall_s"],
                 {k: round(v, 4) for k, v in result.get("final", {}).items() if k == "eval/elbo"})
    return summary


# --- collecting ----------------------------------------------------------------------------
def _cell(v: Any) -> Any:
    """Table cells: numbers as float (one Arrow type per column whatever the block), rest as is."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    return json.dumps(v)


def collect(points: list[SweepPoint], out: str | Path) -> tuple[list[dict], list[dict]]:
    """Results of the done points -> (table rows, curve rows); writes table.parquet/.json.

    One table row per point: name, block, every setting, N (non-embedding parameters), D (data
    tokens), steps, compute (6ND), final per-modality eval losses, final train loss. Curve
    rows: one per (point, evaluation) with the same metric columns.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    rows, curves = [], []
    setting_keys = sorted({k for p in points for k in p.settings})
    for p in points:
        path = result_path(out, p)
        if not path.exists():
            continue
        res = json.loads(path.read_text())
        row: dict[str, Any] = {"name": p.name, "block": p.block}
        row.update({k: _cell(p.settings.get(k)) for k in setting_keys})
        for k in ("N", "D", "steps", "batch", "seq_len", "flops_per_token", "train_loss", "wall_s"):
            row[k] = _cell(res.get(k))
        row["C"] = 6.0 * row["N"] * row["D"] if row["N"] and row["D"] else None
        for m in EVAL_METRICS:
            row[m] = _cell(res.get("final", {}).get(m))
        rows.append(row)
        for c in res.get("curve", []):
            curves.append({"name": p.name, "block": p.block, "step": float(c["step"]),
                           "tokens": float(c.get("tokens", 0.0)), **{m: _cell(c.get(m)) for m in EVAL_METRICS}})
    if rows:
        pq.write_table(pa.Table.from_pylist(rows), out / "table.parquet")
    if curves:
        pq.write_table(pa.Table.from_pylist(curves), out / "curves.parquet")
    write_json_atomic(out / "table.json", {"rows": rows, "curves": curves})
    log.info("collected %d of %d points into %s", len(rows), len(points), out / "table.parquet")
    return rows, curves


# --- the real training function -------------------------------------------------------------
@dataclass
class StudyTrainer:
    """`TrainFn` that trains one point with `mdm_core.trainer.train` on the in-memory pools.

    An adapter rather than `trainer.run`, because the study mixes in-memory pools by weight
    (no shards to write per mix) and needs a fixed, balanced held-out set for every point.
    """

    data: StudyData
    base: dict[str, Any]
    eval_points: int = 4
    eval_repeats: int = 4
    eval_batch: int = 48
    #: Keep the final checkpoint of every point (off: tens of MB per point add up).
    keep_checkpoints: bool = False

    def config(self, point: SweepPoint, run_dir: Path):
        from trimodal.config import from_dict
        from trimodal.mdm_core.config import TrainConfig

        tree = copy.deepcopy(self.base)
        study = {k: v for k, v in point.settings.items() if k in STUDY_KEYS}
        for key, value in point.settings.items():
            if key not in STUDY_KEYS:
                set_dotted(tree, key, value)
        L = int(self.data.train["text"].shape[1])
        set_dotted(tree, "model.max_len", L)
        set_dotted(tree, "out_dir", str(run_dir))
        tree.setdefault("progress", False)
        cfg = from_dict(TrainConfig, tree, where=f"point {point.name}")
        seqs = cfg.data.batch_size // (2 if cfg.masking.anti_masking else 1) * cfg.grad_accum
        if "tokens" in study:
            # The budget counts forward rows (compute): with anti-masking the same steps see
            # half as many unique sequences, which is the paper's "no extra compute" comparison.
            tokens = float(study["tokens"])
            require(tokens > 0, f"point {point.name}: tokens must be > 0")
            cfg.max_steps = max(1, round(tokens / (cfg.data.batch_size * cfg.grad_accum * L)))
        # Evaluations at equal intervals ending exactly at the last step (max_steps rounded).
        every = max(1, cfg.max_steps // self.eval_points)
        cfg.max_steps = every * max(1, round(cfg.max_steps / every))
        cfg.eval_every = every
        cfg.ckpt_every = 0  # only the final checkpoint (and whatever resume needs)
        cfg.log_every = max(1, min(cfg.log_every, every))
        frac = float(study.get("warmup_frac", 0.1))
        require(0 <= frac < 1, f"point {point.name}: warmup_frac must be in [0, 1)")
        cfg.optim.warmup_steps = int(round(frac * cfg.max_steps))
        return cfg, seqs, L

    def mix(self, point: SweepPoint) -> dict[str, float]:
        weights = {t: float(point.settings.get(f"mix.{t}", 1.0)) for t in TASKS}
        require(all(v >= 0 for v in weights.values()) and sum(weights.values()) > 0,
                f"point {point.name}: mixing weights must be >= 0 with a positive sum, got {weights}")
        return weights

    def __call__(self, point: SweepPoint, point_dir: Path) -> dict:
        import numpy as np

        from trimodal.mdm_core.trainer import build_model, data_batch_size, train
        from trimodal.study.data import MixedBatches

        cfg, seqs, L = self.config(point, Path(point_dir) / "run")
        weights = self.mix(point)
        data = MixedBatches(self.data.train, weights, data_batch_size(cfg), seed=cfg.data.seed)
        rows = np.concatenate([self.data.eval_rows()] * self.eval_repeats)
        chunks = [{"tokens": rows[i:i + self.eval_batch]} for i in range(0, len(rows), self.eval_batch)]
        cfg.eval_batches = len(chunks)
        model = build_model(copy.deepcopy(cfg), self.data.vocab)
        N, fpt = model.num_params(), model.flops_per_token(L)
        del model
        with single_process():
            res = train(cfg, self.data.vocab, data, lambda: iter(chunks))
        if not self.keep_checkpoints:
            # The result file is what the sweep keeps; checkpoints only serve a cut-off run.
            (Path(cfg.out_dir) / "latest").unlink(missing_ok=True)
            for step_dir in Path(cfg.out_dir).glob("step_*"):
                shutil.rmtree(step_dir, ignore_errors=True)
        curve = [{**e, "tokens": float(e["step"] * seqs * L)} for e in res.eval]
        final = {k: v for k, v in curve[-1].items() if k.startswith("eval/")} if curve else {}
        tail = res.losses[-max(1, len(res.losses) // 10):]
        return {"N": N, "D": float(cfg.max_steps * seqs * L), "steps": cfg.max_steps, "batch": seqs,
                "seq_len": L, "flops_per_token": fpt, "train_loss": float(np.mean(tail)) if tail else math.nan,
                "final": final, "curve": curve, "mix": weights,
                "hparams": res.sde.as_dict() if res.sde else {}}


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """Hide RANK/WORLD_SIZE from the trainer while one point trains.

    Under torchrun the sweep splits *points* across ranks; each rank trains its points alone
    (LOCAL_RANK stays, so each rank keeps its own GPU). Without this the trainer would see
    WORLD_SIZE > 1 and start a process group for what is a single-process run.
    """
    saved = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE")}
    os.environ["RANK"], os.environ["WORLD_SIZE"] = "0", "1"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --- the whole study ----------------------------------------------------------------------
def run_study(cfg: SweepConfig, out: str | Path, train_fn: TrainFn | None = None, rank: int | None = None,
              world_size: int | None = None, report_dir: str | Path | None = None, command: str = "",
              progress: bool = True) -> dict:
    """Data (cached), this rank's missing points, then table + report once every point is done.

    `train_fn` None: the real `StudyTrainer` on the preset's study data; tests inject a cheap
    one. The report is written by whichever rank finds the sweep complete (rank 0 normally;
    rerun `trimodal study report` after a multi-job sweep).
    """
    from trimodal.config import save as save_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    r, w = resolve_rank(rank, world_size)
    points = expand(cfg)
    if r == 0:
        save_config(cfg, str(out / "sweep.yaml"))
    data_info: dict = {}
    if train_fn is None:
        from trimodal.study.data import build_study_data

        data = build_study_data(out / "data", cfg.data)
        data_info = data.info
        train_fn = StudyTrainer(data, cfg.base, cfg.eval_points, cfg.eval_repeats)
    summary = run_sweep(points, out, train_fn, r, w, progress)
    done = sum(result_path(out, p).exists() for p in points)
    status = {"points": len(points), "done": done, "ran": len(summary.ran), "done_before": len(summary.done_before),
              "other_ranks": summary.other_ranks, "failed": summary.failed, "report": None}
    if done == len(points) and (r == 0 or w == 1):
        status["report"] = str(make_report(cfg, out, report_dir, data_info, command))
    elif done < len(points):
        log.info("sweep incomplete (%d of %d points): no report yet", done, len(points))
    return status


def make_report(cfg: SweepConfig, out: str | Path, report_dir: str | Path | None = None,
                data_info: dict | None = None, command: str = "") -> Path:
    """Collect the done points and write the report (default: OUT/report)."""
    from trimodal.study.report import write_report

    out = Path(out)
    points = expand(cfg)
    rows, curves = collect(points, out)
    if data_info is None and (out / "data" / "pools.json").exists():
        data_info = json.loads((out / "data" / "pools.json").read_text())
    return write_report(cfg, points, rows, curves, Path(report_dir) if report_dir else out / "report",
                        data_info, command)
