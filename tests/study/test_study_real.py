"""One tiny real training point through the runner, the data pools, and the CLI."""

import json
import math

import numpy as np
import pytest

from trimodal.cli import main
from trimodal.study.data import MixedBatches, StudyDataConfig, audio_codes, build_study_data, image_codes
from trimodal.study.presets import preset
from trimodal.study.sweep import Block, StudyTrainer, SweepConfig, expand, result_path, run_sweep

TINY_DATA = StudyDataConfig(seq_len=32, text_vocab=64, image_grid=3, max_audio_frames=16, n_text_docs=60,
                            n_images=12, n_audio=8, n_eval=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_study_data(tmp_path_factory.mktemp("study_data"), TINY_DATA)


def test_pools_follow_the_layout(data):
    v = data.vocab
    assert set(data.train) == {"text", "image_text", "audio_text"}
    for task, rows in data.train.items():
        assert rows.ndim == 2 and rows.shape[1] == 32 and rows.min() >= 0 and rows.max() < v.size
    assert (data.train["image_text"][:, 0] == v.task("image_text")).all()
    assert (data.train["image_text"][:, 1] == v.bos("image")).all()
    assert (data.train["audio_text"][:, 1] == v.bos("audio")).all()
    assert data.eval_rows().shape == (6, 32)


def test_data_cache_is_reused(tmp_path, monkeypatch):
    from trimodal.tokenizers.text import TextTokenizer

    first = build_study_data(tmp_path, TINY_DATA)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached pools should have been loaded")

    monkeypatch.setattr(TextTokenizer, "train", no_training)
    second = build_study_data(tmp_path, TINY_DATA)
    assert second.vocab.hash == first.vocab.hash
    np.testing.assert_array_equal(second.train["text"], first.train["text"])


def test_stand_in_quantizers():
    from PIL import Image

    red = Image.new("RGB", (16, 16), (250, 0, 0))
    codes = image_codes(red, 2)
    assert codes.tolist() == [48] * 4  # r level 3, g 0, b 0
    sr = 16000
    t = np.arange(sr) / sr
    low, high = (0.5 * np.sin(2 * np.pi * f * t) for f in (150.0, 1500.0))
    cl, ch = audio_codes(low, sr, 1024, 8), audio_codes(high, sr, 1024, 8)
    assert len(cl) == 8 and (cl % 8 < ch % 8).all()  # higher pitch -> higher pitch bin
    assert (audio_codes(0.01 * low, sr, 1024, 8) // 8 < cl // 8).all()  # quieter -> lower energy bin


def test_mixed_batches_follow_weights_and_resume():
    pools = {"a": np.zeros((5, 4), dtype=np.int64), "b": np.ones((5, 4), dtype=np.int64)}
    mb = MixedBatches(pools, {"a": 3.0, "b": 1.0}, batch_size=400, seed=1)
    it = iter(mb)
    frac_b = float(next(it)["tokens"][:, 0].float().mean())
    assert 0.18 < frac_b < 0.32
    state = mb.state_dict()
    nxt = next(it)["tokens"]
    mb2 = MixedBatches(pools, {"a": 3.0, "b": 1.0}, batch_size=400, seed=1)
    mb2.load_state_dict(state)
    assert (next(iter(mb2))["tokens"] == nxt).all()
    with pytest.raises(ValueError):
        MixedBatches(pools, {"c": 1.0}, 4)


def test_one_real_point_trains_and_resumes(tmp_path, data):
    cfg = SweepConfig(base=preset("tiny").base, defaults={"tokens": 256},
                      blocks=[Block("one", {"model.d_model": [16]}, fixed={"model.n_layers": 1})], eval_points=2)
    cfg.base["device"] = "cpu"
    points = expand(cfg)
    trainer = StudyTrainer(data, cfg.base, eval_points=2, eval_repeats=1)
    summary = run_sweep(points, tmp_path, trainer, rank=0, world_size=1, progress=False)
    assert summary.ran == [points[0].name] and not summary.failed
    res = json.loads(result_path(tmp_path, points[0]).read_text())
    assert res["N"] > 0 and res["D"] == res["steps"] * res["batch"] * 32
    assert len(res["curve"]) == 2 and res["curve"][-1]["step"] == res["steps"]
    for m in ("eval/elbo", "eval/elbo/text", "eval/elbo/image", "eval/elbo/audio"):
        assert math.isfinite(res["final"][m]) and res["final"][m] > 0
    run_dir = result_path(tmp_path, points[0]).parent / "run"
    assert (run_dir / "metrics.jsonl").exists() and not list(run_dir.glob("step_*"))  # checkpoints dropped
    again = run_sweep(points, tmp_path, trainer, rank=0, world_size=1, progress=False)
    assert again.ran == [] and again.done_before == [points[0].name]


def test_cli_points_and_bad_config(tmp_path, capsys):
    assert main(["study", "points", "--preset", "tiny", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(expand(preset("tiny"))) and all(line.startswith("todo") for line in lines)
    bad = tmp_path / "bad.yaml"
    bad.write_text("blocks: [{name: x, axes: {a: [1]}}]\nfoo: 1\n")
    assert main(["study", "run", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "foo" in capsys.readouterr().err
