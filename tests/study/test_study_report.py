"""The report from a shrunken sweep (fake train): files, fitted numbers, critical batches."""

import json

import pytest

from study_helpers import LAW, FakeTrain, fake_sweep
from trimodal.study.sweep import collect, expand, run_study


def test_report_from_shrunken_sweep(tmp_path):
    cfg = fake_sweep(bootstrap=10)
    status = run_study(cfg, tmp_path / "sweep", train_fn=FakeTrain(), report_dir=tmp_path / "report",
                       command="trimodal study run --preset fake", progress=False)
    assert status["done"] == status["points"] == 35 and status["failed"] == []
    root = tmp_path / "report"
    html = (root / "index.html").read_text()
    md = (root / "report.md").read_text()
    assert "SMALL-SCALE" in html and "SMALL-SCALE" in md
    assert "trimodal study run --preset fake" in md
    pngs = sorted(p.name for p in (root / "assets").glob("*.png"))
    assert len(pngs) >= 3 * 2 + 3  # per block loss + curves, scaling, frontier, batch
    for name in pngs:
        assert f"assets/{name}" in md and f"assets/{name}" in html
    analysis = json.loads((root / "analysis.json").read_text())
    s = analysis["scaling"]
    assert s["alpha"] == pytest.approx(LAW.alpha, abs=0.02)
    assert s["beta"] == pytest.approx(LAW.beta, abs=0.02)
    assert s["frontier_exponent"] == pytest.approx(LAW.frontier_exponent, rel=0.05)
    lo, hi = s["intervals"]["alpha"]
    assert lo <= s["alpha"] <= hi
    groups = analysis["critical_batch"]["groups"]
    assert len(groups) == 4
    # Fake law: critical batch 32 at D=1e5 and 128 at D=1.6e6 for every size.
    assert sorted({g["critical_batch"] for g in groups}) == [32, 128]
    assert all(r["ratio"] == pytest.approx(1.0, rel=0.3) for r in analysis["critical_batch"]["size_ratios"])
    assert all(0.3 < h["exponent"] < 0.7 for h in analysis["critical_batch"]["horizon_exponents"])


def test_incomplete_sweep_writes_no_report_until_done(tmp_path):
    cfg = fake_sweep(bootstrap=0)
    status = run_study(cfg, tmp_path, train_fn=FakeTrain(interrupt_after=100), rank=0, world_size=2,
                       progress=False)
    assert status["report"] is None and status["done"] < status["points"]
    status = run_study(cfg, tmp_path, train_fn=FakeTrain(), rank=1, world_size=2, progress=False)
    assert status["report"] is None  # only rank 0 writes it
    assert not (tmp_path / "report").exists()
    rows, _ = collect(expand(cfg), tmp_path)
    assert len(rows) == status["done"]
