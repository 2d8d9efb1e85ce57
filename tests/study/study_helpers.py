"""A cheap fake `train` for sweep/report tests: losses from a known law, no model."""

import math

import pytest

from trimodal.study.data import StudyDataConfig
from trimodal.study.fit import ScalingLaw
from trimodal.study.sweep import Block, SweepConfig

LAW = ScalingLaw(E=1.5, A=60.0, B=300.0, alpha=0.4, beta=0.35)


class FakeTrain:
    """Records calls; loss = LAW(N, D) + a penalty above a critical batch that grows with D."""

    def __init__(self, fail_on: set[str] = frozenset(), interrupt_after: int | None = None):
        self.calls: list[str] = []
        self.fail_on = set(fail_on)
        self.interrupt_after = interrupt_after

    def __call__(self, point, point_dir):
        if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls.append(point.name)
        if point.name in self.fail_on:
            raise RuntimeError("boom")
        s = point.settings
        d, layers = s.get("model.d_model", 64), s.get("model.n_layers", 2)
        N = 12.0 * layers * d * d
        D = float(s.get("tokens", 1e5))
        batch = s.get("data.batch_size", 16)
        crit = 32 * (D / 1e5) ** 0.5
        loss = float(LAW.loss(N, D)) + (0.3 * math.log2(batch / crit) if batch > crit else 0.0)
        final = {"eval/elbo": loss, "eval/elbo/text": loss + 0.2, "eval/elbo/image": loss - 0.3,
                 "eval/elbo/audio": loss + 0.1}
        curve = [{"step": k, "tokens": D * k / 4, **{m: v + 0.5 / k for m, v in final.items()}} for k in (1, 2, 3, 4)]
        return {"N": N, "D": D, "steps": 4, "batch": batch, "seq_len": 64, "flops_per_token": 6 * N,
                "train_loss": loss, "final": final, "curve": curve}


def fake_sweep(bootstrap: int = 10) -> SweepConfig:
    return SweepConfig(
        name="fake", base={}, defaults={"tokens": 1e5},
        data=StudyDataConfig(),
        blocks=[
            Block("scaling", {"model": [{"d_model": d, "n_layers": 2} for d in (32, 64, 128)],
                              "tokens": [2.5e4, 1e5, 4e5]}),
            Block("mix", {"mix": [{"text": 1, "image_text": 1, "audio_text": 1},
                                  {"text": 2, "image_text": 1, "audio_text": 1}]}),
            Block("batch", {"model.d_model": [32, 64], "tokens": [1e5, 1.6e6],
                            "data.batch_size": [8, 16, 32, 64, 128, 256]}, fixed={"sde.enabled": True}),
        ],
        bootstrap=bootstrap,
    )


@pytest.fixture
def fake_train():
    return FakeTrain()
