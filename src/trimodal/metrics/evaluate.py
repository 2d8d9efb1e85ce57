"""Failure-tolerant per-item evaluation shared by the image and audio metrics.

A reconstruction benchmark runs thousands of pairs through several metrics, and some metrics
legitimately refuse some inputs (PESQ finds no speech in silence, SSIM needs an image at least
as large as its window, a decoded clip may be empty). One such item must not kill a long run,
and must not silently vanish either: it is recorded as missing, with the reason, and counted
per metric, so that an aggregate always says how many items it is made of.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)

PairMetric = Callable[[Any, Any], float]


@dataclass
class ItemRecord:
    """One pair's results: a value per metric, None where the metric failed (see `errors`)."""

    key: str
    values: dict[str, float | None]
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class MetricSummary:
    """Aggregate of one metric over the items where it succeeded.

    `mean` can be +inf (e.g. SI-SDR or PSNR of an exact copy); `std` is None then, because a
    spread around infinity means nothing.
    """

    mean: float | None
    median: float | None
    std: float | None
    min: float | None
    max: float | None
    n: int
    n_missing: int


@dataclass
class EvalReport:
    """What `evaluate_pairs` returns: per-item records, per-metric summaries, set-level
    metrics (FID needs the whole set) and `info` saying how the numbers were made."""

    modality: str
    items: list[ItemRecord]
    summary: dict[str, MetricSummary]
    set_metrics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_missing(self) -> dict[str, int]:
        return {name: s.n_missing for name, s in self.summary.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON. Infinite values stay floats (json writes `Infinity`)."""
        return {
            "modality": self.modality,
            "n_items": self.n_items,
            "summary": {k: asdict(v) for k, v in self.summary.items()},
            "set_metrics": self.set_metrics,
            "info": self.info,
            "items": [asdict(r) for r in self.items],
        }


def _describe_error(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _as_value(raw: Any) -> float:
    value = float(raw)
    if math.isnan(value):
        raise ValueError("metric returned NaN")
    return value


def summarize(values: Sequence[float | None]) -> MetricSummary:
    """Summary over the non-missing values; all-missing gives Nones and n=0."""
    ok = np.array([v for v in values if v is not None], dtype=np.float64)
    n_missing = len(values) - len(ok)
    if len(ok) == 0:
        return MetricSummary(None, None, None, None, None, 0, n_missing)
    finite = bool(np.isfinite(ok).all())
    return MetricSummary(
        mean=float(np.mean(ok)),
        median=float(np.median(ok)),
        std=float(np.std(ok)) if finite else None,
        min=float(np.min(ok)),
        max=float(np.max(ok)),
        n=len(ok),
        n_missing=n_missing,
    )


def evaluate_items(
    pairs: Iterable[tuple[Any, Any]],
    metrics: Mapping[str, PairMetric],
    keys: Iterable[str] | None = None,
    *,
    modality: str = "",
    progress: bool = True,
    total: int | None = None,
) -> EvalReport:
    """Run every metric on every (original, reconstruction) pair, never letting one fail the run.

    `pairs` yields (original, reconstruction); it may be lazy (a generator over a large set).
    Each metric is called as `metric(original, reconstruction)` and must return a float. An
    exception (or NaN) makes that item's value None, with the reason in `errors`, and is
    counted in the summary's `n_missing`.
    """
    if not metrics:
        raise ValueError("evaluate_items: no metrics given")
    if total is None and isinstance(pairs, Sequence):
        total = len(pairs)
    records: list[ItemRecord] = []
    first_failure_logged: set[str] = set()
    keyed: Iterable[tuple[Any, tuple[Any, Any]]] = (
        zip(keys, pairs, strict=True) if keys is not None else zip(itertools.count(), pairs))
    for key, (orig, recon) in tqdm(keyed, total=total, desc=f"{modality or 'eval'} metrics",
                                   disable=not progress, leave=False):
        values: dict[str, float | None] = {}
        errors: dict[str, str] = {}
        for name, fn in metrics.items():
            try:
                values[name] = _as_value(fn(orig, recon))
            except Exception as err:  # noqa: BLE001 - a metric failing on one item is data
                values[name] = None
                errors[name] = _describe_error(err)
                if name not in first_failure_logged:
                    first_failure_logged.add(name)
                    log.warning("%s failed on item %s (%s); recorded as missing, further "
                                "failures of this metric are logged at debug level",
                                name, key, errors[name])
                else:
                    log.debug("%s failed on item %s: %s", name, key, errors[name])
        records.append(ItemRecord(key=str(key), values=values, errors=errors))
    summary = {name: summarize([r.values[name] for r in records]) for name in metrics}
    for name, s in summary.items():
        if s.n_missing:
            log.info("%s: %d of %d items missing", name, s.n_missing, len(records))
    return EvalReport(modality=modality, items=records, summary=summary)


def paired(originals: Iterable[Any], reconstructions: Iterable[Any]) -> Iterable[tuple[Any, Any]]:
    """Zip two item streams, raising ValueError if one runs out before the other."""
    return zip(originals, reconstructions, strict=True)
