"""Does the small CPU preset of each image quantizer learn the demo scenes in a few minutes?

Trains `cpu_preset(kind)` for each kind on rendered demo scenes (the demo corpus renderer, so
the figures apply to `make demo`), then measures held-out PSNR of encode -> decode, code usage
and wall time. Writes a side-by-side PNG (top row: input, then one row per variant).

    python benchmarks/image_tokenizer_train.py [--steps 1200] [--kinds fsq lfq movq] [--threads 1]

Prints JSON and a markdown table; writes benchmarks/results/image_tokenizer_train.json and
docs/image_tokenizer_recon.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trimodal.corpora.demo import random_scene, render_scene
from trimodal.tokenizers.image import preprocess, to_pil
from trimodal.tokenizers.image.losses import psnr
from trimodal.tokenizers.image.train import cpu_preset, train

ROOT = Path(__file__).resolve().parents[1]


def scenes(n: int, size: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [render_scene(random_scene(rng), size, rng) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--kinds", nargs="+", default=["fsq", "lfq", "movq"])
    ap.add_argument("--images", type=int, default=600, help="training images (the demo corpus has 600)")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core CPU)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "image_tokenizer_train.json"))
    ap.add_argument("--figure", default=str(ROOT / "docs" / "image_tokenizer_recon.png"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    train_imgs = scenes(args.images, args.image_size, seed=0)
    held = torch.stack([preprocess(im, args.image_size) for im in scenes(64, args.image_size, seed=1)])
    rows, recon_rows = [], [held[:8]]
    for kind in args.kinds:
        cfg = cpu_preset(kind, args.image_size)
        cfg.steps = args.steps
        cfg.device = "cpu"
        with tempfile.TemporaryDirectory() as tmp:
            res = train(cfg, train_imgs, out=tmp, progress=False)
        tok = res.tokenizer
        t0 = time.perf_counter()
        ids = tok.encode(held)
        recon = tok.decode(ids)
        codec_s = time.perf_counter() - t0
        used = int(torch.unique(ids).numel())
        rows.append({
            "kind": kind, "name": tok.name, "steps": res.step, "batch_size": cfg.batch_size,
            "params": sum(p.numel() for p in tok.parameters()), "vocab_size": tok.vocab_size,
            "grid": list(tok.grid(args.image_size)), "train_seconds": round(res.seconds, 1),
            "heldout_psnr_db": round(psnr(held, recon), 2), "train_psnr_db": round(res.metrics["psnr"], 2),
            "heldout_codes_used": used, "train_usage": round(res.metrics["usage"], 3),
            "train_perplexity": round(res.metrics["perplexity"], 1),
            "encode_decode_images_per_s": round(len(held) / codec_s, 1),
        })
        recon_rows.append(recon[:8])
        print(json.dumps(rows[-1]), flush=True)

    result = {"benchmark": "image_tokenizer_train", "image_size": args.image_size, "images": args.images,
              "threads": args.threads, "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    pics = to_pil(torch.cat(recon_rows))
    s = args.image_size
    grid = Image.new("RGB", (8 * s, len(recon_rows) * s), "white")
    for i, im in enumerate(pics):
        grid.paste(im, ((i % 8) * s, (i // 8) * s))
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    grid.resize((grid.width * 3, grid.height * 3), Image.NEAREST).save(args.figure)

    print("| variant | params | vocab | grid | steps | train s | held-out PSNR dB | codes used (64 imgs) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['params']} | {r['vocab_size']} | {r['grid'][0]}x{r['grid'][1]} | {r['steps']} "
              f"| {r['train_seconds']} | {r['heldout_psnr_db']} | {r['heldout_codes_used']} |")


if __name__ == "__main__":
    main()
