"""Tiny generated images and tiny configs for the image tokenizer tests."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from trimodal.tokenizers.image import AutoencoderConfig, ImageTokenizerConfig, QuantizerConfig
from trimodal.tokenizers.image.train import ImageTrainConfig, LossConfig, OptimConfig

COLOURS = [(220, 40, 40), (40, 170, 60), (40, 80, 220), (235, 210, 40)]


def shape_images(n: int, size: int = 16, seed: int = 0) -> list[Image.Image]:
    """Coloured circles/squares/triangles on a light background, like the demo corpus."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = Image.new("RGB", (size, size), (245, 245, 240))
        d = ImageDraw.Draw(img)
        r = size * rng.uniform(0.2, 0.35)
        cx, cy = rng.uniform(r, size - r, 2)
        colour = COLOURS[rng.integers(len(COLOURS))]
        kind = rng.integers(3)
        box = (cx - r, cy - r, cx + r, cy + r)
        if kind == 0:
            d.ellipse(box, fill=colour)
        elif kind == 1:
            d.rectangle(box, fill=colour)
        else:
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        out.append(img)
    return out


def tiny_model(kind: str, factor: int = 4, image_size: int = 16, **quant) -> ImageTokenizerConfig:
    q = {"movq": dict(codebook_size=64, codebook_dim=8), "fsq": dict(codebook_size=256),
         "lfq": dict(codebook_size=64)}[kind] | quant
    levels = {4: 3, 8: 4, 16: 5}[factor]
    return ImageTokenizerConfig(
        image_size=image_size,
        autoencoder=AutoencoderConfig(downsample_factor=factor, base_channels=8, channel_mult=(1,) * levels,
                                      spatial_norm=kind == "movq"),
        quantizer=QuantizerConfig(kind=kind, **q),
    )


def tiny_train(kind: str, steps: int, **quant) -> ImageTrainConfig:
    return ImageTrainConfig(model=tiny_model(kind, **quant), optim=OptimConfig(lr=3e-3, warmup_steps=2),
                            loss=LossConfig(), batch_size=8, steps=steps, log_every=5, ckpt_every=1000,
                            device="cpu")


def random_images(b: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def one_thread():
    """Tiny convolutions run several times faster on one thread than on two busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
