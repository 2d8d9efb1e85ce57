"""Losses and training metrics of the image tokenizer.

Perceptual (LPIPS/VGG) loss is deliberately absent: it needs downloaded pretrained weights,
which this project never fetches; the trainer says so when a config asks for it.
"""

from __future__ import annotations

import math
from collections import deque

import torch
import torch.nn.functional as F
from torch import nn


def reconstruction_loss(x: torch.Tensor, recon: torch.Tensor, l1_weight: float,
                        l2_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    l1 = (recon - x).abs().mean()
    l2 = (recon - x).pow(2).mean()
    return l1_weight * l1 + l2_weight * l2, {"l1": l1.item(), "l2": l2.item()}


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of images in [-1,1], with peak 1 after mapping to [0,1]."""
    mse = float(((x.detach().float().clamp(-1, 1) - y.detach().float().clamp(-1, 1)) / 2).pow(2).mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


class PatchDiscriminator(nn.Module):
    """PatchGAN: a stack of stride-2 convs giving one real/fake logit per image patch.

    GroupNorm instead of BatchNorm so that the loss of a sample does not depend on the rest of
    its batch (and small CPU batches behave).
    """

    def __init__(self, channels: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, n_layers):
            c_next = channels * min(2**i, 8)
            layers += [nn.Conv2d(c, c_next, 4, 2, 1), nn.GroupNorm(math.gcd(c_next, 32), c_next), nn.LeakyReLU(0.2)]
            c = c_next
        c_next = channels * min(2**n_layers, 8)
        layers += [nn.Conv2d(c, c_next, 3, 1, 1), nn.GroupNorm(math.gcd(c_next, 32), c_next), nn.LeakyReLU(0.2),
                   nn.Conv2d(c_next, 1, 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


class CodeUsage:
    """Code histogram over the last `window` batches: how much of the codebook is alive.

    usage = fraction of codes seen at least once in the window; perplexity = exp(entropy) of
    the code distribution (equals the codebook size when all codes are equally used).
    """

    def __init__(self, codebook_size: int, window: int):
        self.codebook_size = codebook_size
        self.counts: deque[torch.Tensor] = deque(maxlen=max(1, window))

    def update(self, ids: torch.Tensor) -> None:
        self.counts.append(torch.bincount(ids.detach().reshape(-1).cpu(), minlength=self.codebook_size))

    def stats(self) -> dict[str, float]:
        if not self.counts:
            return {"usage": 0.0, "perplexity": 0.0}
        total = torch.stack(list(self.counts)).sum(0).double()
        p = total / total.sum()
        nz = p[p > 0]
        return {"usage": float((total > 0).double().mean()),
                "perplexity": float(torch.exp(-(nz * nz.log()).sum()))}

    def state(self) -> torch.Tensor:
        if not self.counts:
            return torch.zeros(0, self.codebook_size, dtype=torch.long)
        return torch.stack(list(self.counts))

    def restore(self, state: torch.Tensor) -> None:
        self.counts.clear()
        for row in state:
            self.counts.append(row.clone())
