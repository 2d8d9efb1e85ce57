"""Resumable stages: each writes a JSON result marker when it completes.

A rerun of the demo reads the marker and skips the stage, so a second `make demo` reuses
everything finished (the markers are written last, after the stage's outputs, which is what
makes a half-finished stage rerun from its start rather than be trusted).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from trimodal.io import atomic_write_json

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    name: str
    seconds: float
    reused: bool
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageRunner:
    root: Path
    results: list[StageResult] = field(default_factory=list)

    def marker(self, name: str) -> Path:
        return Path(self.root) / "stages" / f"{name}.json"

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        marker = self.marker(name)
        if marker.exists():
            stored = json.loads(marker.read_text())
            log.info("stage %-18s reused (finished earlier in %.1f s)", name, stored["seconds"])
            self.results.append(StageResult(name, stored["seconds"], True, stored["summary"]))
            return stored["summary"]
        log.info("stage %-18s running", name)
        start = time.perf_counter()
        summary = fn()
        seconds = time.perf_counter() - start
        atomic_write_json(str(marker), {"seconds": seconds, "summary": summary}, indent=2, default=str)
        log.info("stage %-18s done in %.1f s", name, seconds)
        self.results.append(StageResult(name, seconds, False, summary))
        return summary
