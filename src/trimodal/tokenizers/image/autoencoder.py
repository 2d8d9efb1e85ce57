"""Convolutional encoder/decoder of the image tokenizer (VQGAN-style, optional MoVQ decoder).

The encoder maps [B,3,H,W] to a latent [B,D,H/f,W/f] with D the quantizer's input width; the
decoder maps the quantized latent back. Widths and depth are config so that the same code is a
tiny CPU model in tests and a real model on a GPU.

MoVQ decoder ("spatial_norm"): every GroupNorm of the decoder is replaced by a parameter-free
GroupNorm whose scale and shift are predicted, per pixel, from the quantized latent z_q
(nearest-upsampled to the layer's resolution). Why: the quantized map then modulates every
decoder layer rather than only its input, which lets neighbouring equal codes decode to
different content and is what makes MoVQ reconstructions sharper at the same codebook size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trimodal.config import require

#: Channel multipliers used when the config gives none, per downsampling factor.
DEFAULT_CHANNEL_MULT: dict[int, tuple[int, ...]] = {
    4: (1, 2, 4),
    8: (1, 1, 2, 4),
    16: (1, 1, 2, 2, 4),
}


@dataclass
class AutoencoderConfig:
    #: Spatial downsampling factor f: an H x W image becomes an (H/f) x (W/f) grid of codes.
    downsample_factor: int = 8
    base_channels: int = 64
    #: One multiplier per resolution level; length must be log2(f) + 1. None: a default per f.
    channel_mult: tuple[int, ...] | None = None
    num_res_blocks: int = 1
    #: Self-attention at the lowest resolution (off by default: slow on CPU, rarely needed for
    #: small images).
    attention: bool = False
    #: "conv": strided 3x3 conv; "avgpool": 2x2 average pooling (parameter-free).
    downsample: str = "conv"
    #: Group count of GroupNorm; reduced to a divisor of the channel count where needed.
    norm_groups: int = 32
    #: MoVQ: decoder norms modulated by the quantized latent (see module docstring).
    spatial_norm: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        require(self.downsample_factor in DEFAULT_CHANNEL_MULT,
                f"autoencoder.downsample_factor must be one of {sorted(DEFAULT_CHANNEL_MULT)}, "
                f"got {self.downsample_factor}")
        levels = int(math.log2(self.downsample_factor)) + 1
        if self.channel_mult is None:
            self.channel_mult = DEFAULT_CHANNEL_MULT[self.downsample_factor]
        self.channel_mult = tuple(self.channel_mult)
        require(len(self.channel_mult) == levels,
                f"autoencoder.channel_mult needs {levels} entries for downsample_factor "
                f"{self.downsample_factor} (one per resolution level), got {list(self.channel_mult)}")
        require(all(m >= 1 for m in self.channel_mult), "autoencoder.channel_mult entries must be >= 1")
        require(self.base_channels >= 4, f"autoencoder.base_channels must be >= 4, got {self.base_channels}")
        require(self.num_res_blocks >= 1, "autoencoder.num_res_blocks must be >= 1")
        require(self.downsample in ("conv", "avgpool"),
                f"autoencoder.downsample must be 'conv' or 'avgpool', got {self.downsample!r}")
        require(self.norm_groups >= 1, "autoencoder.norm_groups must be >= 1")
        require(0.0 <= self.dropout < 1.0, "autoencoder.dropout must be in [0, 1)")


def _groups(channels: int, wanted: int) -> int:
    return math.gcd(channels, wanted)


class SpatialNorm(nn.Module):
    """GroupNorm without its own affine; scale/shift come from z_q at this resolution."""

    def __init__(self, channels: int, zq_channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels, groups), channels, affine=False)
        self.scale = nn.Conv2d(zq_channels, channels, 1)
        self.shift = nn.Conv2d(zq_channels, channels, 1)
        # Start as an identity-affine GroupNorm so early training behaves like plain VQGAN.
        nn.init.zeros_(self.scale.weight)
        nn.init.ones_(self.scale.bias)
        nn.init.zeros_(self.shift.weight)
        nn.init.zeros_(self.shift.bias)

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None) -> torch.Tensor:
        if zq is None:
            raise ValueError("SpatialNorm needs the quantized latent z_q")
        if zq.shape[-2:] != x.shape[-2:]:
            zq = F.interpolate(zq, size=x.shape[-2:], mode="nearest")
        return self.norm(x) * self.scale(zq) + self.shift(zq)


class Norm(nn.Module):
    """GroupNorm, or SpatialNorm when z_q channels are given; one call signature for both."""

    def __init__(self, channels: int, groups: int, zq_channels: int | None = None):
        super().__init__()
        self.spatial = zq_channels is not None
        if self.spatial:
            self.inner: nn.Module = SpatialNorm(channels, zq_channels, groups)
        else:
            self.inner = nn.GroupNorm(_groups(channels, groups), channels, eps=1e-6)

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        return self.inner(x, zq) if self.spatial else self.inner(x)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, groups: int, dropout: float = 0.0,
                 zq_channels: int | None = None):
        super().__init__()
        self.norm1 = Norm(c_in, groups, zq_channels)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = Norm(c_out, groups, zq_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x, zq)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h, zq))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions (only used at the lowest resolution)."""

    def __init__(self, channels: int, groups: int, zq_channels: int | None = None):
        super().__init__()
        self.norm = Norm(channels, groups, zq_channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x, zq)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1))
        return x + self.proj(out.squeeze(1).transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int, kind: str):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2) if kind == "conv" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, 2)
        # Pad right/bottom only so that H -> H/2 exactly for even H with a 3x3 stride-2 conv.
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig, out_channels: int):
        super().__init__()
        ch, mult, g = cfg.base_channels, cfg.channel_mult, cfg.norm_groups
        self.conv_in = nn.Conv2d(3, ch * mult[0], 3, padding=1)
        blocks: list[nn.Module] = []
        c = ch * mult[0]
        for level, m in enumerate(mult):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(c, ch * m, g, cfg.dropout))
                c = ch * m
            if level < len(mult) - 1:
                blocks.append(Downsample(c, cfg.downsample))
        self.down = nn.Sequential(*blocks)
        self.mid = nn.Sequential(
            ResBlock(c, c, g, cfg.dropout),
            AttnBlock(c, g) if cfg.attention else nn.Identity(),
            ResBlock(c, c, g, cfg.dropout),
        )
        self.norm_out = nn.GroupNorm(_groups(c, g), c, eps=1e-6)
        self.conv_out = nn.Conv2d(c, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.down(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig, in_channels: int):
        super().__init__()
        ch, mult, g = cfg.base_channels, cfg.channel_mult, cfg.norm_groups
        zq = in_channels if cfg.spatial_norm else None
        c = ch * mult[-1]
        self.conv_in = nn.Conv2d(in_channels, c, 3, padding=1)
        self.mid = nn.ModuleList([
            ResBlock(c, c, g, cfg.dropout, zq),
            AttnBlock(c, g, zq) if cfg.attention else nn.Identity(),
            ResBlock(c, c, g, cfg.dropout, zq),
        ])
        up: list[nn.Module] = []
        for level in reversed(range(len(mult))):
            for _ in range(cfg.num_res_blocks):
                up.append(ResBlock(c, ch * mult[level], g, cfg.dropout, zq))
                c = ch * mult[level]
            if level > 0:
                up.append(Upsample(c))
        self.up = nn.ModuleList(up)
        self.norm_out = Norm(c, g, zq)
        self.conv_out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        zq = z
        h = self.conv_in(z)
        for layer in (*self.mid, *self.up):
            h = layer(h, zq) if isinstance(layer, (ResBlock, AttnBlock)) else layer(h)
        return self.conv_out(F.silu(self.norm_out(h, zq)))
