"""The CLI under `torchrun --standalone --nproc_per_node 2` on CPU (gloo): a tokenization job
and training, as docs/scale-out.md documents them (issue #11, item 5)."""

from __future__ import annotations

import json

import pytest
import torch
from fault_helpers import (KillPoint, curve, final_weights, make_shard_world, metrics_records, pack_args,
                           run_torchrun, tables_of, temp_files, tokenize_args, train_args,
                           train_text_tokenizer, write_text_corpus)

from trimodal.cli import main
from trimodal.jobs.runner import merge_reports




def test_torchrun_tokenize_two_ranks_equal_one_process(tmp_path):
    n_docs = write_text_corpus(tmp_path / "corpus", n_files=5, docs_per_file=4)
    tok = train_text_tokenizer(tmp_path / "text.model")
    assert main(tokenize_args(tmp_path / "corpus", tok, tmp_path / "one")) == 0

    proc = run_torchrun(2, tokenize_args(tmp_path / "corpus", tok, tmp_path / "two"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = tmp_path / "two"
    assert tables_of(two) == tables_of(tmp_path / "one")
    ranks = [json.loads((two / f"report_rank{r}.json").read_text()) for r in range(2)]
    assert [(r["rank"], r["world_size"], r["units_assigned"]) for r in ranks] == [(0, 2, 3), (1, 2, 2)]
    assert sum(r["samples_ok"] for r in ranks) == n_docs
    # Every rank merges what it finds when it ends; re-merging now sees both (the report
    # file itself may come from the rank that ended first, see docs/scale-out.md).
    merged, single = merge_reports(str(two), units_total=5), merge_reports(str(tmp_path / "one"), units_total=5)
    for k in ("units_total", "units_with_output", "samples_ok", "skipped"):
        assert merged[k] == single[k], k
    assert [r["rank"] for r in merged["ranks"]] == [0, 1]
    assert temp_files(two) == []


@pytest.mark.slow
def test_torchrun_tokenize_rank_killed_then_rerun(tmp_path):
    """Rank 1 dies by kill -9 right after its first table is renamed into place; the same
    torchrun command then finds rank 0's units and that one table done and redoes the rest."""
    write_text_corpus(tmp_path / "corpus", n_files=5, docs_per_file=4)
    tok = train_text_tokenizer(tmp_path / "text.model")
    assert main(tokenize_args(tmp_path / "corpus", tok, tmp_path / "one")) == 0
    two = tmp_path / "two"
    proc = run_torchrun(2, tokenize_args(tmp_path / "corpus", tok, two),
                        kill=KillPoint("trimodal.jobs.runner:_atomic_write", 1, "after"), kill_rank=1)
    assert proc.returncode != 0 and "SIGKILL" in proc.stderr, proc.stderr[-3000:]
    proc = run_torchrun(2, tokenize_args(tmp_path / "corpus", tok, two))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((two / f"report_rank{r}.json").read_text()) for r in range(2)]
    assert ranks[1]["units_done"] == 2 and ranks[1]["units_already_done"] == 0  # its table had no stats yet
    assert ranks[0]["units_done"] + ranks[0]["units_already_done"] == 3
    assert tables_of(two) == tables_of(tmp_path / "one")
    assert temp_files(two) == []


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    world = make_shard_world(tmp_path_factory.mktemp("ddp"))
    assert main(pack_args(world, world / "shards")) == 0
    return world / "shards"


def _train_two(shards, run, kill: KillPoint | None = None):
    """8 steps on 2 ranks, checkpoints at 3 and 6, eval at 4 and 8."""
    args = train_args(shards, run, max_steps=8, ckpt_every=3, eval_every=4)
    proc = run_torchrun(2, args, kill=kill, kill_rank=1)
    if kill is None:
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        assert proc.returncode != 0 and "SIGKILL" in proc.stderr, proc.stderr[-3000:]
    return proc


def test_torchrun_train_two_ranks(shards, tmp_path):
    run = tmp_path / "run"
    _train_two(shards, run)
    assert [r["step"] for r in metrics_records(run) if "loss" in r] == list(range(1, 9))
    last = run / "step_00000008"
    assert {p.name for p in last.iterdir()} == {"state.pt", "rank_0.pt", "rank_1.pt"}
    assert (run / "latest").read_text().strip() == "step_00000008"
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in metrics_records(run) if "loss" in r)


@pytest.mark.slow
def test_torchrun_train_rank_killed_then_resumed_equals_uninterrupted(shards, tmp_path):
    """kill -9 of rank 1 mid-step 6 (after the step-3 checkpoint): torchrun stops the job; the
    same torchrun command resumes both ranks (model, optimizer, each rank's reader position
    and RNG) and ends where an uninterrupted 2-rank run ends."""
    clean, run = tmp_path / "clean", tmp_path / "run"
    _train_two(shards, clean)
    # grad_accum 2 -> two mdm_loss calls per step, plus 2 eval batches at step 4.
    _train_two(shards, run, kill=KillPoint("trimodal.mdm_core.trainer:mdm_loss", 2 * 5 + 2 + 1, "before"))
    assert (run / "latest").read_text().strip() == "step_00000003"
    _train_two(shards, run)
    assert curve(run) == curve(clean)
    a, b = final_weights(clean), final_weights(run)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert temp_files(run) == []
