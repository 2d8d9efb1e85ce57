"""The demo's HTML report: what each stage did, with curves, pictures and sound."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from trimodal.report.html import Report  # noqa: E402

if TYPE_CHECKING:
    from trimodal.demo.pipeline import Demo


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _curve(rows: list[dict[str, Any]], keys: list[str], title: str, logy: bool = False):
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for key in keys:
        pts = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
        if pts:
            ax.plot(*zip(*pts), label=key)
    ax.set_xlabel("step")
    ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def _summary(demo: "Demo", name: str) -> dict[str, Any]:
    marker = demo.runner.marker(name)
    return json.loads(marker.read_text()) if marker.exists() else {"seconds": None, "summary": {}}


def _flat_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.get("mean") if isinstance(v, dict) else v) for k, v in summary.items()}


def write_report(demo: "Demo") -> Path:
    out = demo.out / "report"
    rep = Report("trimodal demo", out)
    stages = ["corpus", "text_tokenizer", "image_tokenizer", "audio_tokenizer", "tokenize", "pack", "train",
              "sample", "recon"]
    rep.paragraph("The whole pipeline on the bundled, generated demo corpus: tokenizers trained here, corpora "
                  "tokenized by the batch jobs, packed into shards, a small masked diffusion model trained on the "
                  "mix, then sampled. Everything is small so that it runs on two CPU cores in minutes: read the "
                  "numbers as a smoke test of the pipeline, not as model quality.", note=True)
    rep.heading("Stages")
    rep.table([{"stage": s, "seconds": round(_summary(demo, s)["seconds"] or 0.0, 1)} for s in stages])

    corpus = _summary(demo, "corpus")["summary"]
    rep.heading("Corpus")
    rep.table([{"part": k, "count": v} for k, v in corpus.get("config", {}).items() if k.startswith("n_")])
    rep.paragraph(f"Speech source: {corpus.get('speech_source', '?')}.")

    rep.heading("Tokenizers")
    tt = _summary(demo, "text_tokenizer")["summary"]
    it = _summary(demo, "image_tokenizer")["summary"]
    at = _summary(demo, "audio_tokenizer")["summary"]
    rep.table([
        {"tokenizer": "text (SentencePiece)", "vocabulary": tt.get("vocab_size"), "hash": tt.get("hash")},
        {"tokenizer": f"image ({it.get('quantizer')})", "vocabulary": it.get("vocab_size"),
         "hash": it.get("hash"), "grid": str(it.get("grid"))},
        {"tokenizer": "audio (DAC)", "vocabulary": at.get("codebook_size"), "hash": at.get("hash"),
         "codebooks": at.get("n_codebooks")},
    ])
    image_log = _jsonl(demo.tok_dir / "image" / "log.jsonl")
    if image_log:
        rep.figure(_curve(image_log, ["loss", "recon"], "image tokenizer training loss", logy=True))
        rep.figure(_curve(image_log, ["psnr"], "image tokenizer PSNR (dB)"))
    audio_log = _jsonl(demo.tok_dir / "audio" / "log.jsonl")
    if audio_log:
        rep.figure(_curve(audio_log, ["loss/mel", "loss/waveform"], "audio tokenizer losses"))

    rep.heading("Tokenization jobs")
    reports = _summary(demo, "tokenize")["summary"].get("reports", {})
    rows = []
    for kind, r in reports.items():
        rows.append({"job": kind, "samples ok": r.get("samples_ok", r.get("ok")),
                     "skipped": json.dumps(r.get("skipped", {})), "seconds": r.get("seconds"),
                     "items/s": r.get("items_per_second", r.get("items_per_s"))})
    rep.table(rows)

    pack = _summary(demo, "pack")["summary"]
    rep.heading("Packing and shards")
    rep.table(pack.get("sets", []))
    rep.preformatted(json.dumps(pack.get("pack_stats", {}), indent=1))

    rep.heading("Masked diffusion model")
    mdm_rows = _jsonl(demo.mdm_dir / "metrics.jsonl")
    if mdm_rows:
        rep.figure(_curve([r for r in mdm_rows if "loss" in r], ["loss"], "MDM training loss (ELBO, nats/token)"))
        keys = sorted({k for r in mdm_rows for k in r if k.startswith("bpt/") or k.startswith("bpt_")})
        if keys:
            rep.figure(_curve(mdm_rows, keys, "bits per token by modality/task"))
    rep.table([_summary(demo, "train")["summary"] | {"sources": "see config"}],
              ["steps", "first_loss", "last_loss"])

    sample = _summary(demo, "sample")["summary"]
    if sample:
        t2i = sample["t2i"]
        rep.heading("Text to image")
        recon_summary = _summary(demo, "recon")["summary"] or {}
        retention = (recon_summary.get("image") or {}).get("colour_retention")
        rep.paragraph(
            f"Dominant colour of the generated image matches the caption's colour in "
            f"{t2i['colour_match_rate']:.0%} of {t2i['n']} samples. Baselines: "
            f"{t2i.get('shuffled_rate', float('nan')):.0%} if the images ignored their captions (same "
            f"colours drawn, captions shuffled), {t2i['chance_rate']:.0%} for uniform colours"
            + (f"; ceiling: the image tokenizer keeps the dominant colour of {retention:.0%} of "
               f"held-out images through encode/decode." if retention is not None else "."))
        imgs = []
        for i, row in enumerate(t2i["samples"][:24]):
            p = demo.samples / f"t2i_{i:03d}.png"
            if p.exists():
                imgs.append((Image.open(p).convert("RGB"), f"{row['caption']} -> {row['dominant_colour']}"))
        rep.images(imgs, scale=3)
        rep.heading("Text to speech")
        import soundfile as sf
        clips = []
        for i, text in enumerate(sample["t2s"]["texts"]):
            p = demo.samples / f"t2s_{i:03d}.wav"
            if p.exists():
                wav, sr = sf.read(p, dtype="float32")
                clips.append((wav, sr, text))
        rep.audio(clips)
        rep.heading("Text continuation")
        rep.table(sample["text"])

    recon = _summary(demo, "recon")["summary"]
    if recon:
        rep.heading("Tokenizer reconstruction (held-out demo data)")
        img = recon["image"]
        rep.table([{"tokens/image": img["tokens_per_image"], "codebook usage": img["codebook_usage"],
                    **_flat_metrics(img["metrics"]),
                    **{k: (v.get("fid") if isinstance(v, dict) else v) for k, v in img.get("set_metrics", {}).items()}}])
        pairs = []
        for i in range(8):
            o, r = demo.samples / f"recon_orig_{i}.png", demo.samples / f"recon_img_{i}.png"
            if o.exists() and r.exists():
                pairs += [(Image.open(o).convert("RGB"), "original"), (Image.open(r).convert("RGB"), "reconstruction")]
        rep.images(pairs, scale=3)
        rep.table([{"n_q": r["n_q"], "tokens/s": r["tokens_per_second"], "bitrate": r["bitrate"],
                    **_flat_metrics(r["metrics"])} for r in recon["audio"]])
    return rep.write()
