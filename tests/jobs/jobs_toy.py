"""A tiny deterministic encoder and corpus generators for the job tests (no trained model)."""

from __future__ import annotations

import io
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from trimodal.corpora.samples import ImageText
from trimodal.jobs.image import open_image
from trimodal.jobs.protocol import SkipSample
from trimodal.packing.table import TokenRow


@dataclass
class ToyPrepared:
    key: str
    source: str
    pixels: torch.Tensor
    text_ids: np.ndarray


class ToyEncoder:
    """Average-pool to 4x4, quantize the grey level to 16 ids. Optionally fail or dawdle."""

    name = "toy-4x4-16"
    tokenizer_hash = "toyhash000000000"

    def __init__(self, fail_after_batches: int | None = None, sleep_per_batch: float = 0.0):
        self.fail_after_batches = fail_after_batches
        self.sleep_per_batch = sleep_per_batch
        self.batches = 0

    def prepare(self, sample: ImageText) -> ToyPrepared:
        img = open_image(sample.image, sample.key).resize((8, 8), Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
        text = np.frombuffer(sample.caption.encode(), dtype=np.uint8).astype(np.int32)
        return ToyPrepared(sample.key, sample.source, pixels, text)

    def encode(self, prepared: list[ToyPrepared], device) -> list[TokenRow]:
        if self.fail_after_batches is not None and self.batches >= self.fail_after_batches:
            raise RuntimeError("simulated crash")
        self.batches += 1
        if self.sleep_per_batch:
            time.sleep(self.sleep_per_batch)
        x = torch.stack([p.pixels for p in prepared]).to(device)
        grey = F.avg_pool2d(x, 2).mean(dim=1)
        ids = ((grey + 1) / 2 * 15).round().clamp(0, 15).to(torch.int32).cpu().numpy()
        return [TokenRow(key=p.key, source=p.source, task="image_text", text_ids=p.text_ids,
                         modality="image", ids=g.reshape(-1), shape=g.shape,
                         tokenizer=self.name, tokenizer_hash=self.tokenizer_hash)
                for p, g in zip(prepared, ids)]


def image_bytes(i: int, fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(i)
    arr = rng.integers(0, 256, size=(16, 20, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def make_folder(root: Path, n_dirs: int = 3, per_dir: int = 7) -> list[str]:
    """Good samples only; returns their keys in corpus order."""
    keys = []
    for d in range(n_dirs):
        sub = root / f"d{d}"
        sub.mkdir(parents=True)
        for i in range(per_dir):
            (sub / f"{i:03d}.jpg").write_bytes(image_bytes(d * 100 + i))
            (sub / f"{i:03d}.txt").write_text(f"image {d} {i}")
            keys.append(f"d{d}/{i:03d}")
    return keys


def add_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
