"""The shrunken demo through every stage (seconds of compute), then a resumed second run."""

import json

from trimodal.cli import main
from trimodal.demo.pipeline import Demo, DemoConfig, shuffled_match_rate

STAGES = ["corpus", "text_tokenizer", "image_tokenizer", "audio_tokenizer", "tokenize", "pack", "train",
          "sample", "recon"]


def test_tiny_demo_runs_every_stage_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--tiny", "--out", str(out)]) == 0
    assert "report:" in capsys.readouterr().out
    for stage in STAGES:
        assert (out / "stages" / f"{stage}.json").exists(), stage
    page = (out / "report" / "index.html").read_text()
    for heading in ("Tokenizers", "Tokenization jobs", "Masked diffusion model", "Text to image",
                    "Text to speech", "Tokenizer reconstruction"):
        assert heading in page
    cfg = DemoConfig.tiny()
    assert len(list((out / "samples").glob("t2i_*.png"))) == cfg.n_t2i
    assert len(list((out / "samples").glob("t2s_*.wav"))) == cfg.n_t2s
    sample = json.loads((out / "stages" / "sample.json").read_text())["summary"]
    assert 0.0 <= sample["t2i"]["colour_match_rate"] <= 1.0
    assert 0.0 <= sample["t2i"]["shuffled_rate"] <= 1.0
    recon = json.loads((out / "stages" / "recon.json").read_text())["summary"]
    assert 0.0 <= recon["image"]["colour_retention"] <= 1.0
    assert "ignored their captions" in page and "keeps the dominant colour" in page
    jobs = json.loads((out / "stages" / "tokenize.json").read_text())["summary"]["reports"]
    assert set(jobs) == {"text", "image", "audio"}

    # A second run reuses every finished stage and still writes the report.
    demo = Demo(out, cfg)
    demo.run()
    assert [r.name for r in demo.runner.results] == STAGES
    assert all(r.reused for r in demo.runner.results)


def test_shuffled_match_rate_is_the_independence_baseline():
    # captions y y p r, images y p p p: P(y)P(y) + P(p)P(p) = 2/4*1/4 + 1/4*3/4 = 5/16
    assert shuffled_match_rate(["y", "y", "p", "r"], ["y", "p", "p", None]) == 2 * 1 / 16 + 1 * 2 / 16
    assert shuffled_match_rate(["y", "y", "p", "r"], ["y", "p", "p", "p"]) == 5 / 16
    assert shuffled_match_rate([], []) == 0.0
