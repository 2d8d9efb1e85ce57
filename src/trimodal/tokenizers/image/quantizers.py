"""Quantizers (movq, fsq, lfq) behind one small interface, using `vector-quantize-pytorch`.

Every variant takes a latent map [B,D,h,w] (D = `latent_dim(cfg)`; the autoencoder's 1x1
convolutions do any projection, so the library's own projections stay off) and returns the
quantized map, integer ids [B,h,w] in [0, codebook_size) and one auxiliary loss (already
weighted: commitment for movq, entropy + commitment for lfq, zero for fsq).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from vector_quantize_pytorch import FSQ, LFQ, VectorQuantize

from trimodal.config import require

#: FSQ levels recommended by the FSQ paper (Mentzer et al. 2023, table 1) per codebook size.
FSQ_LEVELS: dict[int, tuple[int, ...]] = {
    2**8: (8, 6, 5),
    2**10: (8, 5, 5, 5),
    2**12: (7, 5, 5, 5, 5),
    2**14: (8, 8, 8, 6, 5),
    2**16: (8, 8, 8, 5, 5, 5),
}

KINDS = ("movq", "fsq", "lfq")


@dataclass
class QuantizerConfig:
    kind: str = "fsq"
    #: movq/lfq: number of codes (lfq: a power of two). fsq: selects the recommended levels
    #: when `levels` is not given (2^8 .. 2^16); otherwise derived from `levels`.
    codebook_size: int = 1024
    # --- movq (VectorQuantize) ---
    codebook_dim: int = 64
    #: "ema": codebook updated by exponential moving averages; "learnable": by the optimizer.
    codebook_update: str = "ema"
    ema_decay: float = 0.9
    kmeans_init: bool = False
    kmeans_iters: int = 10
    #: Replace codes whose EMA cluster size falls below this (0: never). EMA only.
    dead_code_threshold: float = 0.0
    commitment_weight: float = 0.25
    # --- fsq ---
    levels: tuple[int, ...] | None = None
    # --- lfq ---
    entropy_weight: float = 0.1
    lfq_commitment_weight: float = 0.25
    diversity_gamma: float = 1.0

    def __post_init__(self) -> None:
        require(self.kind in KINDS, f"quantizer.kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.kind == "fsq":
            if self.levels is None:
                require(self.codebook_size in FSQ_LEVELS,
                        f"quantizer: no recommended FSQ levels for codebook_size {self.codebook_size}; "
                        f"use one of {sorted(FSQ_LEVELS)} or give `levels` explicitly")
                self.levels = FSQ_LEVELS[self.codebook_size]
            self.levels = tuple(self.levels)
            require(len(self.levels) >= 1 and all(lv >= 3 for lv in self.levels),
                    f"quantizer.levels must be integers >= 3, got {list(self.levels)}")
            self.codebook_size = math.prod(self.levels)
        require(self.codebook_size >= 2, f"quantizer.codebook_size must be >= 2, got {self.codebook_size}")
        if self.kind == "lfq":
            require(self.codebook_size & (self.codebook_size - 1) == 0,
                    f"quantizer.codebook_size must be a power of two for lfq, got {self.codebook_size}")
            require(self.entropy_weight >= 0, "quantizer.entropy_weight must be >= 0")
            require(self.lfq_commitment_weight >= 0, "quantizer.lfq_commitment_weight must be >= 0")
        if self.kind == "movq":
            require(self.codebook_dim >= 1, "quantizer.codebook_dim must be >= 1")
            require(self.codebook_update in ("ema", "learnable"),
                    f"quantizer.codebook_update must be 'ema' or 'learnable', got {self.codebook_update!r}")
            require(0.0 < self.ema_decay < 1.0, "quantizer.ema_decay must be in (0, 1)")
            require(self.commitment_weight >= 0, "quantizer.commitment_weight must be >= 0")
            require(self.dead_code_threshold >= 0, "quantizer.dead_code_threshold must be >= 0")
            require(not (self.dead_code_threshold > 0 and self.codebook_update != "ema"),
                    "quantizer.dead_code_threshold needs codebook_update='ema'")


def latent_dim(cfg: QuantizerConfig) -> int:
    """Channels of the latent the quantizer consumes (and the decoder receives)."""
    if cfg.kind == "movq":
        return cfg.codebook_dim
    if cfg.kind == "fsq":
        assert cfg.levels is not None
        return len(cfg.levels)
    return int(math.log2(cfg.codebook_size))


class QuantOut(NamedTuple):
    z_q: torch.Tensor        # [B,D,h,w]
    ids: torch.Tensor        # [B,h,w] int64
    aux_loss: torch.Tensor   # scalar, already weighted


class Quantizer(nn.Module):
    """One wrapper for the three library quantizers; `forward` and `ids_to_latent` are inverse
    in the sense that ids_to_latent(forward(z).ids) == forward(z).z_q in eval mode."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__()
        self.kind = cfg.kind
        self.dim = latent_dim(cfg)
        self.codebook_size = cfg.codebook_size
        if cfg.kind == "movq":
            ema = cfg.codebook_update == "ema"
            self.q: nn.Module = VectorQuantize(
                dim=self.dim, codebook_size=cfg.codebook_size, accept_image_fmap=True,
                decay=cfg.ema_decay, kmeans_init=cfg.kmeans_init, kmeans_iters=cfg.kmeans_iters,
                threshold_ema_dead_code=cfg.dead_code_threshold if ema else 0,
                commitment_weight=cfg.commitment_weight, ema_update=ema, learnable_codebook=not ema,
                sync_codebook=False,
            )
        elif cfg.kind == "fsq":
            self.q = FSQ(levels=list(cfg.levels or ()), dim=self.dim)
        else:
            self.q = LFQ(dim=self.dim, codebook_size=cfg.codebook_size, entropy_loss_weight=cfg.entropy_weight,
                         commitment_loss_weight=cfg.lfq_commitment_weight, diversity_gamma=cfg.diversity_gamma)

    def forward(self, z: torch.Tensor) -> QuantOut:
        if self.kind == "movq":
            z_q, ids, loss = self.q(z)
        elif self.kind == "fsq":
            z_q, ids = self.q(z)
            loss = z.new_zeros(())
        else:
            z_q, ids, loss = self.q(z)
        return QuantOut(z_q, ids.long(), loss.reshape(()) if loss.numel() == 1 else loss.sum())

    def ids_to_latent(self, ids: torch.Tensor) -> torch.Tensor:
        if self.kind == "movq":
            return self.q.get_output_from_indices(ids)
        return self.q.indices_to_codes(ids)
