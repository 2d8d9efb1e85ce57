"""The job runner: rank split, skips with exact reasons, resume after a crash or kill -9,
identical output for any worker count, fsspec output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import fsspec
import pytest
from jobs_toy import ToyEncoder, add_tar, image_bytes, make_folder

from trimodal.config import ConfigError
from trimodal.corpora.image import ImageCorpusOptions, open_image_corpus
from trimodal.jobs.protocol import WorkUnit
from trimodal.jobs.runner import (
    JobConfig, format_summary, merge_reports, resolve_rank, run_job, split_units,
)
from trimodal.packing.table import read_table


def folder_corpus(path: Path, unit_size: int = 4):
    return open_image_corpus(str(path), "folder", ImageCorpusOptions(name="c", unit_size=unit_size))


def tables(out: str) -> dict[str, list[tuple]]:
    """unit id -> rows as comparable tuples."""
    fs, root = fsspec.core.url_to_fs(out)
    result = {}
    for p in sorted(fs.glob(f"{root}/tables/*.parquet")):
        rows = read_table(fs.unstrip_protocol(p))
        result[p.rsplit("/", 1)[-1]] = [
            (r.key, r.source, r.task, r.text_ids.tolist(), r.ids.tolist(), tuple(r.shape),
             r.tokenizer_hash) for r in rows]
    return result


def job(out, **kw) -> JobConfig:
    kw.setdefault("batch_size", 3)
    kw.setdefault("workers", 0)
    return JobConfig(out=str(out), progress=False, **kw)


def test_resolve_rank_sources():
    assert resolve_rank(env={}) == (0, 1)
    assert resolve_rank(env={"RANK": "2", "WORLD_SIZE": "4"}) == (2, 4)
    assert resolve_rank(env={"SLURM_PROCID": "1", "SLURM_NTASKS": "3"}) == (1, 3)
    assert resolve_rank(env={"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "5"}) == (0, 2)
    assert resolve_rank(1, 2, env={"RANK": "0", "WORLD_SIZE": "8"}) == (1, 2)
    with pytest.raises(ConfigError, match="out of range"):
        resolve_rank(env={"RANK": "3", "WORLD_SIZE": "3"})
    with pytest.raises(ConfigError, match="not an integer"):
        resolve_rank(env={"RANK": "x"})


def test_split_units_partition():
    units = [WorkUnit(f"u{i}", "s") for i in range(11)]
    parts = [split_units(units, r, 3) for r in range(3)]
    ids = [u.id for p in parts for u in p]
    assert sorted(ids) == sorted(u.id for u in units) and len(ids) == len(set(ids))


def test_two_ranks_cover_all_without_overlap(tmp_path: Path):
    keys = make_folder(tmp_path / "corpus")
    corpus = folder_corpus(tmp_path / "corpus")
    reports = [run_job(corpus, ToyEncoder(), job(tmp_path / "out", rank=r, world_size=2))
               for r in range(2)]
    mine = [{p.name for p in (tmp_path / "out" / "tables").glob("*.parquet")}]
    # Each rank wrote only its own units; together all of them, each once.
    assigned = [[u.id for u in split_units(corpus.units(), r, 2)] for r in range(2)]
    assert not set(assigned[0]) & set(assigned[1])
    assert mine[0] == {f"{u}.parquet" for u in assigned[0] + assigned[1]}
    assert [r["units_done"] for r in reports] == [len(a) for a in assigned]
    got = [row[0] for rows in tables(str(tmp_path / "out")).values() for row in rows]
    assert sorted(got) == sorted(keys) and len(got) == len(set(got))
    merged = json.loads((tmp_path / "out" / "report.json").read_text())
    assert merged["samples_ok"] == len(keys) and merged["units_with_output"] == len(corpus.units())
    assert [r["rank"] for r in merged["ranks"]] == [0, 1]
    assert "samples ok" in format_summary(merged)


def test_merged_report_survives_ranks_finishing_together(tmp_path: Path, monkeypatch):
    """Rank 1 finishes between rank 0's merge and rank 0's write: the report must still end
    up complete (before the fix, rank 0's stale merge landed on top of rank 1's)."""
    import trimodal.jobs.runner as runner

    make_folder(tmp_path / "corpus")
    corpus = folder_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    run_job(corpus, ToyEncoder(), job(out, rank=1, world_size=2))
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    mine = {f"{u.id}.{ext}" for u in split_units(corpus.units(), 1, 2) for ext in ("parquet", "stats.json")}
    for name in mine:  # rank 1 "has not finished yet"
        (out / "tables" / name).rename(hidden / name)
    (out / "report_rank1.json").rename(hidden / "report_rank1.json")

    real_merge, calls = runner.merge_reports, []

    def merge_then_rank1_finishes(*args, **kwargs):
        merged = real_merge(*args, **kwargs)
        calls.append(merged["units_with_output"])
        if len(calls) == 1:  # rank 1 writes its files and its own complete report now
            for name in mine:
                (hidden / name).rename(out / "tables" / name)
            (hidden / "report_rank1.json").rename(out / "report_rank1.json")
            complete = real_merge(*args, **kwargs)
            (out / "report.json").write_text(json.dumps(complete))
        return merged

    monkeypatch.setattr(runner, "merge_reports", merge_then_rank1_finishes)
    run_job(corpus, ToyEncoder(), job(out, rank=0, world_size=2))
    report = json.loads((out / "report.json").read_text())
    assert calls[0] < len(corpus.units())  # the race did happen
    assert report["units_with_output"] == len(corpus.units())
    assert [r["rank"] for r in report["ranks"]] == [0, 1]


def make_bad_corpus(root: Path) -> dict[str, int]:
    """Folder + tar with every kind of bad input; returns the expected skip counts."""
    folder = root / "folder"
    folder.mkdir(parents=True)
    for i in range(4):
        (folder / f"ok{i}.jpg").write_bytes(image_bytes(i))
        (folder / f"ok{i}.txt").write_text(f"ok {i}")
    good = image_bytes(99)
    (folder / "trunc.jpg").write_bytes(good[: len(good) // 2])
    (folder / "trunc.txt").write_text("t")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "zero.txt").write_text("z")
    (folder / "junk.jpg").write_bytes(b"this is not an image at all" * 10)
    (folder / "junk.txt").write_text("j")
    (folder / "nocap.jpg").write_bytes(image_bytes(5))
    (folder / "badutf.jpg").write_bytes(image_bytes(6))
    (folder / "badutf.txt").write_bytes(b"\xc3\x28 bad")
    tar_dir = root / "tars"
    tar_dir.mkdir()
    add_tar(tar_dir / "s0.tar", [
        ("a.jpg", image_bytes(10)), ("a.txt", b"a"),
        ("../escape.jpg", image_bytes(11)), ("../escape.txt", b"e"),
        ("b.jpg", good[: len(good) // 2]), ("b.txt", b"b"),
        ("c.jpg", b"GIF89a nonsense"), ("c.txt", b"c"),
        ("d.png", image_bytes(12, "PNG")), ("d.txt", b"d"),
    ])
    return {"folder_ok": 4, "tar_ok": 2}


def test_bad_inputs_exact_skip_counts(tmp_path: Path):
    make_bad_corpus(tmp_path)
    out = tmp_path / "out"
    run_job(folder_corpus(tmp_path / "folder", unit_size=3), ToyEncoder(), job(out, workers=2))
    report = json.loads((out / "report.json").read_text())
    assert report["samples_ok"] == 4
    assert report["skipped"] == {"bad_caption_encoding": 1, "empty_image": 1, "missing_caption": 1,
                                 "truncated_image": 1, "undecodable_image": 1}
    keys = Counter()
    for p in (out / "tables").glob("*.stats.json"):
        for reason, entry in json.loads(p.read_text())["skipped"].items():
            keys.update({(reason, k): 1 for k in entry["keys"]})
    assert set(keys) == {("bad_caption_encoding", "badutf"), ("empty_image", "zero"),
                         ("missing_caption", "nocap"), ("truncated_image", "trunc"),
                         ("undecodable_image", "junk")}

    wds = open_image_corpus(str(tmp_path / "tars"), "wds")
    run_job(wds, ToyEncoder(), job(tmp_path / "out_wds", workers=2))
    report = json.loads((tmp_path / "out_wds" / "report.json").read_text())
    assert report["samples_ok"] == 2
    assert report["skipped"] == {"truncated_image": 1, "undecodable_image": 1,
                                 "unsafe_member_name": 1}
    assert [r[0] for r in tables(str(tmp_path / "out_wds"))["tars__s0.parquet"]] == ["a", "d"]


def test_same_output_with_0_and_2_workers(tmp_path: Path):
    make_folder(tmp_path / "corpus", n_dirs=2, per_dir=9)
    corpus = folder_corpus(tmp_path / "corpus", unit_size=5)
    run_job(corpus, ToyEncoder(), job(tmp_path / "w0", workers=0, batch_size=4))
    run_job(corpus, ToyEncoder(), job(tmp_path / "w2", workers=2, batch_size=2))
    a, b = tables(str(tmp_path / "w0")), tables(str(tmp_path / "w2"))
    assert a == b and sum(len(v) for v in a.values()) == 18


def test_resume_after_crash_matches_uninterrupted_run(tmp_path: Path):
    make_folder(tmp_path / "corpus")
    # 3 dirs of 7 -> units of 4 and 3 samples -> 2 and 1 batches of <= 3
    corpus = folder_corpus(tmp_path / "corpus", unit_size=4)
    run_job(corpus, ToyEncoder(), job(tmp_path / "clean"))
    with pytest.raises(RuntimeError, match="simulated crash"):  # in the 2nd batch of unit 3
        run_job(corpus, ToyEncoder(fail_after_batches=4), job(tmp_path / "resumed"))
    done = sorted(p.name for p in (tmp_path / "resumed" / "tables").glob("*.stats.json"))
    assert len(done) == 2  # two whole units, the third was in flight
    assert len(list((tmp_path / "resumed" / "tables").glob("*.parquet"))) == 2
    report = run_job(corpus, ToyEncoder(), job(tmp_path / "resumed"))
    assert report["units_already_done"] == 2 and report["units_done"] == len(corpus.units()) - 2
    assert tables(str(tmp_path / "resumed")) == tables(str(tmp_path / "clean"))
    merged = json.loads((tmp_path / "resumed" / "report.json").read_text())
    assert merged["samples_ok"] == 21


def test_kill_9_then_rerun_matches_uninterrupted_run(tmp_path: Path):
    make_folder(tmp_path / "corpus", n_dirs=3, per_dir=8)  # 6 units of 4, 2 batches each
    corpus = folder_corpus(tmp_path / "corpus", unit_size=4)
    run_job(corpus, ToyEncoder(), job(tmp_path / "clean", batch_size=2))
    out = tmp_path / "killed"
    script = Path(__file__).parent / "kill_job_script.py"
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "corpus"), str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((out / "tables").glob("*.stats.json"))) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    finished = len(list((out / "tables").glob("*.stats.json")))
    assert 2 <= finished < len(corpus.units())
    report = run_job(corpus, ToyEncoder(), job(out, batch_size=2))
    assert report["units_already_done"] == finished
    assert tables(str(out)) == tables(str(tmp_path / "clean"))
    assert not list((out / "tables").glob("*.tmp"))


def test_memory_filesystem_output(tmp_path: Path):
    make_folder(tmp_path / "corpus", n_dirs=1, per_dir=5)
    out = "memory://jobtest/out"
    try:
        run_job(folder_corpus(tmp_path / "corpus"), ToyEncoder(), job(out))
        fs = fsspec.filesystem("memory")
        assert fs.exists("/jobtest/out/report.json")
        assert sum(len(v) for v in tables(out).values()) == 5
        assert merge_reports(out)["samples_ok"] == 5
    finally:
        fsspec.filesystem("memory").rm("/jobtest", recursive=True)


def test_rerun_with_other_tokenizer_is_refused(tmp_path: Path):
    make_folder(tmp_path / "corpus", n_dirs=1, per_dir=2)
    corpus = folder_corpus(tmp_path / "corpus")
    run_job(corpus, ToyEncoder(), job(tmp_path / "out"))
    other = ToyEncoder()
    other.tokenizer_hash = "another"
    with pytest.raises(ConfigError, match="new --out"):
        run_job(corpus, other, job(tmp_path / "out"))


def test_encoder_that_reorders_rows_is_caught(tmp_path: Path):
    make_folder(tmp_path / "corpus", n_dirs=1, per_dir=4)

    class Reversing(ToyEncoder):
        def encode(self, prepared, device):
            return list(reversed(super().encode(prepared, device)))

    with pytest.raises(RuntimeError, match="keep input order"):
        run_job(folder_corpus(tmp_path / "corpus"), Reversing(), job(tmp_path / "out"))
