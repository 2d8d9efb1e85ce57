"""Critical batch size from a batch sweep at equal tokens.

At a fixed token horizon, a larger batch means fewer optimizer steps. Below the critical batch
the SDE rule keeps the loss (nearly) unchanged; above it the loss at equal tokens degrades.
Estimate, per (model size, horizon) group:

    best     = the lowest final loss over the tested batches
    critical = the largest tested batch b >= argmin whose loss is within `tol` (relative) of
               best, every batch between argmin and b included; the next tested batch is the
               first that degrades. `crossing` interpolates (in log batch) where the loss curve
               crosses best * (1 + tol). If no tested batch degrades, the estimate is censored:
               critical >= the largest batch tested.

Then: does the critical batch move with model size (ratio between sizes at equal horizon), and
how does it grow with the horizon (exponent log(Bc2/Bc1) / log(D2/D1), to compare with the
paper's gamma ~ 0.44: logical batch ~ D^gamma)?
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np


@dataclass
class CriticalBatch:
    group: dict[str, Any]
    batches: list[float]
    losses: list[float]
    best_batch: float
    best_loss: float
    critical: float
    censored: bool
    crossing: float | None

    def as_row(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.group.items()}, "best_batch": self.best_batch,
                "best_loss": self.best_loss, "critical_batch": self.critical,
                "censored": ">= (no degradation seen)" if self.censored else "",
                "note": "best at the smallest batch tested: Bc may lie below the grid"
                if self.best_batch == min(self.batches) and self.critical == self.best_batch else "",
                "crossing": self.crossing if self.crossing is not None else math.nan}


def critical_batch(batches: Sequence[float], losses: Sequence[float], tol: float = 0.02,
                   group: dict[str, Any] | None = None) -> CriticalBatch:
    """See the module doc; non-finite losses (diverged runs) count as degraded."""
    if tol < 0:
        raise ValueError(f"critical_batch: tol must be >= 0, got {tol}")
    pairs = sorted(zip((float(b) for b in batches), (float(x) for x in losses)))
    if len(pairs) < 2:
        raise ValueError(f"critical_batch: need at least 2 batch sizes, got {len(pairs)}")
    b = np.array([p[0] for p in pairs])
    loss = np.array([p[1] if math.isfinite(p[1]) else math.inf for p in pairs])
    if not np.isfinite(loss).any():
        raise ValueError("critical_batch: every run diverged")
    i_best = int(np.argmin(loss))
    threshold = loss[i_best] * (1 + tol)
    j = i_best
    while j + 1 < len(b) and loss[j + 1] <= threshold:
        j += 1
    censored = j == len(b) - 1
    crossing = None
    if not censored:
        l0, l1 = loss[j], loss[j + 1]
        if math.isfinite(l1) and l1 > l0:
            frac = (threshold - l0) / (l1 - l0)
            crossing = float(math.exp(math.log(b[j]) + frac * (math.log(b[j + 1]) - math.log(b[j]))))
        else:
            crossing = float(b[j])
    return CriticalBatch(dict(group or {}), b.tolist(), [float(x) for x in loss], float(b[i_best]),
                         float(loss[i_best]), float(b[j]), censored, crossing)


@dataclass
class CriticalBatchStudy:
    results: list[CriticalBatch]
    #: Bc(larger model) / Bc(smaller model) at each horizon (1.0 = independent of size).
    size_ratios: list[dict[str, Any]] = field(default_factory=list)
    #: log(Bc(D2)/Bc(D1)) / log(D2/D1) per model size.
    horizon_exponents: list[dict[str, Any]] = field(default_factory=list)


def _estimate(r: CriticalBatch) -> float:
    """The continuous estimate where there is one, else the discrete one (censored: a bound)."""
    return r.crossing if r.crossing is not None else r.critical


def analyse(rows: Sequence[dict[str, Any]], batch_key: str, size_key: str, horizon_key: str,
            metric: str = "eval/elbo", tol: float = 0.02) -> CriticalBatchStudy:
    """Group sweep table rows by (size, horizon), estimate each group's critical batch, compare."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row[size_key], row[horizon_key]), []).append(row)
    results = []
    for (size, horizon), rs in sorted(groups.items(), key=lambda kv: (float(kv[0][0]), float(kv[0][1]))):
        if len(rs) < 2:
            continue
        results.append(critical_batch([r[batch_key] for r in rs],
                                      [r[metric] if r[metric] is not None else math.nan for r in rs], tol,
                                      {size_key: size, horizon_key: horizon}))
    study = CriticalBatchStudy(results)
    sizes = sorted({float(r.group[size_key]) for r in results})
    horizons = sorted({float(r.group[horizon_key]) for r in results})
    by = {(float(r.group[size_key]), float(r.group[horizon_key])): r for r in results}
    for h in horizons:
        have = [s for s in sizes if (s, h) in by]
        for s0, s1 in zip(have, have[1:]):
            r0, r1 = by[(s0, h)], by[(s1, h)]
            study.size_ratios.append({horizon_key: h, "sizes": f"{s0:g} -> {s1:g}",
                                      "Bc_small": _estimate(r0), "Bc_large": _estimate(r1),
                                      "ratio": _estimate(r1) / _estimate(r0),
                                      "censored": r0.censored or r1.censored})
    for s in sizes:
        have = [h for h in horizons if (s, h) in by]
        for h0, h1 in zip(have, have[1:]):
            r0, r1 = by[(s, h0)], by[(s, h1)]
            study.horizon_exponents.append({size_key: s, "horizons": f"{h0:g} -> {h1:g}",
                                            "Bc_short": _estimate(r0), "Bc_long": _estimate(r1),
                                            "exponent": math.log(_estimate(r1) / _estimate(r0)) / math.log(h1 / h0),
                                            "censored": r0.censored or r1.censored})
    return study
