import json
import math

import pytest
import torch

from trimodal.config import ConfigError, from_dict
from trimodal.mdm_core.config import GroupConfig, ModelConfig, OptimConfig, TrainConfig
from trimodal.mdm_core.model import MDMTransformer
from trimodal.mdm_core.optim import build_optimizer, param_kind
from trimodal.mdm_core.sde import resolve_sde
from trimodal.mdm_core.trainer import resolve_hparams


def test_sde_rule_matches_formulas():
    r = resolve_sde(batch=1024, horizon_tokens=52_000_000_000, base_batch=256,
                    base_horizon_tokens=13_000_000_000, gamma=0.44, lr=1e-3, betas=(0.9, 0.95),
                    eps=1e-8, weight_decay=0.1)
    kappa = (13 / 52) ** 0.44 * (1024 / 256)
    assert r.kappa == pytest.approx(kappa)
    assert r.lr == pytest.approx(1e-3 * math.sqrt(kappa))
    assert r.betas == pytest.approx((0.9 ** kappa, 0.95 ** kappa))
    assert r.eps == pytest.approx(1e-8 / math.sqrt(kappa))
    assert r.weight_decay == pytest.approx(0.1 * math.sqrt(kappa))
    # Per-step decoupled decay lr*wd scales by kappa: per-sample decay unchanged.
    assert r.lr * r.weight_decay == pytest.approx(kappa * 1e-3 * 0.1)


def test_sde_identity_at_reference_point():
    r = resolve_sde(256, 1000, 256, 1000, 0.44, 3e-4, (0.9, 0.95), 1e-8, 0.1)
    assert r.kappa == 1.0 and r.lr == 3e-4 and r.betas == (0.9, 0.95)


def test_trainer_counts_logical_batch_with_accumulation_and_world():
    cfg = from_dict(TrainConfig, {"max_steps": 100, "grad_accum": 4, "data": {"batch_size": 8},
                                  "sde": {"enabled": True, "base_batch": 32, "base_horizon_tokens": 100 * 32 * 64}})
    hp = resolve_hparams(cfg, seq_len=64, world_size=2)
    assert hp.batch == 8 * 4 * 2 and hp.horizon_tokens == 100 * 64 * 64
    assert hp.kappa == pytest.approx(0.5 ** 0.44 * 2)


def test_param_groups_multipliers_depth_and_sde():
    mcfg = ModelConfig(d_model=16, n_layers=4, n_heads=2, max_len=8, vocab_size=40)
    model = MDMTransformer(mcfg)
    ocfg = OptimConfig(lr=1e-3, depth_factor=0.5, eps=1e-8, weight_decay=0.1,
                       groups={"embed": GroupConfig(lr_mult=10.0, weight_decay=0.0),
                               "attn": GroupConfig(lr_mult=0.5, eps=1e-10)})
    kappa = 4.0
    opt = build_optimizer(model, ocfg, mcfg.n_layers, kappa)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["embed"]["lr"] == pytest.approx(1e-3 * 10 * 2)
    assert by_name["embed"]["weight_decay"] == 0.0
    assert by_name["attn.2"]["lr"] == pytest.approx(1e-3 * 0.5 * 0.5 ** (2 / 4) * 2)
    assert by_name["attn.2"]["eps"] == pytest.approx(1e-10 / 2)
    assert by_name["mlp.0"]["weight_decay"] == pytest.approx(0.2)
    assert by_name["norm.3"]["weight_decay"] == 0.0  # default: no decay on gains
    assert by_name["unembed"]["betas"] == pytest.approx((0.9 ** 4, 0.95 ** 4))
    n_opt = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in model.parameters())


def test_tied_weights_live_in_embed_group():
    model = MDMTransformer(ModelConfig(d_model=16, n_layers=1, n_heads=2, max_len=8, vocab_size=40, tie_weights=True))
    opt = build_optimizer(model, OptimConfig(), 1)
    assert "unembed" not in {g["name"] for g in opt.param_groups}
    assert param_kind("blocks.0.attn.q_norm.weight", torch.ones(3)) == ("norm", 0)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="optim.groups"):
        from_dict(TrainConfig, {"optim": {"groups": {"embedding": {"lr_mult": 2.0}}}})
    with pytest.raises(ConfigError, match="anti_masking"):
        from_dict(TrainConfig, {"masking": {"anti_masking": True}, "data": {"batch_size": 3}})
    with pytest.raises(ConfigError, match="unknown option"):
        from_dict(TrainConfig, {"model": {"dmodel": 3}})
