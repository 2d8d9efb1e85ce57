"""How much of the bare image encoder's speed does the whole tokenization job keep?

Same model, same images, same run. The bare figure is `ImageTokenizer.encode` on images
already decoded, resized and stacked as tensors (the ceiling: pure device compute), at every
candidate torch thread count; the *best* one is the baseline. The job figure is `run_job` end
to end with its *default* settings (threads: cores - workers on CPU) on the same images stored
as JPEG files: reading, decoding and resizing in DataLoader workers, batching, encoding,
writing parquet tables and stats. A caption folder and WebDataset tars are both measured.
Goal: job >= 0.8x bare.

Rounds interleave bare and job runs, so load drift on a shared machine hits both; each figure
is reported as best, median and spread over rounds. The fixed cost of a job (worker start,
first batch, first parquet write) is measured separately on a one-batch corpus and also taken
out of a "steady" figure, so a short benchmark neither hides it nor is dominated by it. CPU
seconds per image (all processes) are recorded too: they are much less sensitive to other
tenants than wall time and show the job's extra work directly.

    python benchmarks/tokenize_image.py [--images 1024] [--rounds 3] [--workers 2]

Prints JSON and a markdown table; writes benchmarks/results/tokenize_image.json.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import resource
import shutil
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from trimodal.corpora.image import ImageCorpusOptions, open_image_corpus
from trimodal.jobs.image import ImageEncoder, open_image
from trimodal.io import resolve_device
from trimodal.jobs.runner import JobConfig, cpu_cores, encoder_threads, run_job
from trimodal.tokenizers.image import (
    AutoencoderConfig, ImageTokenizer, ImageTokenizerConfig, QuantizerConfig, preprocess,
)
from trimodal.tokenizers.text import TextTokenizer, TextTokenizerConfig

FORMATS = ("folder", "wds")


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


def write_corpora(root: Path, samples: list[tuple[str, bytes, str]], n_tars: int) -> None:
    (root / "folder").mkdir(parents=True)
    for key, data, cap in samples:
        (root / "folder" / f"{key}.jpg").write_bytes(data)
        (root / "folder" / f"{key}.txt").write_text(cap)
    (root / "wds").mkdir()
    per_tar = max(1, -(-len(samples) // n_tars))
    for t in range(0, len(samples), per_tar):
        with tarfile.open(root / "wds" / f"{t // per_tar:05d}.tar", "w") as tar:
            for key, data, cap in samples[t:t + per_tar]:
                for ext, blob in (("jpg", data), ("txt", cap.encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the DataLoader workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bare_run(tok: ImageTokenizer, pixels: torch.Tensor, batch: int, device: torch.device,
             threads: int) -> dict[str, float]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        tok.to(device)
        x = pixels.to(device)
        tok.encode(x[:batch])  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        c0, t0 = cpu_seconds(), time.perf_counter()
        for i in range(0, len(x), batch):
            tok.encode(x[i:i + batch])
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    finally:
        torch.set_num_threads(before)
    return {"images_per_s": len(x) / wall, "cpu_ms_per_image": 1e3 * cpu / len(x)}


def job_run(corpus_path: Path, fmt: str, out: Path, encoder: ImageEncoder, args, n: int,
            device: torch.device) -> dict[str, float]:
    corpus = open_image_corpus(str(corpus_path), fmt, ImageCorpusOptions(name=fmt, unit_size=args.unit_size))
    c0, t0 = cpu_seconds(), time.perf_counter()
    rep = run_job(corpus, encoder, JobConfig(out=str(out), batch_size=args.batch_size, workers=args.workers,
                                             device=str(device), progress=False))
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    if rep["samples_ok"] != n:
        raise RuntimeError(f"job encoded {rep['samples_ok']} of {n} images: {rep}")
    return {"images_per_s": n / wall, "seconds": wall, "cpu_ms_per_image": 1e3 * cpu / n}


def spread(values: list[float]) -> dict[str, float]:
    return {"best": round(max(values), 2), "median": round(statistics.median(values), 2),
            "min": round(min(values), 2), "rounds": [round(v, 2) for v in values]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--bare-images", type=int, default=256, help="images per bare run (after warm-up)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--source-size", type=int, default=96, help="stored JPEG side")
    ap.add_argument("--image-size", type=int, default=64, help="tokenizer input side")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--unit-size", type=int, default=256, help="folder samples per unit; also images per tar")
    ap.add_argument("--workers", type=int, default=JobConfig(out="-").workers,
                    help="job DataLoader workers (default: the job's default)")
    ap.add_argument("--bare-threads", default="", help="comma list; default 1..cores")
    ap.add_argument("--base-channels", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "tokenize_image.json"))
    args = ap.parse_args()

    device = resolve_device(args.device)
    cores = cpu_cores()
    bare_threads = [int(t) for t in args.bare_threads.split(",")] if args.bare_threads \
        else list(range(1, cores + 1))
    if device.type != "cpu":
        bare_threads = [torch.get_num_threads()]
    torch.manual_seed(0)
    cfg = ImageTokenizerConfig(image_size=args.image_size,
                               autoencoder=AutoencoderConfig(downsample_factor=8, base_channels=args.base_channels),
                               quantizer=QuantizerConfig(kind="fsq", codebook_size=4096))
    image_tok = ImageTokenizer(cfg).eval()
    text_tok = TextTokenizer.train([f"a picture number {i} with circles" for i in range(200)],
                                   config=TextTokenizerConfig(vocab_size=300, hard_vocab_limit=False))
    encoder = ImageEncoder(image_tok, text_tok, image_size=args.image_size)
    job_threads = encoder_threads(JobConfig(out="-", workers=args.workers), device)
    root = Path(tempfile.mkdtemp(prefix="tokbench-"))
    bare: dict[int, list[dict]] = {t: [] for t in bare_threads}
    jobs: dict[str, list[dict]] = {f: [] for f in FORMATS}
    startup: list[float] = []
    try:
        samples = [(f"{i:06d}", scene(i, args.source_size), f"a picture number {i} with circles")
                   for i in range(args.images)]
        write_corpora(root / "big", samples, n_tars=max(1, -(-args.images // args.unit_size)))
        write_corpora(root / "one_batch", samples[:args.batch_size], n_tars=1)
        pixels = torch.stack([preprocess(open_image(d, k), args.image_size, "center_crop")
                              for k, d, _ in samples[:args.bare_images]])
        # One untimed job first: it pays the once-per-process costs (the first table write
        # imports pandas through pyarrow, 0.25-0.7 s) that a real job pays once for millions of
        # images; the bare side gets its warm-up batch too.
        job_run(root / "one_batch" / "folder", "folder", root / "warmup", encoder, args,
                args.batch_size, device)
        run = 0
        for r in range(args.rounds):
            for t in bare_threads:
                bare[t].append(bare_run(image_tok, pixels, args.batch_size, device, t))
            for fmt in FORMATS if r % 2 == 0 else FORMATS[::-1]:  # neither always runs second
                run += 1
                jobs[fmt].append(job_run(root / "big" / fmt, fmt, root / f"out{run}", encoder, args,
                                         args.images, device))
            run += 1
            tiny = job_run(root / "one_batch" / "folder", "folder", root / f"out{run}", encoder, args,
                           args.batch_size, device)
            best_bare_now = max(b[-1]["images_per_s"] for b in bare.values())
            startup.append(tiny["seconds"] - args.batch_size / best_bare_now)
            print(f"round {r + 1}/{args.rounds}: bare "
                  + ", ".join(f"{t} threads {bare[t][-1]['images_per_s']:.1f}" for t in bare_threads)
                  + "; job " + ", ".join(f"{f} {jobs[f][-1]['images_per_s']:.1f}" for f in FORMATS)
                  + f" images/s; startup {startup[-1]:.2f} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    bare_ips = {t: [b["images_per_s"] for b in bare[t]] for t in bare_threads}
    best_threads = max(bare_threads, key=lambda t: statistics.median(bare_ips[t]))
    # Per round, the job against that round's best bare setting: paired, so drift cancels.
    best_bare_round = [max(bare_ips[t][r] for t in bare_threads) for r in range(args.rounds)]
    fixed = max(0.0, statistics.median(startup))
    results = {}
    for fmt in FORMATS:
        ips = [j["images_per_s"] for j in jobs[fmt]]
        steady = [args.images / max(1e-9, j["seconds"] - fixed) for j in jobs[fmt]]
        paired = [j / b for j, b in zip(ips, best_bare_round)]
        results[fmt] = {
            "images_per_s": spread(ips),
            "ratio_to_best_bare": round(max(ips) / max(max(v) for v in bare_ips.values()), 3),
            "ratio_paired_median": round(statistics.median(paired), 3),
            "ratio_paired_rounds": [round(p, 3) for p in paired],
            "steady_ratio_paired_median": round(statistics.median(
                [s / b for s, b in zip(steady, best_bare_round)]), 3),
            "cpu_ms_per_image_median": round(statistics.median(j["cpu_ms_per_image"] for j in jobs[fmt]), 2),
        }
    report = {
        "question": "job images/s (read+decode+encode+write, end to end, default settings) vs the "
                    "bare encoder on preloaded tensors at its best thread count",
        "device": str(device), "cores": cores, "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "images": args.images, "bare_images": args.bare_images, "rounds": args.rounds,
        "source_size": args.source_size, "image_size": args.image_size, "batch_size": args.batch_size,
        "unit_size": args.unit_size, "workers": args.workers, "job_threads": job_threads,
        "tokenizer": image_tok.name, "base_channels": args.base_channels,
        "bare": {str(t): {**spread(bare_ips[t]), "cpu_ms_per_image_median": round(
            statistics.median(b["cpu_ms_per_image"] for b in bare[t]), 2)} for t in bare_threads},
        "bare_best_threads": best_threads,
        "job": results,
        "job_fixed_startup_s": {"median": round(fixed, 3), "rounds": [round(s, 3) for s in startup]},
        "goal_ratio": 0.8,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print()
    print(f"{args.images} images, {args.rounds} rounds, {cores} cores; job: {args.workers} workers, "
          f"{job_threads} encoder threads (default); fixed job startup {fixed:.2f} s (median)")
    print()
    print("| run | images/s best | median | min | ratio (paired median) | ratio (best/best) | CPU ms/image |")
    print("|---|---|---|---|---|---|---|")
    for t in bare_threads:
        s = report["bare"][str(t)]
        mark = " (best)" if t == best_threads else ""
        print(f"| bare encoder, {t} threads{mark} | {s['best']:.1f} | {s['median']:.1f} | {s['min']:.1f} | "
              f"| | {s['cpu_ms_per_image_median']:.1f} |")
    for fmt, r in results.items():
        s = r["images_per_s"]
        print(f"| job, {fmt} | {s['best']:.1f} | {s['median']:.1f} | {s['min']:.1f} | "
              f"{r['ratio_paired_median']:.2f} | {r['ratio_to_best_bare']:.2f} | {r['cpu_ms_per_image_median']:.1f} |")


if __name__ == "__main__":
    main()
