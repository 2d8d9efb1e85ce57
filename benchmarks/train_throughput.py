"""How much does the trainer lose to everything that is not the model? And how close is the
model step to the machine's matmul rate?

Same process, same model size, same batch shape:
  * bare: a fixed batch already on the device; per step forward_process + forward + loss +
    backward + AdamW step (nothing else);
  * trainer: `trimodal.mdm_core.trainer.train` on `InMemoryBatches` (data iteration, host->device
    copy, lr schedule, stats, logging), steady-state tokens/s from its JSONL log.
Data-path overhead = 1 - trainer tok/s / bare tok/s (goal: <= 5% of step time); on a shared
machine that end-to-end ratio is noisy, so the trainer also reports, from the same steps, the
share of wall time it spent waiting for batches (`data_frac` in metrics.jsonl).
MFU-like = achieved FLOP/s (6N + attention per token) / measured dense matmul FLOP/s.

    python benchmarks/train_throughput.py [--steps 40 --d-model 256 --layers 4 --seq-len 256 --batch 8]
Writes benchmarks/results/train_throughput.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from trimodal.config import from_dict
from trimodal.mdm_core.config import TrainConfig
from trimodal.mdm_core.data import InMemoryBatches, synthetic_corpus
from trimodal.mdm_core.loss import TokenTables, forward_process, mdm_loss
from trimodal.mdm_core.optim import build_optimizer
from trimodal.mdm_core.schedules import MaskSchedule
from trimodal.io import resolve_device
from trimodal.mdm_core.trainer import build_model, dist_env, train
from trimodal.packing.vocab import Vocab

RESULTS = Path(__file__).parent / "results"


def matmul_flops(device: torch.device, n: int = 1024, reps: int = 10) -> float:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_tokens_per_s(cfg: TrainConfig, vocab: Vocab, tokens: torch.Tensor, steps: int,
                      device: torch.device) -> float:
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, vocab).to(device)
    opt = build_optimizer(model, cfg.optim, cfg.model.n_layers, fused=device.type == "cuda")
    tables = TokenTables.from_vocab(vocab).to(device)
    schedule = MaskSchedule.from_config(cfg.masking)
    batch = tokens[: cfg.data.batch_size].to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")

    def step() -> None:
        mb = forward_process(batch, tables, schedule, cfg.masking.t_eps, gen)
        with autocast:
            logits = model(mb.inputs, mb.modality, mb.pad)
        loss, _ = mdm_loss(logits, mb, tables)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch.numel() / (time.perf_counter() - t)


def trainer_tokens_per_s(cfg: TrainConfig, vocab: Vocab, tokens: torch.Tensor) -> tuple[float, float]:
    """(steady-state tokens/s, median share of wall time the loop waited for data)."""
    with tempfile.TemporaryDirectory() as out:
        cfg.out_dir = out
        train(cfg, vocab, InMemoryBatches(tokens.numpy(), cfg.data.batch_size, seed=cfg.seed))
        records = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    steady = [r for r in records if "tokens_per_s" in r][1:]  # first interval: warmup
    return (statistics.median(r["tokens_per_s"] for r in steady),
            statistics.median(r["data_frac"] for r in steady))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--text-size", type=int, default=4096)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    ap.add_argument("--out", default=str(RESULTS / "train_throughput.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    vocab = Vocab.from_sizes(args.text_size, 1024, 256, 4)
    log_every = max(1, args.steps // 4)
    cfg = from_dict(TrainConfig, {
        "model": {"d_model": args.d_model, "n_layers": args.layers, "n_heads": args.heads,
                  "max_len": args.seq_len},
        "data": {"batch_size": args.batch}, "device": args.device,
        "max_steps": args.steps + log_every, "log_every": log_every, "eval_every": 0,
        "ckpt_every": 0, "progress": False, "optim": {"warmup_steps": 5},
    })
    device = resolve_device(args.device, dist_env().local_rank)
    tokens = torch.from_numpy(synthetic_corpus(vocab, 8 * args.batch, args.seq_len, seed=0))

    # Alternate bare and trainer runs and take medians: on a shared machine the load drifts,
    # and back-to-back pairs see the same conditions.
    peaks, bares, trainers, data_fracs = [], [], [], []
    for _ in range(args.repeats):
        peaks.append(matmul_flops(device))
        bares.append(bare_tokens_per_s(cfg, vocab, tokens, args.steps, device))
        rate, frac = trainer_tokens_per_s(cfg, vocab, tokens)
        trainers.append(rate)
        data_fracs.append(frac)
    peak, bare, trainer, data_frac = (statistics.median(x) for x in (peaks, bares, trainers, data_fracs))
    flops_tok = build_model(cfg, vocab).flops_per_token(args.seq_len)
    result = {
        "device": str(device), "torch_threads": torch.get_num_threads(),
        "model": {"d_model": args.d_model, "layers": args.layers, "heads": args.heads,
                  "seq_len": args.seq_len, "batch": args.batch, "vocab": vocab.size,
                  "flops_per_token": flops_tok},
        "matmul_flops_per_s": peak,
        "bare_tokens_per_s": bare,
        "trainer_tokens_per_s": trainer,
        "data_path_overhead": 1.0 - trainer / bare,
        # Each repeat runs bare then trainer back to back: the per-pair ratio is less exposed
        # to load drift than the ratio of medians.
        "overhead_per_pair": [1.0 - t / b for b, t in zip(bares, trainers)],
        "overhead_median_of_pairs": statistics.median(1.0 - t / b for b, t in zip(bares, trainers)),
        "trainer_data_wait_frac": data_frac,
        "mfu_bare": bare * flops_tok / peak,
        "mfu_trainer": trainer * flops_tok / peak,
        "goal_overhead_max": 0.05,
        "repeats": {"matmul_flops_per_s": peaks, "bare_tokens_per_s": bares, "trainer_tokens_per_s": trainers},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print("\n| path | tokens/s | MFU-like | overhead vs bare |\n|---|---|---|---|")
    print(f"| bare fwd+bwd+step | {bare:,.0f} | {result['mfu_bare']:.1%} | - |")
    print(f"| trainer | {trainer:,.0f} | {result['mfu_trainer']:.1%} | {result['data_path_overhead']:.1%} |")
    print(f"median per-pair overhead: {result['overhead_median_of_pairs']:.1%} "
          f"(pairs: {', '.join(f'{x:.1%}' for x in result['overhead_per_pair'])})")
    print(f"\ntrainer's own measure: {data_frac:.2%} of step wall time waiting for data (fetch + copy)")
    print(f"\nmatmul rate {peak / 1e9:.1f} GFLOP/s on {device}; goal overhead <= 5%")


if __name__ == "__main__":
    main()
