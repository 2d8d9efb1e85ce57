"""Train a (small) DAC with DAC's own losses: `trimodal tokenizer audio train --config ...`.

Losses come from `dac.nn.loss` (multi-scale mel, multi-scale STFT, waveform L1) plus the
codebook and commitment losses that `DAC.forward` returns; the adversarial part (dac's
`Discriminator` + `GANLoss`) is optional because on a CPU it costs more than it buys in a
few minutes of training.

Resume is exact: batch b of step s is drawn from an RNG seeded by (seed, s), torch's RNG (the
quantizer dropout) is reseeded per step, and the checkpoint holds model, optimizer, scheduler
(and discriminator) state. So a run killed after its checkpoint at step k and resumed ends
with exactly the weights of an uninterrupted run. Checkpoints are one `torch.save` dict read
back with `weights_only=True`, written to a temp name and renamed.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from trimodal.config import ConfigError, require, save as save_config
from trimodal.io import atomic_open, atomic_write, resolve_device
from trimodal.tokenizers.audio import TINY_PRESET, AudioTokenizer, DACConfig, to_codec_input
from trimodal.tokenizers.base import load_weights_only

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus")


@dataclass
class LossWeights:
    """Weights of each loss term (DAC's published recipe: mel 15, commitment 0.25, codebook 1,
    adversarial 1, feature matching 2; STFT and L1 are extra stabilizers for tiny models)."""

    mel: float = 15.0
    stft: float = 1.0
    waveform: float = 1.0
    commitment: float = 0.25
    codebook: float = 1.0
    adv_gen: float = 1.0
    adv_feat: float = 2.0


@dataclass
class AudioTrainConfig:
    model: DACConfig = field(default_factory=lambda: DACConfig(**TINY_PRESET.__dict__))
    #: Audio files or folders (searched recursively); transcripts are not needed.
    data: list[str] = field(default_factory=list)
    steps: int = 1000
    batch_size: int = 8
    segment_seconds: float = 0.5
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    #: Per-step exponential learning-rate decay (DAC uses 0.999996 over 400k steps).
    lr_decay: float = 0.9999
    grad_clip: float = 1000.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    adversarial: bool = False
    mel_windows: list[int] = field(default_factory=lambda: [64, 256, 1024])
    mel_bins: list[int] = field(default_factory=lambda: [10, 40, 80])
    stft_windows: list[int] = field(default_factory=lambda: [128, 512])
    loss: LossWeights = field(default_factory=LossWeights)
    #: "auto" (cuda when available), "cpu", "cuda", ...
    device: str = "auto"
    #: Codebooks kept by the exported tokenizer (None: all).
    export_n_q: int | None = None

    def __post_init__(self) -> None:
        require(self.steps > 0, f"steps must be > 0, got {self.steps}")
        require(self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}")
        require(self.segment_seconds > 0, f"segment_seconds must be > 0, got {self.segment_seconds}")
        require(self.lr > 0 and 0 < self.lr_decay <= 1, "lr must be > 0 and lr_decay in (0, 1]")
        require(len(self.betas) == 2, f"betas must be two numbers, got {self.betas}")
        require(self.log_every > 0 and self.checkpoint_every > 0, "log_every and checkpoint_every must be > 0")
        require(len(self.mel_windows) == len(self.mel_bins) and self.mel_windows,
                f"mel_windows {self.mel_windows} and mel_bins {self.mel_bins} must pair up")
        if self.export_n_q is not None:
            require(1 <= self.export_n_q <= self.model.n_codebooks,
                    f"export_n_q must be in [1, {self.model.n_codebooks}], got {self.export_n_q}")

    @property
    def segment_samples(self) -> int:
        hop = self.model.hop_length
        return max(hop, math.ceil(self.segment_seconds * self.model.sample_rate / hop) * hop)


# --- data ------------------------------------------------------------------------------------
def load_training_audio(paths: list[str], sample_rate: int, limit: int | None = None) -> list[np.ndarray]:
    """Every readable audio file under `paths` as mono float32 at `sample_rate` (sorted order).

    Unreadable or empty files are skipped and counted in the log, not fatal."""
    import fsspec
    import soundfile as sf

    files: list[tuple[Any, str]] = []
    for p in paths:
        fs, root = fsspec.core.url_to_fs(p)
        if not fs.exists(root):
            raise ConfigError(f"training data path not found: {p}")
        found = [root] if fs.isfile(root) else sorted(fs.find(root))
        files += [(fs, f) for f in found if f.lower().endswith(AUDIO_SUFFIXES)]
    clips, bad = [], 0
    for fs, f in files[:limit]:
        try:
            with fs.open(f, "rb") as fh:
                audio, sr = sf.read(fh, dtype="float32", always_2d=True)
        except Exception as err:  # one bad file must not stop training
            log.debug("%s: unreadable (%s)", f, err)
            bad += 1
            continue
        if audio.size == 0 or not np.isfinite(audio).all():
            bad += 1
            continue
        clips.append(to_codec_input(audio.T, sr, sample_rate))
    if not clips:
        raise ConfigError(f"no readable audio files under {paths}")
    log.info("training audio: %d clips, %.1f s, %d unreadable skipped", len(clips),
             sum(c.size for c in clips) / sample_rate, bad)
    return clips


def make_batch(clips: list[np.ndarray], batch_size: int, segment: int, seed: int, step: int) -> torch.Tensor:
    """Random segments [B, 1, segment], a pure function of (seed, step): exact resume for free."""
    rng = np.random.default_rng([seed, step])
    out = np.zeros((batch_size, 1, segment), dtype=np.float32)
    for b in range(batch_size):
        clip = clips[int(rng.integers(len(clips)))]
        start = int(rng.integers(0, max(1, clip.size - segment + 1)))
        piece = clip[start:start + segment]
        out[b, 0, : piece.size] = piece
    return torch.from_numpy(out)


# --- losses ----------------------------------------------------------------------------------
class _Losses:
    def __init__(self, cfg: AudioTrainConfig, discriminator: torch.nn.Module | None):
        from dac.nn import loss as L

        self.cfg = cfg
        self.mel = L.MelSpectrogramLoss(n_mels=list(cfg.mel_bins), window_lengths=list(cfg.mel_windows),
                                        mel_fmin=[0.0] * len(cfg.mel_bins), mel_fmax=[None] * len(cfg.mel_bins),
                                        pow=1.0, clamp_eps=1e-5, mag_weight=0.0)
        self.stft = L.MultiScaleSTFTLoss(window_lengths=list(cfg.stft_windows))
        self.l1 = L.L1Loss()
        self.gan = L.GANLoss(discriminator) if discriminator is not None else None

    def generator(self, x, out) -> dict[str, torch.Tensor]:
        from audiotools import AudioSignal

        sr = self.cfg.model.sample_rate
        real, fake = AudioSignal(x, sr), AudioSignal(out["audio"], sr)
        terms = {"mel": self.mel(fake, real), "stft": self.stft(fake, real),
                 "waveform": self.l1(fake, real),
                 "commitment": out["vq/commitment_loss"], "codebook": out["vq/codebook_loss"]}
        if self.gan is not None:
            terms["adv_gen"], terms["adv_feat"] = self.gan.generator_loss(fake, real)
        return terms

    def discriminator(self, x, fake_audio) -> torch.Tensor:
        from audiotools import AudioSignal

        sr = self.cfg.model.sample_rate
        return self.gan.discriminator_loss(AudioSignal(fake_audio, sr), AudioSignal(x, sr))


# --- checkpoints -----------------------------------------------------------------------------
def _atomic_torch_save(obj: dict, path: Path) -> None:
    with atomic_open(str(path)) as f:
        torch.save(obj, f)


def _trim_log(path: Path, last_step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be rewritten)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip()
            and json.loads(line).get("step", 0) <= last_step]
    atomic_write(str(path), "".join(line + "\n" for line in keep))


def train_audio_tokenizer(cfg: AudioTrainConfig, out: str, resume: bool = True,
                          progress: bool = True, clips: list[np.ndarray] | None = None) -> AudioTokenizer:
    """Train (or resume) in `out`; writes checkpoint.pt, log.jsonl, config.yaml and the final
    tokenizer.safetensors. `clips` (mono at the model rate) replaces `cfg.data` when given."""
    import dac

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, str(out_dir / "config.yaml"))
    device = resolve_device(cfg.device)
    clips = clips if clips is not None else load_training_audio(cfg.data, cfg.model.sample_rate)

    torch.manual_seed(cfg.seed)
    model = cfg.model.build().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_decay)
    disc = disc_opt = None
    if cfg.adversarial:
        disc = dac.model.Discriminator(sample_rate=cfg.model.sample_rate, fft_sizes=[512, 256, 128],
                                       periods=[2, 3, 5]).to(device)
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    losses = _Losses(cfg, disc)

    ckpt_path, log_path = out_dir / "checkpoint.pt", out_dir / "log.jsonl"
    step = 0
    if resume and ckpt_path.exists():
        with open(ckpt_path, "rb") as f:
            state = load_weights_only(f, str(ckpt_path), device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if disc is not None:
            if "discriminator" not in state:
                raise ConfigError(f"{ckpt_path}: has no discriminator state but adversarial=True")
            disc.load_state_dict(state["discriminator"])
            disc_opt.load_state_dict(state["discriminator_optimizer"])
        step = int(state["step"])
        _trim_log(log_path, step)
        log.info("resumed from %s at step %d", ckpt_path, step)
    elif log_path.exists():
        log_path.unlink()

    def checkpoint() -> None:
        state = {"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict()}
        if disc is not None:
            state["discriminator"] = disc.state_dict()
            state["discriminator_optimizer"] = disc_opt.state_dict()
        _atomic_torch_save(state, ckpt_path)

    weights = cfg.loss.__dict__
    segment = cfg.segment_samples
    bar = tqdm(total=cfg.steps, initial=step, desc="dac train", disable=not progress)
    t0 = time.perf_counter()
    model.train()
    while step < cfg.steps:
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        x = make_batch(clips, cfg.batch_size, segment, cfg.seed, step).to(device)
        result = model(x, cfg.model.sample_rate)
        # With odd rates (5) the decoder returns a few samples fewer than it was given; compare
        # on the common length.
        x = x[..., : result["audio"].shape[-1]]
        if disc is not None:
            d_loss = losses.discriminator(x, result["audio"].detach())
            disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            torch.nn.utils.clip_grad_norm_(disc.parameters(), 10.0)
            disc_opt.step()
        terms = losses.generator(x, result)
        total = sum(weights[k] * v for k, v in terms.items())
        opt.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            entry = {"step": step, "loss": float(total.detach()),
                     **{f"loss/{k}": float(v.detach()) for k, v in terms.items()},
                     "grad_norm": float(grad_norm), "lr": sched.get_last_lr()[0],
                     "seconds": round(time.perf_counter() - t0, 3)}
            if disc is not None:
                entry["loss/discriminator"] = float(d_loss.detach())
            with log_path.open("a") as f:
                f.write(json.dumps(entry) + "\n")
            bar.set_postfix(mel=f"{entry['loss/mel']:.3f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint()
    bar.close()
    model.eval()
    tok = AudioTokenizer(model.to("cpu"), cfg.model, cfg.export_n_q)
    tok.save(str(out_dir / "tokenizer.safetensors"))
    log.info("audio tokenizer %s (hash %s) written to %s", tok.name, tok.hash, out_dir / "tokenizer.safetensors")
    return tok
