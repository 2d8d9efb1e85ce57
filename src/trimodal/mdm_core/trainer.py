"""The training loop: one file, top to bottom (in the spirit of nanoGPT's train.py).

    train(cfg, vocab, data, eval_data)

`data` is any iterable of batch dicts with "tokens" [B, L] (the shard reader, or
`InMemoryBatches`); when it has `state_dict`/`load_state_dict` its position is checkpointed.
Under `torchrun` each process passes its own rank's data. One optimizer step consumes
`grad_accum` batches per process; the masking noise of micro-batch k on rank r at step s is
seeded from (seed, s, k * world + r), which makes a resumed run, and a W-process run versus a
single process accumulating W micro-batches, draw identical masks.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import posixpath
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import fsspec
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from trimodal.config import ConfigError, save as save_config, to_dict
from trimodal.io import atomic_write, atomic_write_json, resolve_device
from trimodal.launch import local_rank, resolve_rank
from trimodal.mdm_core import checkpoint as ckpt
from trimodal.mdm_core import parallel
from trimodal.mdm_core.config import MaskingConfig, TrainConfig
from trimodal.mdm_core.loss import (MaskedBatch, TokenTables, add_stats, forward_process, mdm_loss,
                                    pair_rows, summarize)
from trimodal.mdm_core.model import MDMTransformer, modality_logit_bias
from trimodal.mdm_core.optim import build_optimizer, set_lr
from trimodal.mdm_core.sampler import condition_drop_mask, unconditional_tokens
from trimodal.mdm_core.schedules import MaskSchedule, lr_factor
from trimodal.mdm_core.sde import SDEResolved, resolve_sde
from trimodal.packing.vocab import Vocab

log = logging.getLogger(__name__)


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)  # per optimizer step, rank-averaged
    eval: list[dict] = field(default_factory=list)
    sde: SDEResolved | None = None


def dist_env() -> DistEnv:
    """Rank, world size and local rank from torchrun's or SLURM's variables (launch.py)."""
    rank, world = resolve_rank()
    return DistEnv(rank, world, local_rank())


def data_batch_size(cfg: TrainConfig) -> int:
    """Sequences per batch the reader must yield: half the forward rows under anti-masking."""
    return cfg.data.batch_size // 2 if cfg.masking.anti_masking else cfg.data.batch_size


def mask_seed(seed: int, step: int, micro: int) -> int:
    return (seed * 1_000_003 + step) * 65_537 + micro


def resolve_hparams(cfg: TrainConfig, seq_len: int, world_size: int) -> SDEResolved:
    """Reference hyperparameters -> this run's (identity when the SDE rule is off)."""
    batch = cfg.data.batch_size * cfg.grad_accum * world_size
    horizon = cfg.sde.horizon_tokens or cfg.max_steps * batch * seq_len
    o = cfg.optim
    if not cfg.sde.enabled:
        return SDEResolved(1.0, batch, horizon, o.lr, tuple(o.betas), o.eps, o.weight_decay)
    return resolve_sde(batch, horizon, cfg.sde.base_batch, cfg.sde.base_horizon_tokens, cfg.sde.gamma,
                       o.lr, tuple(o.betas), o.eps, o.weight_decay)


def build_model(cfg: TrainConfig, vocab: Vocab) -> MDMTransformer:
    mcfg = cfg.model
    if mcfg.vocab_size not in (0, vocab.size):
        raise ValueError(f"model.vocab_size {mcfg.vocab_size} does not match the vocabulary ({vocab.size})")
    mcfg.vocab_size = vocab.size
    bias = modality_logit_bias(vocab, cfg.masking.mask_bos, cfg.masking.mask_eos)
    return MDMTransformer(mcfg, bias)


def batch_tokens(batch) -> torch.Tensor:
    """Tokens [B, L] of a batch dict ({"tokens": ...}) or of a shard reader `Batch` (.tokens)."""
    return batch["tokens"] if isinstance(batch, dict) else batch.tokens


def _to_device(tokens: torch.Tensor, device: torch.device) -> torch.Tensor:
    tokens = torch.as_tensor(tokens).long()
    if device.type == "cuda":
        if not tokens.is_pinned():  # the shard loader already pins on CUDA hosts
            tokens = tokens.pin_memory()
        return tokens.to(device, non_blocking=True)
    return tokens.to(device)


def _all_reduce_stats(stats: dict[str, torch.Tensor], env: DistEnv) -> dict[str, torch.Tensor]:
    if env.world_size > 1:
        names = sorted(stats)
        flat = torch.stack([stats[n] for n in names])
        dist.all_reduce(flat)
        stats = {n: flat[i] for i, n in enumerate(names)}
    return stats


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable[dict], n_batches: int, tables: TokenTables,
             schedule: MaskSchedule, cfg: TrainConfig, device: torch.device, env: DistEnv) -> dict[str, float]:
    """Held-out ELBO with a fixed noise seed, so evaluations at different steps are comparable."""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(mask_seed(cfg.seed + 1, 0, env.rank))
    stats: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(batches):
        if i >= n_batches:
            break
        tokens = _to_device(batch_tokens(batch), device)
        mb = forward_process(tokens, tables, schedule, cfg.masking.t_eps, gen, anti_masking=False)
        with torch.autocast(device.type, torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda"):
            logits = model(mb.inputs, mb.modality, mb.pad)
        _, s = mdm_loss(logits, mb, tables)
        stats = add_stats(stats, s)
    model.train()
    return {f"eval/{k}": v for k, v in summarize(_all_reduce_stats(stats, env)).items()}


def drop_conditions(mb: MaskedBatch, tokens: torch.Tensor, masking: MaskingConfig, vocab: Vocab,
                    generator: torch.Generator) -> MaskedBatch:
    """Hide the condition of some pair rows (CFG training); see `sampler.condition_drop_mask`.

    The rows are chosen on the clean batch (noising may hide the BOS/EOS that delimit the
    segments); a dropped position is neither shown nor scored."""
    if masking.cond_drop == 0.0:
        return mb
    dropped = condition_drop_mask(tokens, masking.cond_drop, vocab, generator, masking.cond_drop_segment)
    if masking.anti_masking:
        dropped = pair_rows(dropped)
    mb.inputs = unconditional_tokens(vocab, mb.inputs, dropped)
    mb.masked = mb.masked & ~dropped
    return mb


def trim_metrics(path: str, step: int) -> None:
    """Keep the metrics records of steps <= `step`, the step training restarts from.

    A run killed after logging steps past its last checkpoint redoes those steps on resume;
    without this the log would hold them twice (and a line cut by the kill). Rewritten under
    a temp name and renamed, like a checkpoint.
    """
    fs, fs_path = fsspec.core.url_to_fs(path)
    if not fs.exists(fs_path):
        return
    with fs.open(fs_path, "r") as f:
        lines = f.read().splitlines()
    keep = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # cut short by the kill
        if isinstance(record, dict) and int(record.get("step", 0)) <= step:
            keep.append(line)
    if len(keep) == len(lines):
        return
    atomic_write(path, "".join(line + "\n" for line in keep))
    log.info("%s: dropped %d record(s) after step %d (redone from the checkpoint)", path,
             len(lines) - len(keep), step)


def train(cfg: TrainConfig, vocab: Vocab, data: Iterable[dict],
          eval_data: Callable[[], Iterable[dict]] | None = None) -> TrainResult:
    env = dist_env()
    device = resolve_device(cfg.device, env.local_rank)
    if env.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not os.environ.get("MASTER_ADDR"):
            raise ConfigError("several processes (rank/world from torchrun or SLURM) but MASTER_ADDR is "
                              "not set: launch with torchrun, or export MASTER_ADDR (the first host) "
                              "and MASTER_PORT yourself (see docs/scale-out.md)")
        # rank and world are passed because under plain srun only SLURM's variables are set
        dist.init_process_group(backend, rank=env.rank, world_size=env.world_size)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed)
    fs, out_path = fsspec.core.url_to_fs(cfg.out_dir)

    # --- model, optimizer, hyperparameters ---------------------------------------------
    model = build_model(cfg, vocab).to(device)
    fsdp = cfg.parallel == "fsdp" and env.world_size > 1
    if fsdp:  # before the optimizer, which must hold the shards
        parallel.shard(model, device, env.world_size, bf16=cfg.bf16 and device.type == "cuda")
    tables = TokenTables.from_vocab(vocab, cfg.masking.mask_bos, cfg.masking.mask_eos).to(device)
    schedule = MaskSchedule.from_config(cfg.masking)
    hp = resolve_hparams(cfg, cfg.model.max_len, env.world_size)
    optim_cfg = cfg.optim
    optimizer = build_optimizer(model, optim_cfg, cfg.model.n_layers, hp.kappa, fused=device.type == "cuda")
    if env.is_main:
        fs.makedirs(out_path, exist_ok=True)
        save_config(cfg, posixpath.join(cfg.out_dir, "config.yaml"))
        vocab.save(posixpath.join(cfg.out_dir, "vocab.json"))
        atomic_write_json(posixpath.join(cfg.out_dir, "hparams.json"),
                          {"sde_enabled": cfg.sde.enabled, **hp.as_dict(),
                           "groups": [{k: g[k] for k in ("name", "lr", "eps", "weight_decay", "betas")}
                                      for g in optimizer.param_groups]}, indent=2)
        log.info("model: %.2fM non-embedding params, vocab %d; resolved hparams (kappa=%.4g): lr=%.4g "
                 "betas=(%.5f, %.5f) eps=%.3g wd=%.4g", model.num_params() / 1e6, vocab.size, hp.kappa,
                 hp.lr, hp.betas[0], hp.betas[1], hp.eps, hp.weight_decay)

    # --- resume -------------------------------------------------------------------------
    start_step = 0
    latest = ckpt.latest_checkpoint(cfg.out_dir) if cfg.resume else None
    if latest is not None:
        state = ckpt.load_checkpoint(latest, env.rank, vocab.hash, map_location=device)
        saved = state["extra"].get("optimizer_layout", "index")
        if saved != ("name" if fsdp else "index"):
            raise ckpt.CheckpointError(
                f"{latest}: saved with parallel={'fsdp' if saved == 'name' else 'ddp'} (optimizer state "
                f"keyed by parameter {saved}); resume it with the same `parallel`")
        if fsdp:
            parallel.load_full_state(model, optimizer, state["model"], state["optimizer"])
        else:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        start_step = int(state["step"])
        if state["data"] is not None and hasattr(data, "load_state_dict"):
            data.load_state_dict(state["data"])
        ckpt.set_rng_state({k: v.cpu() for k, v in state["rng"].items()}, device)
        log.info("resumed from %s at step %d", latest, start_step)
    if env.is_main:
        trim_metrics(posixpath.join(cfg.out_dir, "metrics.jsonl"), start_step)

    raw_model = model
    if cfg.compile:
        model = torch.compile(model)
    if env.world_size > 1 and not fsdp:
        # Buffers (RoPE tables, logit bias) are derived from the config and equal on every
        # rank: no need to broadcast them each forward. torch >= 2.13 renamed the switch.
        no_sync_buffers = ({"forward_sync_buffers": False}
                           if "forward_sync_buffers" in inspect.signature(DDP).parameters
                           else {"broadcast_buffers": False})
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                    **no_sync_buffers)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")

    def save(step: int) -> None:
        data_state = data.state_dict() if hasattr(data, "state_dict") else None
        ckpt.save_rank_state(cfg.out_dir, step, env.rank, data_state, ckpt.rng_state(device))
        if fsdp:  # gathering the shards is a collective: every rank takes part
            model_state, optim_state = parallel.full_state(raw_model, optimizer)
        elif env.is_main:
            model_state, optim_state = raw_model.state_dict(), optimizer.state_dict()
        if env.is_main:
            ckpt.save_main_state(cfg.out_dir, step, model_state, optim_state, to_dict(cfg), vocab.hash,
                                 {"hparams": hp.as_dict(), "optimizer_layout": "name" if fsdp else "index"})
        if env.world_size > 1:
            dist.barrier()
        if env.is_main:
            ckpt.mark_latest(cfg.out_dir, step)

    # --- loop ---------------------------------------------------------------------------
    result = TrainResult(step=start_step, sde=hp)
    metrics_path = posixpath.join(cfg.out_dir, "metrics.jsonl")
    data_iter = iter(data)
    pending: list[torch.Tensor] = []  # per-step losses, read back at log time (no per-step sync)
    stats: dict[str, torch.Tensor] = {}
    tokens_seen, data_s, t_last = 0, 0.0, time.perf_counter()
    bar = tqdm(total=cfg.max_steps, initial=start_step, disable=not (cfg.progress and env.is_main),
               desc="train", unit="step")
    model.train()
    for step in range(start_step, cfg.max_steps):
        set_lr(optimizer, lr_factor(step, optim_cfg, cfg.max_steps))
        step_loss = torch.zeros((), device=device)
        for k in range(cfg.grad_accum):
            t_data = time.perf_counter()
            try:
                batch = next(data_iter)
            except StopIteration:
                raise RuntimeError(f"training data ran out at step {step}; use a looping reader "
                                   "or fewer max_steps") from None
            tokens = _to_device(batch_tokens(batch), device)
            data_s += time.perf_counter() - t_data
            micro = k * env.world_size + env.rank
            gen = torch.Generator(device=device).manual_seed(mask_seed(cfg.seed, step, micro))
            mb = forward_process(tokens, tables, schedule, cfg.masking.t_eps, gen, cfg.masking.anti_masking)
            mb = drop_conditions(mb, tokens, cfg.masking, vocab, gen)
            last = k == cfg.grad_accum - 1
            if last or env.world_size == 1:
                sync = contextlib.nullcontext()
            else:
                sync = parallel.no_grad_sync(raw_model) if fsdp else model.no_sync()
            with sync:
                with autocast:
                    logits = model(mb.inputs, mb.modality, mb.pad)
                loss, s = mdm_loss(logits, mb, tables)
                (loss / cfg.grad_accum).backward()
            step_loss += loss.detach() / cfg.grad_accum
            stats = add_stats(stats, s)
            tokens_seen += mb.inputs.numel()
        grad_norm = parallel.total_norm(torch.nn.utils.clip_grad_norm_(
            model.parameters(), optim_cfg.grad_clip if optim_cfg.grad_clip > 0 else float("inf")))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if env.world_size > 1:
            dist.all_reduce(step_loss)
            step_loss /= env.world_size
        pending.append(step_loss)
        done = step + 1
        result.step = done
        bar.update(1)

        if (cfg.log_every and done % cfg.log_every == 0) or done == cfg.max_steps:
            result.losses += [float(x) for x in pending]
            pending = []
            figures = summarize(_all_reduce_stats(stats, env))
            stats = {}
            now = time.perf_counter()
            tok_s = tokens_seen * env.world_size / max(now - t_last, 1e-9)
            # Share of wall time spent waiting for batches (fetch + host->device copy): the
            # data-path overhead, measured in the run itself.
            data_frac = data_s / max(now - t_last, 1e-9)
            tokens_seen, data_s, t_last = 0, 0.0, now
            record = {"step": done, "loss": result.losses[-1], "lr": optimizer.param_groups[0]["lr"],
                      "grad_norm": float(grad_norm), "tokens_per_s": tok_s, "data_frac": data_frac,
                      **figures}
            if not math.isfinite(record["loss"]):
                log.warning("step %d: non-finite loss %s", done, record["loss"])
            if env.is_main:
                with fsspec.open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{tok_s:.0f}")
        if eval_data is not None and cfg.eval_every and done % cfg.eval_every == 0:
            figures = evaluate(model, eval_data(), cfg.eval_batches, tables, schedule, cfg, device, env)
            result.eval.append({"step": done, **figures})
            if env.is_main:
                with fsspec.open(metrics_path, "a") as f:
                    f.write(json.dumps({"step": done, **figures}) + "\n")
                log.info("step %d eval: elbo %.4f nats/token", done, figures.get("eval/elbo", float("nan")))
        if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.max_steps:
            save(done)
    bar.close()
    return result


def run(cfg: TrainConfig) -> TrainResult:
    """`trimodal train`: shards and vocabulary from the config, then `train`."""
    from trimodal.mdm_core.data import shard_loader

    if not cfg.data.train:
        raise ConfigError("data.train: set the training shard set (folder or URL with manifest.json)")
    env = dist_env()
    vocab_url = cfg.data.vocab or posixpath.join(cfg.data.train.split(",")[0].rstrip("/"), "vocab.json")
    vocab = Vocab.load(vocab_url)
    data = shard_loader(cfg.data.train, vocab, data_batch_size(cfg), seed=cfg.data.seed, rank=env.rank,
                        world_size=env.world_size, num_workers=cfg.data.num_workers)
    eval_data = None
    if cfg.data.eval:
        def eval_data():
            return shard_loader(cfg.data.eval, vocab, cfg.data.batch_size, rank=env.rank,
                                world_size=env.world_size, train=False)
    return train(cfg, vocab, data, eval_data)
