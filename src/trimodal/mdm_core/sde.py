"""SDE batch-size reparameterization of AdamW hyperparameters.

The user tunes lr, betas, eps and weight decay once, at a reference batch B_base (sequences per
optimizer step) and token horizon D_base. A run with logical batch B and horizon D uses

    kappa = (D_base / D) ** gamma * (B / B_base)
    lr    -> lr * sqrt(kappa)           (Adam's SDE rule, Malladi et al. 2022)
    beta  -> beta ** kappa              (EMA time constants measured in samples, Busbridge et al.)
    eps   -> eps / sqrt(kappa)
    wd    -> wd * sqrt(kappa)

torch's AdamW applies decoupled decay as p -= lr * wd * p, so the per-step decay scales by
sqrt(kappa) * sqrt(kappa) = kappa: with kappa times more samples per step the decay *per
sample* stays the same. The (D_base/D)**gamma factor says the logical batch that behaves like
B_base grows as D**gamma with the horizon (gamma ~ 0.44 in the paper's fit); above the
critical batch this invariance breaks down, which no rule can fix.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class SDEResolved:
    kappa: float
    batch: int
    horizon_tokens: int
    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float

    def as_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


def sde_kappa(batch: int, horizon_tokens: float, base_batch: int, base_horizon_tokens: float,
              gamma: float) -> float:
    if batch <= 0 or horizon_tokens <= 0:
        raise ValueError(f"SDE rule needs batch > 0 and horizon > 0, got {batch}, {horizon_tokens}")
    return (base_horizon_tokens / horizon_tokens) ** gamma * (batch / base_batch)


def sde_scale(kappa: float, lr: float, betas: tuple[float, float], eps: float,
              weight_decay: float) -> tuple[float, tuple[float, float], float, float]:
    """(lr, betas, eps, wd) reference values -> the values for a run with this kappa."""
    s = math.sqrt(kappa)
    return lr * s, (betas[0] ** kappa, betas[1] ** kappa), eps / s, weight_decay * s


def resolve_sde(batch: int, horizon_tokens: int, base_batch: int, base_horizon_tokens: int,
                gamma: float, lr: float, betas: tuple[float, float], eps: float,
                weight_decay: float) -> SDEResolved:
    kappa = sde_kappa(batch, horizon_tokens, base_batch, base_horizon_tokens, gamma)
    lr2, betas2, eps2, wd2 = sde_scale(kappa, lr, betas, eps, weight_decay)
    return SDEResolved(kappa, batch, horizon_tokens, lr2, betas2, eps2, wd2)
