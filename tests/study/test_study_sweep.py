"""Sweep runner: expansion, resume of an interrupted sweep, rank split, failures, the table."""

import json

import pyarrow.parquet as pq
import pytest

from study_helpers import FakeTrain, fake_sweep
from trimodal.config import ConfigError, load, save
from trimodal.study.sweep import Block, SweepConfig, collect, expand, result_path, run_sweep


def test_expand_names_are_stable_and_joint_axes_flatten():
    cfg = fake_sweep()
    points = expand(cfg)
    assert len(points) == 9 + 2 + 24
    assert [p.name for p in points] == [p.name for p in expand(fake_sweep())]
    mix = [p for p in points if p.block == "mix"][1]
    assert mix.axes == {"mix": "2:1:1"}
    assert mix.settings["mix.text"] == 2 and mix.settings["mix.audio_text"] == 1
    # Changing one axis value keeps the names of the untouched points.
    cfg.blocks[0].axes["tokens"] = [2.5e4, 1e5, 8e5]
    again = {p.name for p in expand(cfg)}
    kept = [p.name for p in points if p.block == "scaling" and p.settings["tokens"] != 4e5]
    assert set(kept) <= again


def test_interrupted_sweep_restarts_with_only_missing_points(tmp_path):
    points = expand(fake_sweep())[:9]
    first = FakeTrain(interrupt_after=4)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(points, tmp_path, first, rank=0, world_size=1, progress=False)
    assert len(first.calls) == 4
    done = {p.name for p in points if result_path(tmp_path, p).exists()}
    assert done == set(first.calls)
    assert not list(tmp_path.rglob("*.tmp*"))  # results are written atomically
    second = FakeTrain()
    summary = run_sweep(points, tmp_path, second, rank=0, world_size=1, progress=False)
    assert set(second.calls) == {p.name for p in points} - done
    assert sorted(summary.done_before) == sorted(done)
    third = FakeTrain()
    run_sweep(points, tmp_path, third, rank=0, world_size=1, progress=False)
    assert third.calls == []


def test_ranks_split_points_round_robin(tmp_path):
    points = expand(fake_sweep())
    calls = []
    for rank in range(3):
        fake = FakeTrain()
        summary = run_sweep(points, tmp_path, fake, rank=rank, world_size=3, progress=False)
        assert fake.calls == [p.name for i, p in enumerate(points) if i % 3 == rank]
        assert summary.other_ranks == len(points) - len(fake.calls)
        calls += fake.calls
    assert sorted(calls) == sorted(p.name for p in points)
    with pytest.raises(ConfigError):
        run_sweep(points, tmp_path, FakeTrain(), rank=3, world_size=3)


def test_env_rank_world_size(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    points = expand(fake_sweep())[:6]
    fake = FakeTrain()
    run_sweep(points, tmp_path, fake, progress=False)
    assert fake.calls == [points[1].name, points[3].name, points[5].name]


def test_failing_point_is_recorded_and_retried(tmp_path):
    points = expand(fake_sweep())[:3]
    fake = FakeTrain(fail_on={points[1].name})
    summary = run_sweep(points, tmp_path, fake, rank=0, world_size=1, progress=False)
    assert summary.failed == [points[1].name] and len(summary.ran) == 2
    assert "boom" in (result_path(tmp_path, points[1]).parent / "error.txt").read_text()
    retry = FakeTrain()
    run_sweep(points, tmp_path, retry, rank=0, world_size=1, progress=False)
    assert retry.calls == [points[1].name]
    assert not (result_path(tmp_path, points[1]).parent / "error.txt").exists()


def test_collect_writes_parquet_and_json(tmp_path):
    points = expand(fake_sweep())
    run_sweep(points[:10], tmp_path, FakeTrain(), rank=0, world_size=1, progress=False)
    rows, curves = collect(points, tmp_path)
    assert len(rows) == 10 and len(curves) == 40
    table = pq.read_table(tmp_path / "table.parquet").to_pylist()
    assert [r["name"] for r in table] == [p.name for p in points[:10]]
    row = table[0]
    assert row["C"] == pytest.approx(6 * row["N"] * row["D"])
    assert {"eval/elbo/text", "eval/elbo/image", "eval/elbo/audio", "model.d_model", "tokens"} <= set(row)
    assert json.loads((tmp_path / "table.json").read_text())["rows"][0]["name"] == points[0].name
    assert pq.read_table(tmp_path / "curves.parquet").num_rows == 40


def test_sweep_config_round_trips_through_yaml(tmp_path):
    cfg = fake_sweep()
    save(cfg, str(tmp_path / "s.yaml"))
    back = load(tmp_path / "s.yaml", SweepConfig)
    assert [p.name for p in expand(back)] == [p.name for p in expand(cfg)]
    with pytest.raises(ConfigError, match="block name"):
        Block("a-b", {"x": [1]})
    with pytest.raises(ConfigError, match="unknown study key"):
        SweepConfig(defaults={"token": 1})
