"""Configs of the MDM core: model, masking, optimizer, SDE rule, data and the training run.

Everything a run needs is in one `TrainConfig` so that a checkpoint can store it verbatim and
`trimodal train --config cfg.yaml key=value ...` can override any field. Validation happens in
`__post_init__` so a bad YAML fails before a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trimodal.config import ConfigError, require

#: Parameter groups of the per-module AdamW (see `optim.param_groups`).
GROUP_NAMES: tuple[str, ...] = ("embed", "unembed", "attn", "mlp", "norm")


@dataclass
class ModelConfig:
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: float = 4.0
    max_len: int = 1024
    #: Filled from the vocabulary when 0; a non-zero value must match it.
    vocab_size: int = 0
    tie_weights: bool = False
    #: Add a -inf bias so a position of modality m can only predict m's codes (and BOS/EOS).
    restrict_logits: bool = True
    rope_base: float = 10000.0
    norm_eps: float = 1e-6
    init_std: float = 0.02

    def __post_init__(self) -> None:
        require(self.d_model > 0 and self.n_layers > 0 and self.n_heads > 0,
                f"model: d_model, n_layers, n_heads must be > 0, got {self.d_model}, {self.n_layers}, {self.n_heads}")
        require(self.d_model % self.n_heads == 0,
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        require((self.d_model // self.n_heads) % 2 == 0, "model: head dim must be even for RoPE")
        require(self.mlp_ratio > 0, f"model.mlp_ratio must be > 0, got {self.mlp_ratio}")
        require(self.max_len > 0, f"model.max_len must be > 0, got {self.max_len}")
        require(self.vocab_size >= 0, f"model.vocab_size must be >= 0, got {self.vocab_size}")

    @property
    def mlp_hidden(self) -> int:
        """SwiGLU hidden width: ratio * d * 2/3 (same parameters as a GELU MLP), rounded to 8."""
        h = int(self.mlp_ratio * self.d_model * 2 / 3)
        return max(8, (h + 7) // 8 * 8)


@dataclass
class MaskingConfig:
    schedule: Literal["linear", "cosine", "poly"] = "linear"
    #: Exponent k of the polynomial schedule beta_t = t^k.
    exponent: float = 2.0
    #: t is drawn in [t_eps, 1] (LLaDA-style clamp) so the 1/t-like weight stays finite.
    t_eps: float = 1e-3
    #: Complementary masks within the batch (see loss.py); off by default, see docs/mdm_core.md.
    anti_masking: bool = False
    #: Whether BOS/EOS of a modality are masked like its codes (EOS carries text length).
    mask_bos: bool = True
    mask_eos: bool = True
    #: Condition drop for classifier-free guidance: with this probability per pair row, the
    #: condition segment is shown as MASK and left out of the loss, so the model also learns
    #: p(media | no text), the sampler's unconditional pass. 0 = off (CFG then means little).
    cond_drop: float = 0.0
    #: Which segment is dropped: "text" (guides t2i / t2s), "media" (i2t / s2t) or "either".
    cond_drop_segment: Literal["text", "media", "either"] = "text"

    def __post_init__(self) -> None:
        require(self.exponent > 0, f"masking.exponent must be > 0, got {self.exponent}")
        require(0 < self.t_eps < 0.5, f"masking.t_eps must be in (0, 0.5), got {self.t_eps}")
        require(0.0 <= self.cond_drop <= 1.0, f"masking.cond_drop must be in [0, 1], got {self.cond_drop}")
        require(self.cond_drop_segment in ("text", "media", "either"),
                f"masking.cond_drop_segment must be text, media or either, got {self.cond_drop_segment!r}")


@dataclass
class GroupConfig:
    """Per-module-group overrides; None means the optimizer-wide value."""

    lr_mult: float = 1.0
    weight_decay: float | None = None
    eps: float | None = None

    def __post_init__(self) -> None:
        require(self.lr_mult >= 0, f"optim group lr_mult must be >= 0, got {self.lr_mult}")
        require(self.weight_decay is None or self.weight_decay >= 0, "optim group weight_decay must be >= 0")
        require(self.eps is None or self.eps > 0, "optim group eps must be > 0")


def _default_groups() -> dict[str, GroupConfig]:
    return {
        "embed": GroupConfig(weight_decay=0.0),
        "unembed": GroupConfig(),
        "attn": GroupConfig(),
        "mlp": GroupConfig(),
        "norm": GroupConfig(weight_decay=0.0),
    }


@dataclass
class OptimConfig:
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    #: Block i (0-based) of n gets lr * depth_factor ** (i / n); <1 makes later blocks slower.
    depth_factor: float = 1.0
    groups: dict[str, GroupConfig] = field(default_factory=_default_groups)
    grad_clip: float = 1.0
    lr_schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = 100
    #: Final lr as a fraction of the peak (cosine and WSD).
    min_lr_ratio: float = 0.1
    #: WSD: fraction of the run spent in the final (linear) decay.
    decay_frac: float = 0.2

    def __post_init__(self) -> None:
        require(self.lr > 0, f"optim.lr must be > 0, got {self.lr}")
        require(all(0 <= b < 1 for b in self.betas), f"optim.betas must be in [0, 1), got {self.betas}")
        require(self.eps > 0 and self.weight_decay >= 0, "optim.eps must be > 0 and weight_decay >= 0")
        require(self.depth_factor > 0, f"optim.depth_factor must be > 0, got {self.depth_factor}")
        unknown = sorted(set(self.groups) - set(GROUP_NAMES))
        require(not unknown, f"optim.groups: unknown group(s) {unknown}; known: {list(GROUP_NAMES)}")
        defaults = _default_groups()
        for name in GROUP_NAMES:
            self.groups.setdefault(name, defaults[name])
        require(self.warmup_steps >= 0, "optim.warmup_steps must be >= 0")
        require(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio must be in [0, 1]")
        require(0 <= self.decay_frac <= 1, "optim.decay_frac must be in [0, 1]")
        require(self.grad_clip >= 0, "optim.grad_clip must be >= 0 (0 disables)")


@dataclass
class SDEConfig:
    """Batch-size reparameterization: hyperparameters in `optim` are the reference ones,
    tuned at `base_batch` sequences per optimizer step and a `base_horizon_tokens` run."""

    enabled: bool = False
    base_batch: int = 256
    base_horizon_tokens: int = 13_000_000_000
    gamma: float = 0.44
    #: Token horizon D of this run; 0 = max_steps * logical batch * seq_len.
    horizon_tokens: int = 0

    def __post_init__(self) -> None:
        require(self.base_batch > 0, f"sde.base_batch must be > 0, got {self.base_batch}")
        require(self.base_horizon_tokens > 0, "sde.base_horizon_tokens must be > 0")
        require(self.gamma >= 0, f"sde.gamma must be >= 0, got {self.gamma}")
        require(self.horizon_tokens >= 0, "sde.horizon_tokens must be >= 0")


@dataclass
class DataConfig:
    #: Shard set of the training data (folder or fsspec URL with manifest.json).
    train: str = ""
    #: Held-out shard set for periodic eval ("" = none).
    eval: str = ""
    #: vocab.json; "" = the one next to the training shards.
    vocab: str = ""
    #: Rows per forward pass per process (micro batch); with anti-masking half of them are
    #: unique sequences and half their complements.
    batch_size: int = 32
    num_workers: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.batch_size > 0, f"data.batch_size must be > 0, got {self.batch_size}")
        require(self.num_workers >= 0, "data.num_workers must be >= 0")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    out_dir: str = "runs/mdm"
    max_steps: int = 1000
    grad_accum: int = 1
    log_every: int = 10
    eval_every: int = 200
    eval_batches: int = 8
    ckpt_every: int = 500
    #: Resume from out_dir's latest checkpoint when one exists.
    resume: bool = True
    seed: int = 0
    device: str = "auto"
    #: Under torchrun: "ddp" (a whole model per rank) or "fsdp" (FSDP2 shards of parameters,
    #: gradients and optimizer state; see mdm_core/parallel.py). One process ignores it.
    parallel: str = "ddp"
    bf16: bool = True
    compile: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        require(self.max_steps > 0, f"max_steps must be > 0, got {self.max_steps}")
        require(self.grad_accum > 0, f"grad_accum must be > 0, got {self.grad_accum}")
        for name in ("log_every", "eval_every", "ckpt_every"):
            require(getattr(self, name) >= 0, f"{name} must be >= 0 (0 disables)")
        require(self.eval_batches > 0, "eval_batches must be > 0")
        require(self.parallel in ("ddp", "fsdp"), f"parallel must be 'ddp' or 'fsdp', got {self.parallel!r}")
        if self.masking.anti_masking:
            require(self.data.batch_size % 2 == 0,
                    f"masking.anti_masking needs an even data.batch_size, got {self.data.batch_size}")


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`a.b=value` strings (value parsed as YAML: 1e-3, true, [0.9, 0.95]) into a config dict."""
    import yaml

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.lr=1e-3")
        node = data
        *path, last = key.split(".")
        for part in path:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        try:
            node[last] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from err
    return data


def load_train_config(path: str | None, overrides: list[str] = ()) -> TrainConfig:
    """YAML file (optional) + overrides -> validated TrainConfig."""
    import fsspec
    import yaml

    from trimodal.config import from_dict

    data: dict = {}
    if path:
        try:
            with fsspec.open(path, "r") as f:
                data = yaml.safe_load(f) or {}
        except FileNotFoundError as err:
            raise ConfigError(f"config file not found: {path}") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    return from_dict(TrainConfig, apply_overrides(data, list(overrides)), where=path or "config")
