"""How much of the bare image encoder's speed does the whole tokenization job keep?

Same model, same images, same run. The bare figure is `ImageTokenizer.encode` on images
already decoded, resized and stacked as tensors (the ceiling: pure device compute). The job
figure is `run_job` end to end on the same images stored as JPEG files: reading, decoding and
resizing in DataLoader workers, batching, encoding, writing parquet tables and stats. Both a
caption folder and a WebDataset tar are measured. Goal: job >= 0.8x bare.

    python benchmarks/tokenize_image.py [--images 512] [--image-size 64] [--workers 1]

Prints JSON and a markdown table; writes benchmarks/results/tokenize_image.json.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from trimodal.corpora.image import ImageCorpusOptions, open_image_corpus
from trimodal.jobs.image import ImageEncoder, open_image
from trimodal.jobs.runner import JobConfig, resolve_device, run_job
from trimodal.tokenizers.image import (
    AutoencoderConfig, ImageTokenizer, ImageTokenizerConfig, QuantizerConfig, preprocess,
)
from trimodal.tokenizers.text import TextTokenizer, TextTokenizerConfig


def scene(i: int, size: int) -> bytes:
    """A JPEG with a few shapes on noise (realistic decode cost, not a flat colour)."""
    rng = np.random.default_rng(i)
    arr = (rng.normal(128, 30, (size, size, 3))).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x, y = rng.integers(0, size - 20, 2)
        draw.ellipse([int(x), int(y), int(x) + 20, int(y) + 20], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_corpora(root: Path, n: int, size: int) -> list[tuple[str, bytes, str]]:
    samples = [(f"{i:06d}", scene(i, size), f"a picture number {i} with circles") for i in range(n)]
    (root / "folder").mkdir(parents=True)
    for key, data, cap in samples:
        (root / "folder" / f"{key}.jpg").write_bytes(data)
        (root / "folder" / f"{key}.txt").write_text(cap)
    (root / "wds").mkdir()
    per_tar = max(1, n // 4)
    for t in range(0, n, per_tar):
        with tarfile.open(root / "wds" / f"{t // per_tar:05d}.tar", "w") as tar:
            for key, data, cap in samples[t:t + per_tar]:
                for ext, blob in (("jpg", data), ("txt", cap.encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))
    return samples


def bare_images_per_s(tok: ImageTokenizer, pixels: torch.Tensor, batch: int, device: torch.device) -> float:
    tok.to(device)
    x = pixels.to(device)
    tok.encode(x[:batch])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        tok.encode(x[i:i + batch])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(x) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--source-size", type=int, default=96, help="stored JPEG side")
    ap.add_argument("--image-size", type=int, default=64, help="tokenizer input side")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--base-channels", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "tokenize_image.json"))
    args = ap.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    cfg = ImageTokenizerConfig(image_size=args.image_size,
                               autoencoder=AutoencoderConfig(downsample_factor=8, base_channels=args.base_channels),
                               quantizer=QuantizerConfig(kind="fsq", codebook_size=4096))
    image_tok = ImageTokenizer(cfg).eval()
    text_tok = TextTokenizer.train([f"a picture number {i} with circles" for i in range(200)],
                                   config=TextTokenizerConfig(vocab_size=300, hard_vocab_limit=False))
    root = Path(tempfile.mkdtemp(prefix="tokbench-"))
    try:
        samples = write_corpora(root, args.images, args.source_size)
        pixels = torch.stack([preprocess(open_image(d, k), args.image_size, "center_crop")
                              for k, d, _ in samples])
        bare = bare_images_per_s(image_tok, pixels, args.batch_size, device)
        results = {}
        for fmt in ("folder", "wds"):
            corpus = open_image_corpus(str(root / fmt), fmt, ImageCorpusOptions(name=fmt, unit_size=max(1, args.images // 4)))
            encoder = ImageEncoder(image_tok, text_tok, image_size=args.image_size)
            t0 = time.perf_counter()
            rep = run_job(corpus, encoder, JobConfig(out=str(root / f"out_{fmt}"), batch_size=args.batch_size,
                                                     workers=args.workers, device=str(device), progress=False))
            seconds = time.perf_counter() - t0
            assert rep["samples_ok"] == args.images, rep
            results[fmt] = {"images_per_s": round(args.images / seconds, 2)}
        # The bare run again after the jobs: the ratio uses the mean of both, so machine-load
        # drift during the run does not favour either side; the spread shows the noise.
        bare_after = bare_images_per_s(image_tok, pixels, args.batch_size, device)
        for r in results.values():
            r["ratio_to_bare"] = round(r["images_per_s"] / ((bare + bare_after) / 2), 3)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    report = {
        "question": "job images/s (decode+encode+write, end to end) vs bare encoder on preloaded tensors",
        "device": str(device), "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "images": args.images, "source_size": args.source_size, "image_size": args.image_size,
        "batch_size": args.batch_size, "workers": args.workers, "tokenizer": image_tok.name,
        "base_channels": args.base_channels,
        "bare_images_per_s": round(bare, 2), "bare_images_per_s_after": round(bare_after, 2),
        "job": results, "goal_ratio": 0.8,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print()
    print("| run | images/s | ratio to bare |")
    print("|---|---|---|")
    print(f"| bare encoder (preloaded tensors), before / after | {bare:.1f} / {bare_after:.1f} | 1.00 (mean) |")
    for fmt, r in results.items():
        print(f"| job, {fmt}, {args.workers} workers | {r['images_per_s']:.1f} | {r['ratio_to_bare']:.2f} |")


if __name__ == "__main__":
    main()
