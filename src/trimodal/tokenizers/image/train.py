"""Training of the image tokenizer: reconstruction + quantizer losses, optional PatchGAN.

Exact resume: the batch at step s is a pure function of (seed, s) (`batch_indices`), and the
checkpoint holds model, optimizers, step and the torch RNG state (k-means init, dead-code
expiry and LFQ's entropy sampling draw from it), so an interrupted run continues with the same
losses as an uninterrupted one.

Outputs under `out`:
    checkpoint.pt      latest training state (torch.save; load with weights_only=True)
    tokenizer/         the inference export (`ImageTokenizer.save`), written at the end
    log.jsonl          one JSON row per log interval: losses, PSNR, code usage, perplexity
    train_config.yaml  the config the run started with
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import fsspec
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from trimodal.config import ConfigError, require, to_dict
from trimodal.config import load as load_config
from trimodal.config import save as save_config
from trimodal.io import atomic_open, resolve_device
from trimodal.tokenizers.base import load_weights_only
from trimodal.tokenizers.image.autoencoder import AutoencoderConfig
from trimodal.tokenizers.image.losses import (
    CodeUsage, PatchDiscriminator, hinge_d_loss, hinge_g_loss, psnr, reconstruction_loss,
)
from trimodal.tokenizers.image.preprocess import load_image, preprocess
from trimodal.tokenizers.image.quantizers import QuantizerConfig
from trimodal.tokenizers.image.tokenizer import ImageTokenizer, ImageTokenizerConfig

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CHECKPOINT = "checkpoint.pt"


@dataclass
class LossConfig:
    l1_weight: float = 1.0
    l2_weight: float = 0.0
    #: Multiplies the quantizer's own (already weighted) aux loss: commitment / entropy.
    quantizer_weight: float = 1.0
    #: Not available offline (needs pretrained VGG/LPIPS weights); a value > 0 is reported
    #: and ignored.
    perceptual_weight: float = 0.0
    #: PatchGAN hinge loss weight for the generator; 0 disables the discriminator.
    adversarial_weight: float = 0.0
    adversarial_start_step: int = 0
    disc_channels: int = 32
    disc_layers: int = 2

    def __post_init__(self) -> None:
        for name in ("l1_weight", "l2_weight", "quantizer_weight", "perceptual_weight", "adversarial_weight"):
            require(getattr(self, name) >= 0, f"loss.{name} must be >= 0, got {getattr(self, name)}")
        require(self.l1_weight + self.l2_weight > 0, "loss: l1_weight + l2_weight must be > 0")
        require(self.adversarial_start_step >= 0, "loss.adversarial_start_step must be >= 0")
        require(self.disc_channels >= 4 and self.disc_layers >= 1, "loss: disc_channels >= 4, disc_layers >= 1")


@dataclass
class OptimConfig:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 50
    #: Cosine decay from lr to lr * min_lr_ratio at the last step.
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    #: Discriminator learning rate (None: same as lr).
    disc_lr: float | None = None

    def __post_init__(self) -> None:
        require(self.lr > 0, f"optim.lr must be > 0, got {self.lr}")
        require(all(0 <= b < 1 for b in self.betas), f"optim.betas must be in [0, 1), got {self.betas}")
        require(self.weight_decay >= 0, "optim.weight_decay must be >= 0")
        require(self.warmup_steps >= 0, "optim.warmup_steps must be >= 0")
        require(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio must be in [0, 1]")
        require(self.grad_clip >= 0, "optim.grad_clip must be >= 0 (0: no clipping)")


@dataclass
class ImageTrainConfig:
    model: ImageTokenizerConfig = field(default_factory=ImageTokenizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    #: Folder of images (searched recursively; any fsspec-free local path). CLI --data overrides.
    data: str = ""
    out: str = "runs/image_tokenizer"
    batch_size: int = 16
    steps: int = 1000
    seed: int = 0
    #: "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    #: bf16 autocast of the forward pass on CUDA (ignored on CPU).
    bf16: bool = False
    num_workers: int = 0
    log_every: int = 25
    ckpt_every: int = 250
    #: Batches over which code usage and perplexity are measured.
    usage_window: int = 20

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(self.num_workers >= 0, "num_workers must be >= 0")
        require(self.log_every >= 1 and self.ckpt_every >= 1, "log_every and ckpt_every must be >= 1")
        require(self.usage_window >= 1, "usage_window must be >= 1")
        require(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
                f"device must be auto, cpu, cuda[:n] or mps, got {self.device!r}")


def cpu_preset(kind: str = "fsq", image_size: int = 32) -> ImageTrainConfig:
    """A tiny model that learns the demo's shape scenes on a CPU in a few minutes."""
    quantizer = {
        "fsq": QuantizerConfig(kind="fsq", codebook_size=2**10),
        "lfq": QuantizerConfig(kind="lfq", codebook_size=2**10, entropy_weight=0.05),
        "movq": QuantizerConfig(kind="movq", codebook_size=1024, codebook_dim=16, kmeans_init=True,
                                dead_code_threshold=1.0),
    }
    if kind not in quantizer:
        raise ConfigError(f"no CPU preset for quantizer kind {kind!r}; use one of {sorted(quantizer)}")
    model = ImageTokenizerConfig(
        image_size=image_size,
        autoencoder=AutoencoderConfig(downsample_factor=4, base_channels=16, channel_mult=(1, 2, 2),
                                      num_res_blocks=1, spatial_norm=kind == "movq"),
        quantizer=quantizer[kind],
    )
    # L2 next to L1: L1 alone lets small coloured shapes decode as background (its median) for
    # a long time; the squared term pulls colour in early.
    return ImageTrainConfig(model=model, loss=LossConfig(l1_weight=1.0, l2_weight=1.0),
                            optim=OptimConfig(lr=3e-3, warmup_steps=30), batch_size=16,
                            steps=1200, log_every=50, ckpt_every=300)


# --- data ------------------------------------------------------------------------------
def list_images(folder: str) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ConfigError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return files


class ImageDataset(Dataset):
    """Files, PIL images or an image tensor [N,3,H,W] in [-1,1]; bad files give None (skipped)."""

    def __init__(self, source: Sequence[Path | str] | Sequence[Image.Image] | torch.Tensor,
                 size: int, policy: str):
        self.source = source
        self.size = size
        self.policy = policy

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> torch.Tensor | None:
        item = self.source[i]
        if isinstance(item, torch.Tensor):
            return item.float()
        try:
            img = item if isinstance(item, Image.Image) else load_image(str(item), where=str(item))
            return preprocess(img, self.size, self.policy)
        except ValueError as err:
            log.warning("skipping image: %s", err)
            return None


def _collate(items: list[torch.Tensor | None]) -> tuple[torch.Tensor | None, int]:
    good = [t for t in items if t is not None]
    return (torch.stack(good) if good else None), len(items) - len(good)


@functools.lru_cache(maxsize=4)
def _epoch_perm(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> list[int]:
    """Sample indices of the batch at `step`: epochs are seeded permutations, so any step's
    batch can be recomputed on resume without replaying the data order."""
    out = []
    for pos in range(step * batch_size, (step + 1) * batch_size):
        epoch, k = divmod(pos, n)
        out.append(int(_epoch_perm(n, seed, epoch)[k]))
    return out


class _StepBatches:
    """Batch sampler over steps [start, end)."""

    def __init__(self, start: int, end: int, n: int, batch_size: int, seed: int):
        self.start, self.end, self.n, self.batch_size, self.seed = start, end, n, batch_size, seed

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.end):
            yield batch_indices(step, self.n, self.batch_size, self.seed)


# --- training --------------------------------------------------------------------------
@dataclass
class TrainResult:
    tokenizer: ImageTokenizer
    step: int
    #: Total loss of every step run by this call (for exact-resume checks and plots).
    losses: list[float]
    metrics: dict[str, float]
    hash: str
    skipped: int = 0
    seconds: float = 0.0


def lr_at(step: int, cfg: OptimConfig, total: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _atomic_torch_save(obj: dict, path: str) -> None:
    with atomic_open(path) as f:
        torch.save(obj, f)


def _rng_state() -> dict[str, torch.Tensor | list[torch.Tensor]]:
    state: dict[str, torch.Tensor | list[torch.Tensor]] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def train(cfg: ImageTrainConfig,
          images: Sequence[Image.Image] | torch.Tensor | None = None,
          out: str | None = None,
          resume: bool = False,
          stop_at: int | None = None,
          progress: bool = True) -> TrainResult:
    """Train (or continue) an image tokenizer.

    images: in-memory training data (PIL images or a tensor [N,3,H,W] in [-1,1]); None reads
    the folder `cfg.data`. out: output folder (default `cfg.out`). resume: continue from
    `out/checkpoint.pt` when present. stop_at: stop (and checkpoint) after this step although
    the schedule runs to `cfg.steps` (to simulate an interruption).
    """
    device = resolve_device(cfg.device)
    mcfg = cfg.model
    if cfg.loss.perceptual_weight > 0:
        log.warning("perceptual loss requested (weight %s) but not available: it needs pretrained "
                    "VGG/LPIPS weights, which are never downloaded here; training without it",
                    cfg.loss.perceptual_weight)
    if cfg.bf16 and device.type != "cuda":
        log.info("bf16 autocast requested but device is %s; running in float32", device)

    if images is None:
        if not cfg.data:
            raise ConfigError("no training data: set `data` (a folder of images) or pass --data")
        source: Sequence = list_images(cfg.data)
    else:
        source = images
    if len(source) == 0:
        raise ConfigError("no training images")
    if isinstance(source, torch.Tensor):
        require(source.ndim == 4 and source.shape[1] == 3 and tuple(source.shape[-2:]) == (mcfg.image_size,) * 2,
                f"image tensor must be [N,3,{mcfg.image_size},{mcfg.image_size}], got {tuple(source.shape)}")
    dataset = ImageDataset(source, mcfg.image_size, mcfg.resize_policy)
    out = str(out or cfg.out)
    fs, out_root = fsspec.core.url_to_fs(out)
    fs.makedirs(out_root, exist_ok=True)

    torch.manual_seed(cfg.seed)
    model = ImageTokenizer(mcfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                            weight_decay=cfg.optim.weight_decay)
    use_adv = cfg.loss.adversarial_weight > 0
    disc = PatchDiscriminator(cfg.loss.disc_channels, cfg.loss.disc_layers).to(device) if use_adv else None
    disc_opt = (torch.optim.AdamW(disc.parameters(), lr=cfg.optim.disc_lr or cfg.optim.lr, betas=(0.5, 0.9))
                if disc is not None else None)
    usage = CodeUsage(model.vocab_size, cfg.usage_window)
    step = 0
    ckpt_path = f"{out_root}/{CHECKPOINT}"
    if resume and fs.exists(ckpt_path):
        with fs.open(ckpt_path, "rb") as f:
            ckpt = load_weights_only(f, ckpt_path)
        if ckpt["config"]["model"] != to_dict(mcfg):
            raise ConfigError(f"{ckpt_path}: checkpoint was made with a different model config; "
                              f"refusing to resume (use another --out)")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if disc is not None:
            if "disc" not in ckpt:
                raise ConfigError(f"{ckpt_path}: has no discriminator state but the config enables one")
            disc.load_state_dict(ckpt["disc"])
            disc_opt.load_state_dict(ckpt["disc_optimizer"])
        usage.restore(ckpt["usage"])
        step = int(ckpt["step"])
        _restore_rng(ckpt["rng"])
        log.info("resumed from %s at step %d", ckpt_path, step)
    elif resume:
        log.info("no checkpoint at %s; starting from scratch", ckpt_path)
    save_config(cfg, f"{out_root}/train_config.yaml")

    end = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
    loader = DataLoader(dataset, batch_sampler=_StepBatches(step, end, len(dataset), cfg.batch_size, cfg.seed),
                        collate_fn=_collate, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda",
                        # Its own generator: creating the iterator must not draw from the
                        # global RNG, or a resumed run would diverge from an uninterrupted one.
                        generator=torch.Generator().manual_seed(cfg.seed))

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")

    def checkpoint() -> None:
        state = {"config": to_dict(cfg), "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "step": step, "rng": _rng_state(), "usage": usage.state(), "hash": model.hash}
        if disc is not None:
            state["disc"] = disc.state_dict()
            state["disc_optimizer"] = disc_opt.state_dict()
        _atomic_torch_save(state, ckpt_path)

    losses: list[float] = []
    skipped = 0
    acc: dict[str, float] = {}
    n_acc = 0
    metrics: dict[str, float] = {}
    t0 = time.perf_counter()
    t_log = t0
    model.train()
    bar = tqdm(total=end, initial=step, desc=f"image tokenizer {mcfg.name}", disable=not progress, unit="step")
    with fs.open(f"{out_root}/log.jsonl", "a") as logf:
        for batch, n_bad in loader:
            skipped += n_bad
            if batch is None:
                log.warning("step %d: every image of the batch was unreadable; skipping the step", step)
                step += 1
                continue
            x = batch.to(device, non_blocking=True)
            lr = lr_at(step, cfg.optim, cfg.steps)
            for g in opt.param_groups:
                g["lr"] = lr
            with autocast():
                recon, q = model(x)
            recon = recon.float()
            rec, parts = reconstruction_loss(x, recon, cfg.loss.l1_weight, cfg.loss.l2_weight)
            loss = rec + cfg.loss.quantizer_weight * q.aux_loss.float()
            parts["quant"] = q.aux_loss.item()
            adv_on = disc is not None and step >= cfg.loss.adversarial_start_step
            if adv_on:
                with autocast():
                    g_loss = hinge_g_loss(disc(recon).float())
                loss = loss + cfg.loss.adversarial_weight * g_loss
                parts["g_adv"] = g_loss.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            if adv_on:
                for g in disc_opt.param_groups:
                    g["lr"] = (cfg.optim.disc_lr or cfg.optim.lr) * lr / cfg.optim.lr
                with autocast():
                    d_loss = hinge_d_loss(disc(x).float(), disc(recon.detach()).float())
                disc_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                disc_opt.step()
                parts["d_adv"] = d_loss.item()
            usage.update(q.ids)
            losses.append(loss.item())
            parts["loss"] = losses[-1]
            parts["psnr"] = psnr(x, recon)
            for k, v in parts.items():
                acc[k] = acc.get(k, 0.0) + v
            n_acc += 1
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == end:
                now = time.perf_counter()
                metrics = {k: v / n_acc for k, v in acc.items()} | usage.stats()
                row = {"step": step, "lr": lr, **{k: round(v, 6) for k, v in metrics.items()},
                       "sec_per_step": round((now - t_log) / n_acc, 4), "skipped": skipped}
                logf.write(json.dumps(row) + "\n")
                logf.flush()
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", psnr=f"{metrics['psnr']:.1f}",
                                usage=f"{metrics['usage']:.2f}")
                acc, n_acc, t_log = {}, 0, now
            if step % cfg.ckpt_every == 0 and step < end:
                checkpoint()
    bar.close()
    checkpoint()
    digest = model.hash
    if step >= cfg.steps:
        digest = model.save(f"{out_root}/tokenizer")
    seconds = time.perf_counter() - t0
    log.info("image tokenizer %s: step %d, loss %.4f, psnr %.2f dB, usage %.2f, %d images skipped, %.1fs",
             mcfg.name, step, metrics.get("loss", float("nan")), metrics.get("psnr", float("nan")),
             metrics.get("usage", 0.0), skipped, seconds)
    model.eval()
    return TrainResult(model, step, losses, metrics, digest, skipped, seconds)


def load_train_config(path: str) -> ImageTrainConfig:
    return load_config(path, ImageTrainConfig)
