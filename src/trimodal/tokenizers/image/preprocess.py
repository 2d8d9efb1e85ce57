"""PIL <-> tensor conversions of the image tokenizer.

Kept free of any model code so that DataLoader workers of tokenization jobs can import and
call `preprocess` cheaply (it is a pure function of the image and the target size).
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch
from PIL import Image

POLICIES = ("center_crop", "resize", "pad")

#: Fill colour of "pad" (mid grey is 0 in [-1, 1] space, the least surprising border).
PAD_FILL = (128, 128, 128)


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def load_image(data: bytes | str, where: str = "<bytes>") -> Image.Image:
    """Decode image bytes (or a local path) to RGB; raises ValueError naming `where` if bad."""
    try:
        img = Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data)
        img.load()
    except Exception as err:  # PIL raises many types for corrupt data
        raise ValueError(f"{where}: not a readable image ({type(err).__name__}: {err})") from err
    return img.convert("RGB")


def preprocess(pil: Image.Image, size: int | tuple[int, int], policy: str = "center_crop") -> torch.Tensor:
    """One PIL image -> float tensor [3,H,W] in [-1,1] at `size` (int or (H, W)).

    center_crop: scale the short side to fit, crop the centre (keeps aspect, loses borders);
    resize: stretch to the size (keeps everything, distorts aspect);
    pad: scale the long side to fit, pad with grey (keeps everything and aspect).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown resize policy {policy!r}; use one of {list(POLICIES)}")
    h, w = _size_hw(size)
    img = pil.convert("RGB")
    iw, ih = img.size
    if iw < 1 or ih < 1:
        raise ValueError(f"image has no pixels ({iw}x{ih})")
    if policy == "resize":
        img = img.resize((w, h), Image.BICUBIC)
    elif policy == "center_crop":
        scale = max(w / iw, h / ih)
        nw, nh = max(w, round(iw * scale)), max(h, round(ih * scale))
        img = img.resize((nw, nh), Image.BICUBIC) if (nw, nh) != (iw, ih) else img
        left, top = (nw - w) // 2, (nh - h) // 2
        img = img.crop((left, top, left + w, top + h))
    else:
        scale = min(w / iw, h / ih)
        nw, nh = max(1, min(w, round(iw * scale))), max(1, min(h, round(ih * scale)))
        img = img.resize((nw, nh), Image.BICUBIC) if (nw, nh) != (iw, ih) else img
        canvas = Image.new("RGB", (w, h), PAD_FILL)
        canvas.paste(img, ((w - nw) // 2, (h - nh) // 2))
        img = canvas
    arr = np.asarray(img, dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().div_(127.5).sub_(1.0)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Float images [B,3,H,W] (or [3,H,W]) in [-1,1] -> RGB PIL images (values clamped)."""
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [B,3,H,W], got shape {tuple(images.shape)}")
    arr = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in arr]


def stack(images: Sequence[Image.Image], size: int | tuple[int, int], policy: str = "center_crop") -> torch.Tensor:
    return torch.stack([preprocess(im, size, policy) for im in images])
