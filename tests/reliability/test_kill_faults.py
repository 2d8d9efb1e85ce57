"""kill -9 at seeded, deterministic points of the real CLI, then rerun/resume: the result must
equal an uninterrupted run (issue #11, item 1).

Each stage runs once uninterrupted in-process while counting the calls of its dangerous
functions; a seeded RNG picks (function, call, before/after) among them; `fault_cli.py` runs
the same command in a child that SIGKILLs itself there; the rerun happens in-process.
Three seeds per stage by default, more under `-m slow`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fault_helpers import (KillPoint, counting, curve, final_weights, make_shard_world, metrics_records, pack_args,
                           pick_kill_point, run_killed, shard_samples, tables_of, temp_files, tokenize_args,
                           train_args, train_text_tokenizer, write_text_corpus)

from trimodal.cli import main

SEEDS = [0, 1, 2]
SLOW_SEEDS = [3, 4, 5, 6, 7, 8]


def seeds():
    return [*SEEDS, *(pytest.param(s, marks=pytest.mark.slow) for s in SLOW_SEEDS)]




# --- tokenization job ---------------------------------------------------------------------------
JOB_POINTS = {
    # table or stats renamed into place (before: temp written, not renamed; after: renamed,
    # next file not yet written); also the rank report and the merged report at the end
    "trimodal.jobs.runner:_atomic_write": ("before", "after"),
    # a unit's parquet bytes written to the temp name
    "trimodal.jobs.runner:_write_rows": ("after",),
    # mid-unit: a batch on the encoder
    "trimodal.jobs.text:TextEncoder.encode": ("before", "after"),
}


@pytest.fixture(scope="module")
def job_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("job")
    n_docs = write_text_corpus(root / "corpus")
    tok = train_text_tokenizer(root / "text.model")
    with counting(list(JOB_POINTS)) as counts:
        assert main(tokenize_args(root / "corpus", tok, root / "clean")) == 0
    return root, tok, n_docs, dict(counts)


@pytest.mark.parametrize("seed", seeds())
def test_tokenize_job_killed_then_rerun_equals_uninterrupted(job_world, tmp_path, seed):
    root, tok, n_docs, counts = job_world
    point = pick_kill_point(seed, counts, JOB_POINTS)
    out = tmp_path / "out"
    args = tokenize_args(root / "corpus", tok, out)
    run_killed(point, args)
    done_before = len(list((out / "tables").glob("*.stats.json")))

    assert main(args) == 0
    clean = tables_of(root / "clean")
    assert tables_of(out) == clean, point
    keys = [row[0] for rows in clean.values() for row in rows]
    assert len(keys) == n_docs == len(set(keys))
    assert temp_files(out) == [], point
    report = json.loads((out / "report.json").read_text())
    clean_report = json.loads((root / "clean" / "report.json").read_text())
    for k in ("units_total", "units_with_output", "samples_ok", "skipped"):
        assert report[k] == clean_report[k], (k, point)
    rank = json.loads((out / "report_rank0.json").read_text())
    assert rank["units_already_done"] == done_before
    assert rank["units_done"] + rank["units_already_done"] == rank["units_assigned"]


# --- pack -> shard sets -------------------------------------------------------------------------
PACK_POINTS = {
    "trimodal.shards.writer:write_member": ("before",),  # mid-shard (k-th tar member)
    "trimodal.shards.writer:ShardWriter._finish_shard": ("before", "after"),  # around a shard's rename
    "trimodal.shards.writer:write_manifest": ("before", "after"),  # between two finished sets
}


def manifests(out: Path) -> dict[str, dict]:
    """Each set's manifest without its creation time and config (they name the run, not the data)."""
    result = {}
    for p in sorted(out.rglob("manifest.json")):
        m = json.loads(p.read_text())
        result[str(p.relative_to(out))] = {k: v for k, v in m.items() if k not in ("created", "config")}
    return result


@pytest.fixture(scope="module")
def pack_world(tmp_path_factory):
    root = make_shard_world(tmp_path_factory.mktemp("pack"))
    with counting(list(PACK_POINTS)) as counts:
        assert main(pack_args(root, root / "clean")) == 0
    assert len(manifests(root / "clean")) == 2 and counts["trimodal.shards.writer:ShardWriter._finish_shard"] >= 4
    return root, dict(counts)


@pytest.mark.parametrize("seed", seeds())
def test_pack_killed_then_rerun_equals_uninterrupted(pack_world, tmp_path, seed):
    """Documented behaviour: `trimodal pack` is not resumable. The same command rerun works
    while no set was finished; once one was, it refuses (exit 1, nothing touched) and the rerun
    needs --overwrite. Either way the result equals an uninterrupted run, byte for byte."""
    world, counts = pack_world
    point = pick_kill_point(seed, counts, PACK_POINTS)
    out = tmp_path / "out"
    run_killed(point, pack_args(world, out))
    finished = manifests(out)
    assert not (out / "sets.json").exists()

    rc = main(pack_args(world, out))
    if finished:
        assert rc == 1 and manifests(out) == finished, point
        assert main(pack_args(world, out) + ["--overwrite"]) == 0
    else:
        assert rc == 0, point
    clean = world / "clean"
    assert manifests(out) == manifests(clean), point
    assert shard_samples(out) == shard_samples(clean), point
    assert sorted(p.relative_to(out) for p in out.rglob("*.tar")) == \
        sorted(p.relative_to(clean) for p in clean.rglob("*.tar")), point
    assert json.loads((out / "sets.json").read_text()) == json.loads((clean / "sets.json").read_text())
    assert temp_files(out) == [], point
    assert main(["shards", "verify", str(out)]) == 0


def test_pack_overwrite_killed_midway_leaves_an_unfinished_set(pack_world, tmp_path):
    """Killed while --overwrite replaces a set with other data: the set must read as unfinished
    (no manifest), never as the old manifest over a mix of old and new shards."""
    from trimodal.shards.manifest import ShardError, read_manifest

    world, _ = pack_world
    out = tmp_path / "out"
    shutil.copytree(world / "clean", out)
    other = ["pack", "--tables", str(world / "tables_a" / "tables"), "--vocab", str(world / "vocab.json"),
             "--out", str(out), "--length", "32", "--shard-samples", "10", "--overwrite"]
    run_killed(KillPoint("trimodal.shards.writer:ShardWriter._finish_shard", 2, "after"), other)
    with pytest.raises(ShardError, match="no manifest"):
        read_manifest(str(out / "text" / "a"))
    assert (out / "text" / "b" / "manifest.json").exists()  # not reached: still the old, intact set
    assert main(["shards", "verify", str(out / "text" / "b")]) == 0
    assert main(other) == 0
    names = sorted(p.name for p in (out / "text" / "a").glob("*.tar"))
    assert names == [s.name for s in read_manifest(str(out / "text" / "a")).shards]  # no stale tars
    assert main(["shards", "verify", str(out / "text" / "a")]) == 0


# --- training -----------------------------------------------------------------------------------
TRAIN_POINTS = {
    "trimodal.mdm_core.trainer:mdm_loss": ("before",),  # mid-step (k-th micro-batch or eval batch)
    "trimodal.mdm_core.checkpoint:_write": ("before", "after"),  # between a checkpoint's files
    "trimodal.mdm_core.checkpoint:mark_latest": ("before", "after"),  # checkpoint written, not yet `latest`
}


@pytest.fixture(scope="module")
def train_world(pack_world):
    world, _ = pack_world
    with counting(list(TRAIN_POINTS)) as counts:
        assert main(train_args(world / "clean", world / "run_clean")) == 0
    return world, dict(counts)


@pytest.mark.parametrize("seed", seeds())
def test_train_killed_then_resumed_equals_uninterrupted(train_world, tmp_path, seed):
    world, counts = train_world
    point = pick_kill_point(seed, counts, TRAIN_POINTS)
    run = tmp_path / "run"
    args = train_args(world / "clean", run)
    run_killed(point, args)
    assert main(args) == 0

    clean = world / "run_clean"
    steps = [r["step"] for r in metrics_records(run) if "loss" in r]
    assert steps == list(range(1, 11)), (point, steps)  # every step logged once, in order
    assert curve(run) == curve(clean), point  # bitwise: same math on one CPU thread
    a, b = final_weights(clean), final_weights(run)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), (name, point)
    assert (run / "latest").read_text().strip() == "step_00000010"
    assert temp_files(run) == [], point


def test_trim_metrics_drops_redone_steps_and_a_cut_line(tmp_path):
    from trimodal.mdm_core.trainer import trim_metrics

    path = tmp_path / "metrics.jsonl"
    records = [{"step": s, "loss": 1.0 / s} for s in range(1, 6)] + [{"step": 5, "eval/elbo": 2.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 6, "lo')
    trim_metrics(str(path), 3)
    assert metrics_records(tmp_path) == records[:3]
    trim_metrics(str(path), 3)  # nothing to drop: untouched
    assert metrics_records(tmp_path) == records[:3]
    trim_metrics(str(path), 0)  # a fresh start keeps nothing
    assert path.read_text() == ""


@pytest.mark.slow
def test_tokenize_job_with_loader_workers_killed_then_rerun(job_world, tmp_path):
    """Same with 2 DataLoader worker processes preparing samples while the main one dies."""
    root, tok, _, _ = job_world
    out = tmp_path / "out"
    args = [a if a != "0" else "2" for a in tokenize_args(root / "corpus", tok, out)]  # --workers 2
    assert args[args.index("--workers") + 1] == "2"
    run_killed(KillPoint("trimodal.jobs.text:TextEncoder.encode", 7, "before"), args)
    assert 0 < len(list((out / "tables").glob("*.stats.json"))) < 6
    assert main(args) == 0
    assert tables_of(out) == tables_of(root / "clean")
    assert temp_files(out) == []
