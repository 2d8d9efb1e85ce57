"""Sampling settings: one dataclass per run, and the documented per-modality starting points.

The paper gives per-modality inference defaults, but its body is not readable offline
(`/work/shared/PAPER.md`), so the exact values are unknown to us. `MODALITY_DEFAULTS` holds
*our* starting points, chosen from prior work (MaskGIT for images, LLaDA for text); they are
plain data so a YAML file (`trimodal.config.load(path, SamplingConfig)`) or CLI flags can
override any field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from trimodal.config import ConfigError, from_dict, require, to_dict

Schedule = Literal["linear", "cosine", "poly"]
Remasking = Literal["low_confidence", "random"]


@dataclass
class SamplingConfig:
    """How one target span is unmasked.

    `steps` = 0 means one step per target position (the text default: one token per forward).
    `block_length` > 0 splits the target into blocks unmasked left to right (semi-autoregressive),
    the steps being shared equally between blocks. `cfg_scale` None disables classifier-free
    guidance (one forward per step); a float w runs the conditional and the condition-masked
    input as one batch of 2B and mixes un + (w + 1) * (cond - un), so w = 0 reproduces the
    conditional sample (at twice the cost).
    """

    steps: int = 32
    #: Masking schedule beta(t) followed from t=1 (all masked) to t=0 (none); the names and
    #: formulas are the training ones (`mdm_core.schedules.MaskSchedule`).
    schedule: Schedule = "linear"
    #: Exponent k of the "poly" schedule beta(t) = t^k.
    schedule_exponent: float = 2.0
    #: 0 = greedy (argmax); > 0 samples with Gumbel noise drawn in float64.
    temperature: float = 1.0
    #: Keep only the k most likely ids before sampling (0 = off).
    top_k: int = 0
    #: Nucleus sampling: keep the smallest set of ids with this much probability (1 = off).
    top_p: float = 1.0
    #: Which predictions are committed each step: the most confident ones, or random ones.
    remasking: Remasking = "low_confidence"
    #: Semi-autoregressive block length in target positions (0 = the whole target is one block).
    block_length: int = 0
    cfg_scale: float | None = None
    #: Run the model under bf16 autocast (CUDA; on CPU it is allowed but slow).
    bf16: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.steps >= 0, f"sampling.steps must be >= 0 (0 = target length), got {self.steps}")
        require(self.schedule in ("linear", "cosine", "poly"),
                f"sampling.schedule must be linear, cosine or poly, got {self.schedule!r}")
        require(self.schedule_exponent > 0,
                f"sampling.schedule_exponent must be > 0, got {self.schedule_exponent}")
        require(self.temperature >= 0, f"sampling.temperature must be >= 0, got {self.temperature}")
        require(self.top_k >= 0, f"sampling.top_k must be >= 0 (0 = off), got {self.top_k}")
        require(0 < self.top_p <= 1, f"sampling.top_p must be in (0, 1], got {self.top_p}")
        require(self.remasking in ("low_confidence", "random"),
                f"sampling.remasking must be low_confidence or random, got {self.remasking!r}")
        require(self.block_length >= 0, f"sampling.block_length must be >= 0, got {self.block_length}")
        require(self.cfg_scale is None or self.cfg_scale >= 0,
                f"sampling.cfg_scale must be >= 0 or None (off), got {self.cfg_scale}")

    def replace(self, **overrides: Any) -> "SamplingConfig":
        """A copy with the given fields changed; None values mean "keep" (CLI flags not given)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"sampling: unknown option(s) {unknown}")
        return dataclasses.replace(self, **changes)


#: Our documented starting points per generated modality (see module docstring and
#: docs/sampling.md). Text: one token per step, greedy, low-confidence remasking, semi-AR
#: blocks of 32 (LLaDA). Image: few steps with the cosine schedule, temperature 1, CFG w=3
#: (MaskGIT/Muse) -- only useful if the model was trained with condition drop. Audio: 32 steps,
#: slightly cooled nucleus sampling.
MODALITY_DEFAULTS: dict[str, dict[str, Any]] = {
    "text": {"steps": 0, "schedule": "linear", "temperature": 0.0, "remasking": "low_confidence",
             "block_length": 32, "cfg_scale": None},
    "image": {"steps": 24, "schedule": "cosine", "temperature": 1.0, "remasking": "low_confidence",
              "block_length": 0, "cfg_scale": 3.0},
    "audio": {"steps": 32, "schedule": "cosine", "temperature": 0.9, "top_p": 0.95,
              "remasking": "low_confidence", "block_length": 0, "cfg_scale": None},
}


def default_config(modality: str, overrides: dict[str, Any] | None = None) -> SamplingConfig:
    """The starting point for generating `modality`, with optional overrides (YAML/CLI dict)."""
    if modality not in MODALITY_DEFAULTS:
        raise ConfigError(f"no sampling defaults for modality {modality!r}; "
                          f"known: {sorted(MODALITY_DEFAULTS)}")
    data = dict(MODALITY_DEFAULTS[modality])
    data.update(overrides or {})
    return from_dict(SamplingConfig, data, where=f"sampling[{modality}]")


def defaults_as_dict() -> dict[str, dict[str, Any]]:
    """All per-modality defaults, fully expanded, as YAML-able data (for docs and `--dump`)."""
    return {m: to_dict(default_config(m)) for m in MODALITY_DEFAULTS}
