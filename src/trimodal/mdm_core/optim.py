"""AdamW with per-module parameter groups, a depth factor and the SDE rule.

Groups: embed (token embedding; also the unembedding when weights are tied, because they are
then one tensor), unembed (output projection), attn (qkv and output projections), mlp (SwiGLU
gate/up/down), norm (every RMSNorm gain, QK-norm included). Each block's params form their own
group per kind so that block i of n gets

    lr = base_lr * sqrt(kappa) * lr_mult[kind] * depth_factor ** (i / n)

(depth_factor < 1: later blocks take smaller steps). Embedding, unembedding and the final
norm have no depth factor. Weight decay and eps come from the group config or the optimizer
default, then the SDE rule scales them (see sde.py); betas are shared.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from trimodal.mdm_core.config import OptimConfig
from trimodal.mdm_core.sde import sde_scale

log = logging.getLogger(__name__)


def param_kind(name: str, param: torch.Tensor) -> tuple[str, int | None]:
    """(group name, block index or None) of a parameter of MDMTransformer."""
    layer = None
    if name.startswith("blocks."):
        layer = int(name.split(".")[1])
    if name.startswith("tok_emb."):
        return "embed", None
    if name.startswith("lm_head."):
        return "unembed", None
    if param.dim() < 2:
        return "norm", layer
    if ".attn." in name:
        return "attn", layer
    if ".mlp." in name:
        return "mlp", layer
    raise ValueError(f"parameter {name!r} fits no optimizer group")


def param_groups(model: nn.Module, cfg: OptimConfig, n_layers: int, kappa: float = 1.0) -> list[dict]:
    """torch param-group dicts; `peak_lr` is the lr before the schedule multiplies it."""
    groups: dict[tuple[str, int | None], dict] = {}
    for name, p in model.named_parameters():  # tied weights appear once (as tok_emb)
        if not p.requires_grad:
            continue
        kind, layer = param_kind(name, p)
        key = (kind, layer)
        if key not in groups:
            g = cfg.groups[kind]
            depth = cfg.depth_factor ** (layer / n_layers) if layer is not None else 1.0
            lr = cfg.lr * g.lr_mult * depth
            wd = cfg.weight_decay if g.weight_decay is None else g.weight_decay
            eps = cfg.eps if g.eps is None else g.eps
            lr, betas, eps, wd = sde_scale(kappa, lr, tuple(cfg.betas), eps, wd)
            label = kind if layer is None else f"{kind}.{layer}"
            groups[key] = {"params": [], "name": label, "lr": lr, "peak_lr": lr,
                           "betas": betas, "eps": eps, "weight_decay": wd}
        groups[key]["params"].append(p)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: OptimConfig, n_layers: int, kappa: float = 1.0,
                    fused: bool = False) -> torch.optim.AdamW:
    groups = param_groups(model, cfg, n_layers, kappa)
    for g in groups:
        log.debug("optimizer group %s: %d tensors lr=%.3g wd=%.3g eps=%.3g betas=%s", g["name"],
                  len(g["params"]), g["lr"], g["weight_decay"], g["eps"], g["betas"])
    return torch.optim.AdamW(groups, lr=groups[0]["lr"], fused=fused or None)


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = g["peak_lr"] * factor
