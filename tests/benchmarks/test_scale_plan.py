"""docs/scale.md is computed from the benchmark JSON; these tests keep the arithmetic honest
and the page in step with the JSON."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from trimodal.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _load_script():
    spec = importlib.util.spec_from_file_location("scale_plan_script", ROOT / "benchmarks" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


scale = _load_script()


def _measured(**over) -> "scale.Measured":
    base = dict(image_device="cpu", image_bench_size=64, image_bench_factor=8, image_bench_channels=64,
                image_bare_per_s=10.0, image_job_ratio=0.5, image_cores=2, audio_device="cpu",
                audio_bench_arch="tiny", audio_job_seconds_per_s=2.0, audio_cores=2,
                shard_bytes_per_token=5.0, reader_tokens_per_s={"reader_1_workers": 1e6},
                packer_tokens_per_s=1e7)
    base.update(over)
    return scale.Measured(**base)


FLOPS = {"image_bench": 1e9, "image_target": 4e9, "audio_bench_per_s": 1e9, "audio_target_per_s": 3e9,
         "dac_frames_per_s": 50.0}


def test_plan_arithmetic_by_hand():
    a = scale.Assumptions(total_tokens=1e6, model_params=1e6, seq_len=100, share_text=0.5,
                          share_image_text=0.3, share_audio_text=0.2, image_size=32, image_factor=8,
                          caption_tokens=10, pair_specials=5, audio_n_q=2, clip_seconds=0.5,
                          transcript_tokens=10, epochs_image_text=2.0, gpu_peak_flops=1e12,
                          train_mfu=0.5, tokenizer_mfu=0.5, n_gpus=2, shard_bytes=1e4)
    p = scale.plan(a, _measured(), FLOPS)
    assert p["tokens_per_image_pair"] == 16 + 10 + 5
    assert p["audio_tokens_per_clip"] == 25 * 2 and p["tokens_per_audio_pair"] == 50 + 10 + 5
    seqs = {"text": 5e5 / 100, "image_text": 3e5 / 31, "audio_text": 2e5 / 65}
    assert p["sequences"] == pytest.approx(seqs)
    positions = sum(seqs.values()) * 100
    assert p["positions"] == pytest.approx(positions)
    assert p["pad_fraction"] == pytest.approx(1 - 1e6 / positions)
    assert p["images"] == pytest.approx(seqs["image_text"] / 2)  # repeated twice: half unique
    stored = (seqs["text"] + seqs["image_text"] / 2 + seqs["audio_text"]) * 100
    assert p["storage_bytes"] == pytest.approx(stored * 5.0)
    assert p["shards"] == math.ceil(stored * 5.0 / 1e4)
    # Image job on CPU: 10 img/s * 0.5 * 1 GFLOP = 5 GFLOP/s effective, two cores.
    assert p["image_cpu_core_hours"] == pytest.approx(p["images"] * 4e9 / 5e9 / 3600 * 2)
    assert p["image_gpu_hours"] == pytest.approx(p["images"] * 4e9 / 0.5e12 / 3600)
    assert p["audio_hours"] == pytest.approx(seqs["audio_text"] * 0.5 / 3600)
    assert p["train_gpu_hours"] == pytest.approx(6 * 1e6 * positions / 0.5e12 / 3600)
    assert p["loader_tokens_per_s_per_gpu"] == pytest.approx(0.5e12 / 6e6)
    assert p["reader_headroom"] == pytest.approx(1e6 / (0.5e12 / 6e6))


def test_pairs_that_do_not_fit_are_refused():
    a = scale.Assumptions(seq_len=128)  # a 256-token image grid cannot fit
    with pytest.raises(ConfigError, match="must fit seq_len"):
        scale.plan(a, _measured(), FLOPS)


def test_assumption_validation_and_set_parsing():
    with pytest.raises(ConfigError, match="sum to 1"):
        scale.Assumptions(share_text=0.9)
    with pytest.raises(ConfigError, match="name=value"):
        scale._parse_sets(["no_such=1"])
    assert scale._parse_sets(["seq_len=4096", "model_params=7e9"]) == {"seq_len": 4096, "model_params": 7e9}


def test_counted_encoder_flops_follow_pixels_and_audio_length():
    small = scale.image_encoder_flops(64, 8, 32)
    big = scale.image_encoder_flops(128, 8, 32)
    assert big == pytest.approx(4 * small, rel=0.02)  # convolutions: cost per pixel
    wide = scale.image_encoder_flops(64, 8, 64)
    assert 3.0 < wide / small < 4.1  # channels enter squared except the first conv
    tiny = scale.audio_encoder_flops_per_second(scale.TINY_PRESET)
    full = scale.audio_encoder_flops_per_second(scale.DAC16K_PRESET)
    assert full > 10 * tiny > 0


def test_docs_scale_md_matches_the_benchmark_json():
    text, data = scale.build()
    assert data["plan"]["positions"] > 6.4e12
    current = (ROOT / "docs" / "scale.md").read_text()
    assert current == text, "docs/scale.md is out of date: run python benchmarks/scale.py"
