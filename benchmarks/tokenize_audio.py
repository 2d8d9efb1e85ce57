"""Seconds of audio encoded per second: the whole audio tokenization job vs the bare DAC encoder.

Same model, same clips, same run. "bare, batched" is `AudioTokenizer.encode` on waveforms already
in memory at the codec rate, clips of mixed lengths in one batch (our masked exact batching);
"bare, one clip at a time" is the same without batching (what exact equality would cost with a
naive implementation). The job is `run_job` end to end on the same clips stored as WAV files
(44.1 kHz stereo for a third of them, so resampling and downmix are measured too): read, decode,
resample in DataLoader workers, encode, write parquet tables and stats. Weights are random
(speed does not depend on them).

    python benchmarks/tokenize_audio.py [--clips 48] [--arch tiny|dac16k] [--workers 1]

Prints JSON and a markdown table; writes benchmarks/results/tokenize_audio.json.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from trimodal.corpora.audio import AudioCorpusOptions, decode_audio, open_audio_corpus
from trimodal.jobs.audio import AudioEncoder
from trimodal.io import resolve_device
from trimodal.jobs.runner import JobConfig, run_job
from trimodal.tokenizers.audio import DAC16K_PRESET, TINY_PRESET, AudioTokenizer, to_codec_input
from trimodal.tokenizers.text import TextTokenizer, TextTokenizerConfig


def write_clips(root: Path, n: int, seed: int = 0) -> float:
    """n speech-like clips of 1-4 s (harmonic tones with syllable-rate envelopes + noise)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    total = 0.0
    for i in range(n):
        sr = 44100 if i % 3 == 0 else 16000
        seconds = float(rng.uniform(1.0, 4.0))
        t = np.arange(int(sr * seconds)) / sr
        f0 = rng.uniform(90, 250)
        x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
        x = 0.2 * x * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)) + 0.01 * rng.standard_normal(t.size)
        if sr == 44100:
            x = np.stack([x, 0.8 * x], 1)
        buf = io.BytesIO()
        sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
        (root / f"{i:05d}.wav").write_bytes(buf.getvalue())
        (root / f"{i:05d}.txt").write_text(f"clip number {i} says something")
        total += seconds
    return total


def bare_rate(tok: AudioTokenizer, waves: list[np.ndarray], batch: int, device: torch.device) -> float:
    tok.encode(waves[:batch], device=device)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(0, len(waves), batch):
        tok.encode(waves[i:i + batch], device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return sum(w.size for w in waves) / tok.sample_rate / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--arch", choices=["tiny", "dac16k"], default="tiny")
    ap.add_argument("--n-q", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (codes then differ from fp32)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "tokenize_audio.json"))
    args = ap.parse_args()

    device = resolve_device(args.device)
    cfg = TINY_PRESET if args.arch == "tiny" else DAC16K_PRESET
    tok = AudioTokenizer.from_config(cfg, n_q=min(args.n_q, cfg.n_codebooks), seed=0)
    tok.use_bf16 = args.bf16
    text_tok = TextTokenizer.train([f"clip number {i} says something" for i in range(200)],
                                   config=TextTokenizerConfig(vocab_size=300, hard_vocab_limit=False))
    root = Path(tempfile.mkdtemp(prefix="audiobench-"))
    try:
        audio_seconds = write_clips(root / "folder", args.clips)
        waves = []
        for p in sorted((root / "folder").glob("*.wav")):
            audio, sr = decode_audio(p.name, p.read_bytes())
            waves.append(to_codec_input(audio, sr, tok.sample_rate))
        bare = bare_rate(tok, waves, args.batch_size, device)
        single = bare_rate(tok, waves[: max(4, args.clips // 4)], 1, device)
        corpus = open_audio_corpus(str(root / "folder"), "folder",
                                   AudioCorpusOptions(name="bench", unit_size=max(1, args.clips // 4)))
        t0 = time.perf_counter()
        rep = run_job(corpus, AudioEncoder(tok, text_tok), JobConfig(
            out=str(root / "out"), batch_size=args.batch_size, workers=args.workers, device=str(device),
            progress=False))
        job_seconds = time.perf_counter() - t0
        assert rep["samples_ok"] == args.clips, rep
        job = audio_seconds / job_seconds
        # Bare again after the job: the ratio uses the mean, so load drift favours neither side.
        bare_after = bare_rate(tok, waves, args.batch_size, device)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    bare_mean = (bare + bare_after) / 2
    report = {
        "question": "audio seconds encoded per wall second: job (decode+resample+encode+write) vs bare encoder",
        "device": str(device), "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), "arch": args.arch, "tokenizer": tok.name,
        "n_q": tok.n_q, "clips": args.clips, "audio_seconds": round(audio_seconds, 2),
        "batch_size": args.batch_size, "workers": args.workers, "bf16": args.bf16,
        "bare_batched_audio_s_per_s": round(bare, 2), "bare_batched_after_audio_s_per_s": round(bare_after, 2),
        "bare_one_clip_at_a_time_audio_s_per_s": round(single, 2),
        "job_audio_s_per_s": round(job, 2), "job_ratio_to_bare": round(job / bare_mean, 3),
        "batching_gain": round(bare_mean / single, 3),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print()
    print(f"| run ({args.arch}, {device}, batch {args.batch_size}) | audio s / s | ratio to bare batched |")
    print("|---|---|---|")
    print(f"| bare, batched (mixed lengths, exact), before / after | {bare:.1f} / {bare_after:.1f} | 1.00 (mean) |")
    print(f"| bare, one clip at a time | {single:.1f} | {single / bare_mean:.2f} |")
    print(f"| job, folder of WAV, {args.workers} workers | {job:.1f} | {job / bare_mean:.2f} |")


if __name__ == "__main__":
    main()
