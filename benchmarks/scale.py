"""What does a 6.4T-token tri-modal run need? A plan computed from our benchmark JSON.

The paper trained a 3B model on 6.4T tokens. This script turns that target into numbers an
engineer can book: sequences per source, items to tokenize, shard storage and shard count,
tokenization compute, training GPU-hours and the data-loader rate each GPU needs. Every figure
is either *measured* (read from `benchmarks/results/*.json`), *counted* (FLOPs of our own
tokenizer architectures, counted by `torch.utils.flop_counter` on the meta device, so nothing
is allocated or run) or an *assumption* (listed in the output with its value; change it with
`--set name=value`). Measured rates come from this project's CPU machine; where no GPU
measurement exists, GPU time is estimated from counted FLOPs and an assumed utilisation, and
the page says so.

    python benchmarks/scale.py                 # writes docs/scale.md and results/scale.json
    python benchmarks/scale.py --check         # exit 1 if docs/scale.md is out of date
    python benchmarks/scale.py --set model_params=7e9 --set n_gpus=2048
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from trimodal.config import ConfigError, require
from trimodal.tokenizers.audio import DAC16K_PRESET, TINY_PRESET, DACConfig
from trimodal.tokenizers.image.autoencoder import AutoencoderConfig, Encoder

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOC = HERE.parent / "docs" / "scale.md"


@dataclass
class Assumptions:
    """Inputs we did not measure. Defaults follow PAPER.md where it says something."""

    #: Non-pad tokens the model sees (the paper's 6.4T; whether it counts padding is unknown).
    total_tokens: float = 6.4e12
    model_params: float = 3e9
    seq_len: int = 2048
    #: Share of the token budget per source; the paper's mixing ratios are not readable offline.
    share_text: float = 0.6
    share_image_text: float = 0.3
    share_audio_text: float = 0.1
    #: How often each source's unique data is repeated over the run (1: every sequence unique).
    epochs_text: float = 1.0
    epochs_image_text: float = 1.0
    epochs_audio_text: float = 1.0
    #: Target image tokenizer: 256 px, f16 (a 16x16 grid), VQGAN-sized encoder.
    image_size: int = 256
    image_factor: int = 16
    image_base_channels: int = 128
    image_res_blocks: int = 2
    caption_tokens: int = 40
    #: Target audio tokenizer: the released 16 kHz DAC architecture with n_q codebooks kept.
    audio_n_q: int = 4
    clip_seconds: float = 8.0
    transcript_tokens: int = 40
    #: Special tokens of a pair: TASK + BOS/EOS of two segments.
    pair_specials: int = 5
    #: H100 SXM dense bf16 peak (vendor figure) and the utilisation we assume.
    gpu_peak_flops: float = 989e12
    train_mfu: float = 0.40
    tokenizer_mfu: float = 0.25
    n_gpus: int = 1024
    shard_bytes: float = 1e9
    loader_workers_per_gpu: int = 4

    def __post_init__(self) -> None:
        shares = self.share_text + self.share_image_text + self.share_audio_text
        require(abs(shares - 1.0) < 1e-9, f"shares must sum to 1, got {shares}")
        for f in fields(self):
            require(getattr(self, f.name) >= 0, f"{f.name} must be >= 0")
        for name in ("total_tokens", "model_params", "seq_len", "gpu_peak_flops", "train_mfu",
                     "tokenizer_mfu", "n_gpus", "shard_bytes", "image_size", "clip_seconds"):
            require(getattr(self, name) > 0, f"{name} must be > 0")
        require(self.image_size % self.image_factor == 0, "image_size must be a multiple of image_factor")
        require(self.train_mfu <= 1 and self.tokenizer_mfu <= 1, "utilisation must be <= 1")


@dataclass
class Measured:
    """Figures read from benchmark JSON (see `load_measured`)."""

    image_device: str
    image_bench_size: int
    image_bench_factor: int
    image_bench_channels: int
    image_bare_per_s: float
    image_job_ratio: float
    image_cores: int
    audio_device: str
    audio_bench_arch: str
    audio_job_seconds_per_s: float
    audio_cores: int
    shard_bytes_per_token: float
    reader_tokens_per_s: dict[str, float]
    packer_tokens_per_s: float


def _read(name: str, results: Path) -> dict[str, Any]:
    path = results / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run benchmarks/{name}.py first")
    return json.loads(path.read_text())


def load_measured(results: Path = RESULTS) -> Measured:
    img, aud = _read("tokenize_image", results), _read("tokenize_audio", results)
    shards, packing = _read("shards", results), _read("packing", results)
    factor = int(img["tokenizer"].split("-")[1].lstrip("f"))
    jobs = img["job"]
    bare = img["bare"][str(img["bare_best_threads"])]["median"]
    readers = {k: v["tokens_per_s"] for k, v in shards["results"].items() if k.startswith("reader_")}
    # `trimodal pack` as a whole (tables read, packed, shards written), not the packer alone
    packer = packing["end_to_end"]["tokens_per_s"]
    return Measured(
        image_device=img["device"], image_bench_size=int(img["image_size"]), image_bench_factor=factor,
        image_bench_channels=int(img["base_channels"]), image_bare_per_s=float(bare),
        image_job_ratio=min(float(j["ratio_paired_median"]) for j in jobs.values()),
        image_cores=int(img["cores"]),
        audio_device=aud["device"], audio_bench_arch=aud["arch"],
        audio_job_seconds_per_s=float(aud["job_audio_s_per_s"]), audio_cores=int(aud.get("cpu_count", 2)),
        shard_bytes_per_token=shards["tar_bytes"] / shards["tokens"],
        reader_tokens_per_s=readers, packer_tokens_per_s=float(packer))


# --- counted FLOPs (meta device: nothing allocated, nothing run) ----------------------------

def _count(module: torch.nn.Module, x: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter:
        module(x)
    return float(counter.get_total_flops())


def image_encoder_flops(size: int, factor: int, channels: int, res_blocks: int = 1) -> float:
    """FLOPs of one image through our encoder (quantization is negligible beside it)."""
    cfg = AutoencoderConfig(downsample_factor=factor, base_channels=channels, num_res_blocks=res_blocks)
    with torch.device("meta"):
        return _count(Encoder(cfg, 8), torch.empty(1, 3, size, size))


def audio_encoder_flops_per_second(cfg: DACConfig) -> float:
    """FLOPs of one second of audio through a DAC encoder."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore", FutureWarning)  # dac's weight_norm deprecation
        return _count(cfg.build().encoder, torch.empty(1, 1, cfg.sample_rate))


def frames_per_second(cfg: DACConfig) -> float:
    return cfg.sample_rate / math.prod(cfg.encoder_rates)


# --- the plan (pure arithmetic) -----------------------------------------------------------

def plan(a: Assumptions, m: Measured, flops: dict[str, float]) -> dict[str, Any]:
    """Everything the page prints, as numbers. `flops` holds the counted encoder costs."""
    L = a.seq_len
    grid = (a.image_size // a.image_factor) ** 2
    pair_image = grid + a.caption_tokens + a.pair_specials
    audio_tokens = round(a.clip_seconds * flops["dac_frames_per_s"]) * a.audio_n_q
    pair_audio = audio_tokens + a.transcript_tokens + a.pair_specials
    require(pair_image <= L and pair_audio <= L,
            f"a pair ({pair_image} image / {pair_audio} audio tokens) must fit seq_len {L}")

    tokens = {"text": a.total_tokens * a.share_text, "image_text": a.total_tokens * a.share_image_text,
              "audio_text": a.total_tokens * a.share_audio_text}
    # Text is packed (no padding); each pair is one right-padded sequence.
    seqs = {"text": tokens["text"] / L, "image_text": tokens["image_text"] / pair_image,
            "audio_text": tokens["audio_text"] / pair_audio}
    epochs = {"text": a.epochs_text, "image_text": a.epochs_image_text, "audio_text": a.epochs_audio_text}
    unique_seqs = {k: seqs[k] / max(epochs[k], 1e-12) for k in seqs}
    positions = sum(seqs.values()) * L
    pad_fraction = 1 - a.total_tokens / positions

    images = unique_seqs["image_text"]
    clips = unique_seqs["audio_text"]
    audio_hours = clips * a.clip_seconds / 3600

    stored_positions = sum(unique_seqs.values()) * L
    storage = stored_positions * m.shard_bytes_per_token
    gpu_eff = a.gpu_peak_flops * a.tokenizer_mfu

    # CPU cost from the measured job rate, scaled by counted FLOPs from the benchmark's model.
    img_cpu_flops_per_s = m.image_bare_per_s * m.image_job_ratio * flops["image_bench"]
    aud_cpu_flops_per_s = m.audio_job_seconds_per_s * flops["audio_bench_per_s"]
    image_flops = images * flops["image_target"]
    audio_flops = audio_hours * 3600 * flops["audio_target_per_s"]

    train_flops = 6 * a.model_params * positions
    per_gpu_tokens_per_s = a.gpu_peak_flops * a.train_mfu / (6 * a.model_params)
    reader_1 = m.reader_tokens_per_s.get("reader_1_workers", float("nan"))
    frontier = 7754 * a.model_params ** 0.84
    logical_batch = 256 * (a.total_tokens / 13e9) ** 0.44

    return {
        "tokens_per_image_pair": pair_image, "tokens_per_audio_pair": pair_audio,
        "audio_tokens_per_clip": audio_tokens,
        "tokens": tokens, "sequences": seqs, "unique_sequences": unique_seqs,
        "positions": positions, "pad_fraction": pad_fraction,
        "images": images, "audio_clips": clips, "audio_hours": audio_hours,
        "text_tokens_unique": tokens["text"] / a.epochs_text,
        "storage_bytes": storage, "shards": math.ceil(storage / a.shard_bytes),
        "image_encode_flops": image_flops, "audio_encode_flops": audio_flops,
        "image_gpu_hours": image_flops / gpu_eff / 3600,
        "audio_gpu_hours": audio_flops / gpu_eff / 3600,
        "image_cpu_core_hours": image_flops / img_cpu_flops_per_s / 3600 * m.image_cores,
        "audio_cpu_core_hours": audio_flops / aud_cpu_flops_per_s / 3600 * m.audio_cores,
        "image_cpu_effective_flops": img_cpu_flops_per_s, "audio_cpu_effective_flops": aud_cpu_flops_per_s,
        "pack_cpu_core_hours": tokens["text"] / a.epochs_text / m.packer_tokens_per_s / 3600,
        "train_flops": train_flops,
        "train_gpu_hours": train_flops / (a.gpu_peak_flops * a.train_mfu) / 3600,
        "train_days": train_flops / (a.gpu_peak_flops * a.train_mfu * a.n_gpus) / 86400,
        "loader_tokens_per_s_per_gpu": per_gpu_tokens_per_s,
        "loader_bytes_per_s_per_gpu": per_gpu_tokens_per_s * m.shard_bytes_per_token,
        "cluster_read_bytes_per_s": per_gpu_tokens_per_s * m.shard_bytes_per_token * a.n_gpus,
        "reader_1_worker_tokens_per_s": reader_1,
        "reader_headroom": reader_1 / per_gpu_tokens_per_s,
        "shards_per_loader_worker": math.ceil(storage / a.shard_bytes) / (a.n_gpus * a.loader_workers_per_gpu),
        "compute_optimal_tokens": frontier, "horizon_over_optimal": a.total_tokens / frontier,
        "sde_logical_batch_sequences": logical_batch,
    }


def count_flops(a: Assumptions, m: Measured) -> dict[str, float]:
    bench_audio = TINY_PRESET if m.audio_bench_arch == "tiny" else DAC16K_PRESET
    return {
        "image_bench": image_encoder_flops(m.image_bench_size, m.image_bench_factor, m.image_bench_channels),
        "image_target": image_encoder_flops(a.image_size, a.image_factor, a.image_base_channels,
                                            a.image_res_blocks),
        "audio_bench_per_s": audio_encoder_flops_per_second(bench_audio),
        "audio_target_per_s": audio_encoder_flops_per_second(DAC16K_PRESET),
        "dac_frames_per_s": frames_per_second(DAC16K_PRESET),
    }


# --- rendering ----------------------------------------------------------------------------

def _si(x: float, unit: str = "") -> str:
    for factor, prefix in ((1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}".rstrip()
    return f"{x:.3g} {unit}".rstrip()


def render(a: Assumptions, m: Measured, flops: dict[str, float], p: dict[str, Any]) -> str:
    gpu_note = ("measured on GPU" if m.image_device == "cuda" else
                f"**estimated** from counted FLOPs at {a.tokenizer_mfu:.0%} of the GPU peak: "
                "our throughput benchmarks ran on a 2-core CPU (no GPU was lent to this project)")
    lines = [
        "# What a 6.4T-token run needs",
        "",
        "Generated by `python benchmarks/scale.py` from `benchmarks/results/*.json`; do not edit by",
        "hand (a test fails when this page and the JSON disagree). Each figure is *measured* (our",
        "benchmarks, this project's 2-core CPU machine), *counted* (FLOPs of our tokenizer",
        "architectures by `torch.utils.flop_counter`) or follows from an *assumption* listed at the",
        "end (change one with `--set name=value`).",
        "",
        "## Data",
        "",
        "| source | token share | tokens / sequence | sequences | unique items to tokenize (no repeats: an upper bound) |",
        "|---|---:|---:|---:|---:|",
        f"| text (packed) | {a.share_text:.0%} | {a.seq_len} | {_si(p['sequences']['text'])} | "
        f"{_si(p['text_tokens_unique'])} tokens |",
        f"| image-text (right-padded) | {a.share_image_text:.0%} | {p['tokens_per_image_pair']} of {a.seq_len} | "
        f"{_si(p['sequences']['image_text'])} | {_si(p['images'])} images |",
        f"| audio-text (right-padded) | {a.share_audio_text:.0%} | {p['tokens_per_audio_pair']} of {a.seq_len} | "
        f"{_si(p['sequences']['audio_text'])} | {_si(p['audio_clips'])} clips = "
        f"{_si(p['audio_hours'])} hours |",
        "",
        f"Sequence positions processed: {_si(p['positions'])}; padding is {p['pad_fraction']:.0%} of them",
        f"(a {a.image_size} px image at f{a.image_factor} is {(a.image_size // a.image_factor) ** 2} tokens, "
        f"{a.clip_seconds:g} s of audio at {a.audio_n_q} codebooks x {flops['dac_frames_per_s']:.0f} frames/s "
        f"is {p['audio_tokens_per_clip']} tokens). Packing several pairs per sequence would cut the",
        "positions, and so the training compute below, by that share; the paper right-pads.",
        "",
        "## Shards and storage",
        "",
        f"- Measured shard size: {m.shard_bytes_per_token:.2f} bytes per token position (int32 tokens.npy,",
        "  meta.json, tar headers; `benchmarks/shards.py`).",
        f"- Storage for every unique sequence once: **{_si(p['storage_bytes'], 'B')}** in "
        f"{p['shards']:,} shards of {_si(a.shard_bytes, 'B')}",
        f"  ({p['shards_per_loader_worker']:.1f} shards per loader worker at {a.n_gpus} GPUs x "
        f"{a.loader_workers_per_gpu} workers).",
        "",
        "## Tokenization compute",
        "",
        "| job | encoder FLOPs (counted) | total FLOPs | GPU-hours | CPU core-hours (measured rate) |",
        "|---|---:|---:|---:|---:|",
        f"| images ({a.image_size} px, f{a.image_factor}, {a.image_base_channels} ch) | "
        f"{_si(flops['image_target'], 'FLOP')}/image | {_si(p['image_encode_flops'])} | "
        f"{_si(p['image_gpu_hours'])} | {_si(p['image_cpu_core_hours'])} |",
        f"| audio (DAC 16 kHz) | {_si(flops['audio_target_per_s'], 'FLOP')}/s of audio | "
        f"{_si(p['audio_encode_flops'])} | {_si(p['audio_gpu_hours'])} | {_si(p['audio_cpu_core_hours'])} |",
        f"| text packing | - | - | - | {_si(p['pack_cpu_core_hours'])} |",
        "",
        f"GPU-hours are {gpu_note}. CPU core-hours scale our measured job rates by counted FLOPs:",
        f"the bare encoder ran {m.image_bare_per_s:.1f} images/s (median) x {m.image_job_ratio:.2f} (job/bare, the",
        f"worse corpus format) on a {m.image_bench_size} px f{m.image_bench_factor} {m.image_bench_channels}-channel "
        f"encoder ({_si(flops['image_bench'], 'FLOP')}/image), i.e. {_si(p['image_cpu_effective_flops'], 'FLOP/s')}",
        f"on {m.image_cores} cores; the audio job ran {m.audio_job_seconds_per_s:.2f} s of audio per second on the",
        f"`{m.audio_bench_arch}` DAC ({_si(flops['audio_bench_per_s'], 'FLOP')}/s of audio), i.e. "
        f"{_si(p['audio_cpu_effective_flops'], 'FLOP/s')} on {m.audio_cores} cores.",
        "Decoding JPEG/FLAC and resampling are not in the FLOP count: on GPU they run in the",
        "DataLoader workers' CPUs beside the encoder (our job/bare ratio measures that overlap on CPU).",
        "Text tokenization (SentencePiece) is not benchmarked here; packing is (`benchmarks/packing.py`,",
        f"`end_to_end`: token tables read, packed and written as shards at {m.packer_tokens_per_s / 1e6:.1f} M tokens/s",
        "on one core, `trimodal pack` being one process; the packer alone is faster, see its scenarios).",
        "",
        "## Training",
        "",
        f"- Compute: 6 x {_si(a.model_params)} params x {_si(p['positions'])} positions = "
        f"{_si(p['train_flops'], 'FLOP')} (attention FLOPs left out).",
        f"- At {a.train_mfu:.0%} of {_si(a.gpu_peak_flops, 'FLOP/s')}: **{_si(p['train_gpu_hours'])} GPU-hours**, "
        f"{p['train_days']:.1f} days on {a.n_gpus} GPUs.",
        f"- Each GPU consumes {_si(p['loader_tokens_per_s_per_gpu'])} tokens/s = "
        f"{_si(p['loader_bytes_per_s_per_gpu'], 'B/s')} of shards; the cluster reads "
        f"{_si(p['cluster_read_bytes_per_s'], 'B/s')} from storage.",
        f"- Our shard reader with one DataLoader worker measured {_si(p['reader_1_worker_tokens_per_s'])} tokens/s "
        f"on this 2-core CPU: **{p['reader_headroom']:.0f}x** what a GPU needs",
        "  (from the page cache; object storage must sustain the per-GPU byte rate above).",
        "",
        "## Context from the paper's summaries",
        "",
        f"- Compute-optimal horizon D*(N) = 7754 N^0.84 = {_si(p['compute_optimal_tokens'])} tokens for "
        f"{_si(a.model_params)} params: 6.4T is {p['horizon_over_optimal']:.1f}x that.",
        f"- SDE rule (logical batch ~ 256 sequences x (D / 13B)^0.44): "
        f"{p['sde_logical_batch_sequences']:,.0f} sequences = "
        f"{_si(p['sde_logical_batch_sequences'] * a.seq_len)} tokens per logical batch at L={a.seq_len}.",
        "",
        "## Assumptions",
        "",
        "| name | value |",
        "|---|---|",
        *[f"| `{k}` | {v:g} |" if isinstance(v, float) else f"| `{k}` | {v} |" for k, v in asdict(a).items()],
        "",
    ]
    return "\n".join(lines)


def _parse_sets(items: list[str]) -> dict[str, Any]:
    known = {f.name: f.type for f in fields(Assumptions)}
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in known:
            raise ConfigError(f"--set {item!r}: expected name=value with name one of {sorted(known)}")
        out[name] = int(float(value)) if known[name] in ("int", int) else float(value)
    return out


def build(results: Path = RESULTS, overrides: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    a = Assumptions(**(overrides or {}))
    m = load_measured(results)
    flops = count_flops(a, m)
    p = plan(a, m, flops)
    return render(a, m, flops, p), {"assumptions": asdict(a), "measured": asdict(m), "flops": flops, "plan": p}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/scale.md is out of date")
    ap.add_argument("--doc", default=str(DOC))
    args = ap.parse_args()
    text, data = build(RESULTS, _parse_sets(args.set))
    if args.check:
        current = Path(args.doc).read_text() if Path(args.doc).exists() else ""
        if current != text:
            print(f"{args.doc} is out of date: run python benchmarks/scale.py", file=sys.stderr)
            sys.exit(1)
        return
    print(text)
    Path(args.doc).write_text(text)
    (RESULTS / "scale.json").write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
