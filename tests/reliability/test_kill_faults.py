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

import numpy as np
import pytest
import torch
import yaml
from fault_helpers import (KillPoint, counting, metrics_records, pick_kill_point, run_killed, shard_samples,
                           tables_of, temp_files, tokenize_args, train_text_tokenizer, write_text_corpus)

from trimodal.cli import main

SEEDS = [0, 1, 2]
SLOW_SEEDS = [3, 4, 5, 6, 7, 8]


def seeds():
    return [*SEEDS, *(pytest.param(s, marks=pytest.mark.slow) for s in SLOW_SEEDS)]


@pytest.fixture(autouse=True)
def _one_thread():
    """The in-process runs must do the same float math as the 1-thread children."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
