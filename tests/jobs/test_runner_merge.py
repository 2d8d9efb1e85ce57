"""The runner's worker split and merge: any worker count and message size gives the same rows
in the same order, empty and one-sample units included; broken worker streams are caught."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from jobs_toy import ToyEncoder, image_bytes
from test_runner import tables

import trimodal.jobs.runner as runner
from trimodal.corpora.samples import ImageText, SkipSample, WorkUnit
from trimodal.jobs.runner import (
    JobConfig, UnitsDataset, _in_order, _Item, _torch_threads, encoder_threads, read_part, run_job,
)


class ListCorpus:
    """Units of given sizes; every 4th sample is a reader skip. No `read_part`: the runner's
    fallback (read everything, keep one's part) is what is exercised."""

    name = "list"

    def __init__(self, sizes: list[int]):
        self.sizes = sizes

    def units(self) -> list[WorkUnit]:
        return [WorkUnit(f"u{i}", self.name, {"n": n, "u": i}) for i, n in enumerate(self.sizes)]

    def read(self, unit: WorkUnit):
        for j in range(unit.payload["n"]):
            key = f"{unit.id}-{j}"
            if j % 4 == 3:
                yield SkipSample(key, "reader_says_no")
            else:
                yield ImageText(key, image_bytes(unit.payload["u"] * 50 + j), f"cap {key}", self.name)


SIZES = [0, 1, 5, 2, 0, 7]


def test_read_part_fallback_partitions_read():
    corpus = ListCorpus(SIZES)
    for unit in corpus.units():
        whole = [s.key for s in corpus.read(unit)]
        parts = [[s.key for s in read_part(corpus, unit, p, 3)] for p in range(3)]
        assert sorted(k for p in parts for k in p) == sorted(whole)
        assert all(parts[p] == whole[p::3] for p in range(3))


def _dataset_messages(corpus, n_workers: int, per_message: int) -> list[list[_Item]]:
    """What N DataLoader workers would send, in the loader's round-robin order, in-process."""
    streams = []
    for w in range(n_workers):
        ds = UnitsDataset(corpus, corpus.units(), ToyEncoder(), per_message)
        info = type("Info", (), {"id": w, "num_workers": n_workers})()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(runner, "get_worker_info", lambda: info)
            streams.append(list(iter(ds)))
    out, k = [], 0
    while any(k < len(s) for s in streams):
        out += [s[k] for s in streams if k < len(s)]
        k += 1
    return out


@pytest.mark.parametrize("n_workers,per_message", [(1, 1), (2, 1), (3, 2), (4, 5), (2, 100)])
def test_merge_restores_read_order(n_workers: int, per_message: int):
    corpus = ListCorpus(SIZES)
    expected = []
    for u, unit in enumerate(corpus.units()):
        expected += [(u, s.key) for s in corpus.read(unit)] + [(u, "<end>")]
    merged = _in_order(iter(_dataset_messages(corpus, n_workers, per_message)), n_workers, len(SIZES))
    got = [(it.unit, "<end>" if it.end_of_unit else it.key) for it in merged]
    assert got == expected


def test_merge_catches_missing_and_misplaced_items():
    corpus = ListCorpus([3, 2])
    messages = _dataset_messages(corpus, 2, 1)
    with pytest.raises(RuntimeError, match="stopped early"):
        list(_in_order(iter(messages[:-2]), 2, 2))
    bad = [[_Item(index=1, unit=1, key="x")]]  # worker 1's first item must be unit 0, position 1
    with pytest.raises(RuntimeError, match="out of step"):
        list(_in_order(iter(bad + messages), 2, 2))


def test_job_same_tables_for_any_worker_count(tmp_path: Path):
    corpus = ListCorpus(SIZES)
    outs = {}
    for workers, per_message in ((0, 0), (3, 0), (2, 1)):
        out = tmp_path / f"w{workers}-{per_message}"
        report = run_job(corpus, ToyEncoder(), JobConfig(
            out=str(out), workers=workers, batch_size=3, items_per_message=per_message, progress=False))
        assert report["units_done"] == len(SIZES)
        assert report["skipped"] == {"reader_says_no": 2}
        outs[workers, per_message] = tables(str(out))
    first = outs[0, 0]
    assert sum(len(rows) for rows in first.values()) == sum(SIZES) - 2
    assert all(t == first for t in outs.values())


def test_encoder_threads_default_and_override():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert encoder_threads(JobConfig(out="x", workers=1), cpu, cores=8, current=8) == 8  # none held back
    assert encoder_threads(JobConfig(out="x", workers=2), cpu, cores=4, current=16) == 4  # capped
    assert encoder_threads(JobConfig(out="x", workers=2), cpu, cores=16, current=6) == 6  # user's choice
    assert encoder_threads(JobConfig(out="x", workers=1, threads=3), cpu, cores=8) == 3
    assert encoder_threads(JobConfig(out="x"), cuda, cores=8) is None
    with pytest.raises(Exception, match="threads"):
        JobConfig(out="x", threads=-1)
    before = torch.get_num_threads()
    with _torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
