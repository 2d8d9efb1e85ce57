"""Named sweeps. `small`: the committed CPU report (under 20 min on 2 idle cores); `tiny`: a
shrunken copy for tests and quick checks (about a minute). Both use the stand-in tokenizers of
`study.data`; a YAML file with the `SweepConfig` fields replaces them at scale.
"""

from __future__ import annotations

import copy

from trimodal.config import ConfigError
from trimodal.study.data import StudyDataConfig
from trimodal.study.sweep import Block, SweepConfig

_EQUAL_MIX = {"text": 1.0, "image_text": 1.0, "audio_text": 1.0}


def _base(batch: int, base_horizon: int) -> dict:
    return {
        "model": {"n_heads": 2, "mlp_ratio": 4.0},
        "masking": {"schedule": "linear"},
        "optim": {"lr": 3e-3, "weight_decay": 0.1, "betas": [0.9, 0.95], "lr_schedule": "cosine"},
        # The reference hyperparameters above are tuned at `base_batch` sequences per step and
        # a `base_horizon_tokens` run; the SDE rule moves them elsewhere when enabled.
        "sde": {"enabled": False, "base_batch": batch, "base_horizon_tokens": base_horizon, "gamma": 0.44},
        "data": {"batch_size": batch, "num_workers": 0},
        "log_every": 10,
        "bf16": True,
        "device": "auto",
    }


def small() -> SweepConfig:
    """~60 points on d_model 32-128 models, L = 64, 25k-200k tokens each."""
    budget = 98_304  # 96 steps x 16 sequences x 64 tokens
    mid = {"model.d_model": 64, "model.n_layers": 2}
    return SweepConfig(
        name="small",
        base=_base(16, 40_960),
        defaults={"tokens": budget, "warmup_frac": 0.1, **{f"mix.{k}": v for k, v in _EQUAL_MIX.items()}},
        data=StudyDataConfig(seq_len=64, n_text_docs=6000, n_images=1500, n_audio=600, n_eval=48),
        blocks=[
            Block("scaling", {"model": [{"d_model": d, "n_layers": 2} for d in (32, 48, 64, 96, 128)],
                              "tokens": [24_576, 49_152, 98_304, 196_608]},
                  note="model width x token budget: the points of the L(N, D) fit"),
            Block("depth", {"model.n_layers": [1, 2, 4]}, fixed={"model.d_model": 64},
                  note="depth at width 64"),
            Block("schedule", {"masking.schedule": ["linear", "cosine", "poly"]},
                  fixed={**mid, "masking.exponent": 2.0}, note="masking schedule (poly: beta_t = t^2)"),
            Block("poly_exponent", {"masking.exponent": [0.5, 2.0, 3.0]},
                  fixed={**mid, "masking.schedule": "poly"}, note="exponent k of beta_t = t^k"),
            Block("anti_masking", {"masking.anti_masking": [False, True], "masking.schedule": ["linear", "poly"]},
                  fixed=mid, note="complementary masks at equal compute (half the unique sequences)"),
            Block("mix", {"mix": [dict(_EQUAL_MIX), {"text": 2.0, "image_text": 1.0, "audio_text": 1.0},
                                  {"text": 1.0, "image_text": 2.0, "audio_text": 1.0},
                                  {"text": 1.0, "image_text": 1.0, "audio_text": 2.0}]},
                  fixed=mid, note="mixing weights text : image-text : audio-text (rows drawn by weight)"),
            Block("batch", {"model": [{"d_model": 32, "n_layers": 2}, {"d_model": 64, "n_layers": 2}],
                            "tokens": [40_960, 163_840], "data.batch_size": [8, 16, 32, 64, 128]},
                  fixed={"sde.enabled": True},
                  note="physical batch with the SDE rule, two sizes x two horizons, equal tokens"),
            Block("batch_nosde", {"data.batch_size": [8, 16, 32, 64, 128]},
                  fixed={**mid, "tokens": 163_840, "sde.enabled": False},
                  note="the same batches without the SDE rule (reference hyperparameters kept)"),
        ],
        batch_compare_blocks=["batch_nosde"],
        eval_points=4, eval_repeats=4, bootstrap=200,
    )


def tiny() -> SweepConfig:
    """The `small` questions shrunk to seconds: tiny data, d_model 16-32, a few steps each."""
    return SweepConfig(
        name="tiny",
        base=_base(4, 1_536),
        defaults={"tokens": 1_536, "warmup_frac": 0.1, **{f"mix.{k}": v for k, v in _EQUAL_MIX.items()}},
        data=StudyDataConfig(seq_len=32, text_vocab=64, image_grid=3, max_audio_frames=16, n_text_docs=200,
                             n_images=60, n_audio=30, n_eval=4),
        blocks=[
            Block("scaling", {"model": [{"d_model": 16, "n_layers": 1}, {"d_model": 32, "n_layers": 1}],
                              "tokens": [768, 1_536, 3_072]}),
            Block("schedule", {"masking.schedule": ["linear", "poly"]}, fixed={"model.d_model": 16, "model.n_layers": 1}),
            Block("batch", {"model": [{"d_model": 16, "n_layers": 1}, {"d_model": 32, "n_layers": 1}],
                            "tokens": [1_536, 3_072], "data.batch_size": [2, 4, 8]},
                  fixed={"sde.enabled": True}),
        ],
        eval_points=2, eval_repeats=1, bootstrap=20,
    )


PRESETS = {"small": small, "tiny": tiny}


def preset(name: str) -> SweepConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown study preset {name!r}; known: {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name]())
