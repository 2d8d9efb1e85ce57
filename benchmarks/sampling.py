"""How many unmasking steps does sampling need, and what do they cost?

A tiny MDM transformer is trained on a known caption -> image set where every caption has
*two* valid images (a multi-modal target: the case where parallel decoding goes wrong). Each
sample is then scored against the set:
  * coherent: the sampled image equals one of its caption's valid images exactly. Unmasking
    everything in one step draws every position independently, mixing the two modes, so
    coherence is what extra steps buy;
  * token acc: fraction of positions equal to the closest valid image;
  * tokens/s: generated target tokens per wall-clock second (forward passes included).
Rows sweep steps x schedule x temperature, plus CFG (one forward of 2B per step).

    python benchmarks/sampling.py [--train-steps 400 --samples 64 --device cpu]
Writes benchmarks/results/sampling.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from trimodal.mdm_core.config import ModelConfig
from trimodal.mdm_core.model import MDMTransformer, modality_logit_bias
from trimodal.mdm_core.sampler import (
    generate, image_codes, media_prompt, model_logits_fn, pair_layout, unconditional_tokens,
)
from trimodal.mdm_core.sampling_config import SamplingConfig
from trimodal.packing.vocab import Vocab

RESULTS = Path(__file__).parent / "results"
GRID = (4, 4)


def dataset(n_captions: int, seed: int) -> tuple[Vocab, list[np.ndarray], np.ndarray]:
    """Captions (local text ids) and images [n_captions, 2, h, w] (two valid images each)."""
    rng = np.random.default_rng(seed)
    vocab = Vocab.from_sizes(text_size=32, image_size=32)
    captions = [rng.integers(0, 32, 6) for _ in range(n_captions)]
    images = rng.integers(0, 32, (n_captions, 2, *GRID))
    return vocab, captions, images


def train_model(vocab: Vocab, captions: list[np.ndarray], images: np.ndarray, steps: int,
                device: torch.device, seed: int) -> MDMTransformer:
    """Absorbing-process training with the linear schedule (CE on masked image/text positions)
    and 10% caption drop so that the CFG rows mean something."""
    torch.manual_seed(seed)
    model = MDMTransformer(ModelConfig(d_model=96, n_layers=3, n_heads=4, max_len=64, vocab_size=vocab.size),
                           modality_logit_bias(vocab)).to(device)
    rows = [pair_layout(vocab, "image_text", "image", vocab.to_global("image", images[c, v].reshape(-1)),
                        vocab.to_global("text", captions[c]))[0]
            for c in range(len(captions)) for v in range(2)]
    clean = torch.from_numpy(np.stack(rows)).to(device)
    table = torch.from_numpy(vocab.modality_of(np.arange(vocab.size))).to(device)
    content = (clean < vocab.range("image")[1])
    text_content = clean < vocab.range("text")[1]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    reps = max(1, 64 // clean.shape[0])
    batch, maskable, is_text = clean.repeat(reps, 1), content.repeat(reps, 1), text_content.repeat(reps, 1)
    pad = torch.zeros_like(batch, dtype=torch.bool)
    model.train()
    for _ in range(steps):
        t = torch.rand(batch.shape[0], 1, device=device)
        masked = (torch.rand(batch.shape, device=device) < t) & maskable
        drop = (torch.rand(batch.shape[0], 1, device=device) < 0.1) & is_text
        x = unconditional_tokens(vocab, unconditional_tokens(vocab, batch, masked), drop)
        logits = model(x, modality=table[x], pad_mask=pad)
        keep = masked & ~drop
        loss = torch.nn.functional.cross_entropy(logits[keep].float(), batch[keep])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def score(samples: np.ndarray, which: np.ndarray, images: np.ndarray) -> tuple[float, float]:
    valid = images[which]  # [N, 2, h, w]
    same = (samples[:, None] == valid).reshape(len(samples), 2, -1)
    acc = same.mean(-1).max(-1)
    return float((acc == 1.0).mean()), float(acc.mean())


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    vocab, captions, images = dataset(args.captions, args.seed)
    t0 = time.perf_counter()
    model = train_model(vocab, captions, images, args.train_steps, device, args.seed)
    train_s = time.perf_counter() - t0
    fn = model_logits_fn(model, vocab)
    which = np.arange(args.samples) % len(captions)
    prompt = media_prompt(vocab, [captions[i] for i in which], "image", GRID[0] * GRID[1]).to(device)
    settings = []
    for steps in args.steps:
        for schedule in ("linear", "cosine"):
            for temp in (1.0, 0.0):
                settings.append(SamplingConfig(steps=steps, schedule=schedule, temperature=temp))
    settings.append(SamplingConfig(steps=8, schedule="cosine", temperature=1.0, cfg_scale=0.0))
    settings.append(SamplingConfig(steps=8, schedule="cosine", temperature=1.0, cfg_scale=2.0))
    settings.append(SamplingConfig(steps=8, schedule="cosine", temperature=1.0, remasking="random"))
    rows = []
    for cfg in settings:
        generate(fn, vocab, prompt, cfg)  # warm-up (allocations, kernels)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        out = generate(fn, vocab, prompt, cfg)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t
        coherent, acc = score(image_codes(vocab, out, prompt, GRID), which, images)
        rows.append({"steps": cfg.steps, "schedule": cfg.schedule, "temperature": cfg.temperature,
                     "remasking": cfg.remasking, "cfg_scale": cfg.cfg_scale, "coherent": coherent,
                     "token_acc": acc, "tokens_per_s": args.samples * GRID[0] * GRID[1] / dt,
                     "seconds": dt})
    return {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "captions": args.captions, "images_per_caption": 2, "grid": list(GRID), "samples": args.samples,
            "train_steps": args.train_steps, "train_seconds": train_s, "rows": rows}


def markdown(result: dict) -> str:
    lines = [f"sampling on {result['device']} ({result['samples']} samples of {result['grid'][0]}x"
             f"{result['grid'][1]} codes, {result['captions']} captions x 2 valid images, "
             f"model trained {result['train_steps']} steps)", "",
             "| steps | schedule | temp | remasking | cfg | coherent | token acc | tokens/s |",
             "|---:|---|---:|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        cfg = "-" if r["cfg_scale"] is None else f"{r['cfg_scale']:g}"
        lines.append(f"| {r['steps']} | {r['schedule']} | {r['temperature']:g} | {r['remasking']} | {cfg} | "
                     f"{r['coherent']:.2f} | {r['token_acc']:.3f} | {r['tokens_per_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--captions", type=int, default=4)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (tiny ops: 1 is fastest)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "sampling.json"))
    args = ap.parse_args()
    result = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
