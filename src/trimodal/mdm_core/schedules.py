"""Masking schedules beta(t) with their ELBO weights, and learning-rate schedules.

The continuous-time MDM bound is  E_t[ w(t) * sum_{masked} -log p(x_i | x_t) ]  with
w(t) = beta'(t) / beta(t). Substituting lambda = beta(t) shows the bound is the same integral
for every schedule; the schedule only changes *which* masking rates the training samples, so
it trades variance between easy (few masks) and hard (many masks) examples. That is why the
weight must match the schedule exactly: a mismatched pair biases the bound.
"""

from __future__ import annotations

import math

import torch

from trimodal.mdm_core.config import MaskingConfig, OptimConfig


class MaskSchedule:
    """beta(t) in [0, 1] (beta(0)=0, beta(1)=1, increasing) and its derivative."""

    def __init__(self, kind: str, exponent: float = 2.0):
        if kind not in ("linear", "cosine", "poly"):
            raise ValueError(f"unknown masking schedule {kind!r}; expected linear, cosine or poly")
        self.kind = kind
        self.k = float(exponent) if kind == "poly" else 1.0

    @classmethod
    def from_config(cls, cfg: MaskingConfig) -> "MaskSchedule":
        return cls(cfg.schedule, cfg.exponent)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        if self.kind == "cosine":
            # MD4 / MaskGIT cosine: mask rate sin(pi t / 2) = cos(pi (1 - t) / 2), concave, so
            # training sees more heavily masked sequences and sampling unmasks few tokens first.
            return torch.sin(0.5 * math.pi * t)
        return t ** self.k

    def dbeta(self, t: torch.Tensor) -> torch.Tensor:
        if self.kind == "cosine":
            return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)
        return self.k * t ** (self.k - 1.0)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """ELBO weight w(t) = beta'(t) / beta(t) (linear 1/t, poly k/t, cosine see module doc)."""
        return self.dbeta(t) / self.beta(t)

    def complement_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Weight of the complementary mask (rate 1 - beta(t)) at the same t: beta'/(1-beta).

        With lambda = beta(t) the bound is  integral dlambda / lambda * f(lambda). A second
        sample at rate 1 - lambda, drawn through the same t, is unbiased for the same integral
        when weighted by beta'(t) / (1 - beta(t)) (change of variables lambda -> 1 - lambda).
        For the linear schedule this is exactly w(1 - t) = 1 / (1 - t).
        """
        return self.dbeta(t) / (1.0 - self.beta(t))

    def __repr__(self) -> str:
        return f"MaskSchedule({self.kind}{f', k={self.k}' if self.kind == 'poly' else ''})"


def sample_t(n: int, eps: float, generator: torch.Generator | None = None,
             upper: float = 1.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """n times uniform in [eps, upper] (float32)."""
    u = torch.rand(n, generator=generator, device=device)
    return eps + (upper - eps) * u


def lr_factor(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): warmup then cosine/WSD.

    A pure function of the step, so the "scheduler state" in a checkpoint is just the step.
    """
    warm = cfg.warmup_steps
    if warm > 0 and step < warm:
        return (step + 1) / warm
    floor = cfg.min_lr_ratio
    if cfg.lr_schedule == "constant":
        return 1.0
    if cfg.lr_schedule == "cosine":
        span = max(1, max_steps - warm)
        progress = min(1.0, (step - warm) / span)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    # WSD: warmup, stable at peak, then linear decay to the floor over the last decay_frac.
    decay_steps = max(1, int(round(cfg.decay_frac * max_steps)))
    decay_start = max_steps - decay_steps
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / decay_steps)
    return 1.0 - (1.0 - floor) * progress
