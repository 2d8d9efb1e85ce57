"""Config loader: nesting, coercion, unknown keys, type errors, files."""

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from trimodal.config import ConfigError, from_dict, load, require, save, to_dict


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    groups: dict[str, float] = field(default_factory=dict)


@dataclass
class Train:
    name: str
    steps: int = 10
    schedule: Literal["linear", "cosine"] = "linear"
    optim: Optim = field(default_factory=Optim)
    layers: list[int] = field(default_factory=list)
    seed: Optional[int] = None
    bf16: bool = False

    def __post_init__(self) -> None:
        require(self.steps > 0, f"Train.steps must be > 0, got {self.steps}")


def test_nested_and_coerced():
    cfg = from_dict(Train, {"name": "a", "steps": 5, "optim": {"lr": 1, "betas": [0.8, 0.9],
                                                               "groups": {"embed": 2}},
                            "layers": [1, 2], "seed": 3})
    assert cfg == Train("a", 5, "linear", Optim(1.0, (0.8, 0.9), {"embed": 2.0}), [1, 2], 3)
    assert isinstance(cfg.optim.lr, float) and isinstance(cfg.optim.betas, tuple)
    assert from_dict(Train, {"name": "b", "seed": None}).seed is None
    assert to_dict(cfg)["optim"] == {"lr": 1.0, "betas": [0.8, 0.9], "groups": {"embed": 2.0}}


@pytest.mark.parametrize("data,match", [
    ({"name": "a", "stpes": 3}, r"Train: unknown option\(s\) \['stpes'\]"),
    ({"name": "a", "optim": {"lr": 1, "momentum": 0.9}}, r"Train\.optim: unknown option\(s\) \['momentum'\]"),
    ({"name": "a", "steps": "ten"}, r"Train\.steps: expected int, got 'ten'"),
    ({"name": "a", "steps": True}, r"Train\.steps: expected an integer"),
    ({"name": "a", "bf16": "yes"}, r"Train\.bf16: expected bool"),
    ({"name": "a", "optim": {"lr": "fast"}}, r"Train\.optim\.lr"),
    ({"name": "a", "optim": {"betas": [0.9]}}, r"Train\.optim\.betas: expected 2 items, got 1"),
    ({"name": "a", "optim": 3}, r"Train\.optim: expected a mapping for Optim"),
    ({"name": "a", "layers": [1, "x"]}, r"Train\.layers\[1\]"),
    ({"name": "a", "schedule": "poly"}, r"Train\.schedule: 'poly' is not one of \['linear', 'cosine'\]"),
    ({"name": "a", "seed": "x"}, r"Train\.seed: 'x' fits none of"),
    ({"steps": 3}, r"Train: .*name"),
    ({"name": "a", "steps": 0}, r"Train\.steps must be > 0, got 0"),
])
def test_errors_name_the_field(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(Train, data)


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_save_load_round_trip(tmp_path, suffix):
    cfg = Train("run", 7, "cosine", Optim(0.5, (0.1, 0.2), {"attn": 0.5}), [3], 1, True)
    path = tmp_path / f"cfg.{suffix}"
    save(cfg, path)
    assert load(path, Train) == cfg


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load(tmp_path / "nope.yaml", Train)
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load(tmp_path / "bad.yaml", Train)
    (tmp_path / "typo.yaml").write_text("name: a\nsteps: 3\nshedule: cosine\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown option\(s\) \['shedule'\]"):
        load(tmp_path / "typo.yaml", Train)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load(tmp_path / "list.yaml", Train)


def test_float_fields(tmp_path):
    (tmp_path / "sci.yaml").write_text("name: a\noptim:\n  lr: 1e-3\n")  # PyYAML: a string
    assert load(tmp_path / "sci.yaml", Train).optim.lr == 1e-3
    for bad in ("fast", True, [1.0]):
        with pytest.raises(ConfigError, match=r"Train\.optim\.lr: expected a number"):
            from_dict(Train, {"name": "a", "optim": {"lr": bad}})
