"""Which demo tokenizer reconstructs best, and what do more DAC codebooks buy?

The recorded comparison of issue 9 (the paper's tokenizer tables, at demo scale): generates the
demo corpus (if absent), trains the three image tokenizers (MoVQ, FSQ, LFQ: `cpu_preset`, same
steps) and one tiny DAC with 8 codebooks and quantizer dropout 0.5 (so it can be evaluated with
its first 2, 4 or 8 codebooks), then runs `trimodal bench recon` over the held-out demo images
and clips. Trainings run in `--jobs` worker processes with one torch thread each (on a shared
2-core machine, one thread per process is faster than two competing ones).

    python benchmarks/recon_demo.py [--work build/recon_demo] [--image-steps 600] \
        [--dac-steps 800] [--jobs 2] [--examples 3]

Writes benchmarks/results/recon_demo.json, .md and the HTML page under
benchmarks/results/recon_demo/. A rerun reuses the corpus and finished trainings in --work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
IMAGE_KINDS = ("movq", "fsq", "lfq")
LABELS = {"movq": "MoVQ", "fsq": "FSQ", "lfq": "LFQ"}
DAC_N_Q = (2, 4, 8)


def train_image(kind: str, data: str, out: str, steps: int) -> dict:
    """One image tokenizer (worker process); returns what the record keeps of the run."""
    from trimodal.tokenizers.image.train import cpu_preset, train

    torch.set_num_threads(1)
    if (Path(out) / "tokenizer" / "config.json").exists():
        return {"kind": kind, "reused": True, "tokenizer": f"{out}/tokenizer"}
    cfg = cpu_preset(kind)
    cfg.data, cfg.out, cfg.steps = data, out, steps
    res = train(cfg, resume=True, progress=False)
    return {"kind": kind, "name": res.tokenizer.name, "steps": res.step, "image_size": cfg.model.image_size,
            "train_seconds": round(res.seconds, 1), "final": {k: round(v, 4) for k, v in res.metrics.items()},
            "tokenizer": f"{out}/tokenizer"}


def train_dac(data: str, out: str, steps: int) -> dict:
    """The tiny DAC preset with 8 codebooks and quantizer dropout (worker process)."""
    from trimodal.tokenizers.audio import TINY_PRESET
    from trimodal.tokenizers.audio_train import AudioTrainConfig, train_audio_tokenizer

    torch.set_num_threads(1)
    path = Path(out) / "tokenizer.safetensors"
    if path.exists():
        return {"reused": True, "tokenizer": str(path)}
    model = dataclasses.replace(TINY_PRESET, n_codebooks=8, quantizer_dropout=0.5)
    cfg = AudioTrainConfig(model=model, data=[data], steps=steps, batch_size=4, segment_seconds=0.5,
                           checkpoint_every=100)
    t0 = time.perf_counter()
    tok = train_audio_tokenizer(cfg, out, resume=True, progress=False)
    log_lines = (Path(out) / "log.jsonl").read_text().splitlines()
    last = json.loads(log_lines[-1]) if log_lines else {}
    return {"name": tok.name, "steps": steps, "batch_size": cfg.batch_size,
            "segment_seconds": cfg.segment_seconds, "quantizer_dropout": model.quantizer_dropout,
            "train_seconds": round(time.perf_counter() - t0, 1),
            "final": {k: round(v, 4) for k, v in last.items() if k.startswith("loss")},
            "tokenizer": str(path)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(ROOT / "build" / "recon_demo"), help="corpus + trainings")
    ap.add_argument("--image-steps", type=int, default=600)
    ap.add_argument("--dac-steps", type=int, default=800)
    ap.add_argument("--jobs", type=int, default=2, help="training processes (1 torch thread each)")
    ap.add_argument("--examples", type=int, default=3, help="items per modality on the HTML page")
    ap.add_argument("--fid", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("recon_demo")

    from trimodal.corpora.demo import DemoCorpusConfig, generate
    from trimodal.metrics.recon import (ReconBenchConfig, TokenizerSpec, markdown, run_recon_bench,
                                        write_html)

    t0 = time.perf_counter()
    work = Path(args.work)
    corpus = work / "corpus"
    info = generate(corpus, DemoCorpusConfig())
    log.info("demo corpus in %s (speech: %s)", corpus, info["speech_source"])

    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        dac_job = pool.submit(train_dac, str(corpus / "audio" / "train"), str(work / f"dac_{args.dac_steps}"), args.dac_steps)
        image_jobs = [pool.submit(train_image, kind, str(corpus / "images" / "train"), str(work / f"img_{kind}_{args.image_steps}"),
                                  args.image_steps) for kind in IMAGE_KINDS]
        training = {"image": [j.result() for j in image_jobs], "dac": dac_job.result()}
    train_seconds = time.perf_counter() - t0
    log.info("training done in %.0f s: %s", train_seconds, json.dumps(training))

    torch.set_num_threads(min(2, torch.get_num_threads()))
    specs = [TokenizerSpec("image", r["tokenizer"], label=LABELS[r["kind"]]) for r in training["image"]]
    specs += [TokenizerSpec("audio", training["dac"]["tokenizer"], n_q=n, label=f"DAC {n}q") for n in DAC_N_Q]
    cfg = ReconBenchConfig(tokenizers=specs, data=[str(corpus / "images" / "heldout"), str(corpus / "audio" / "heldout")],
                           fid=args.fid, examples=args.examples, progress=False)
    result = run_recon_bench(cfg)

    results = Path(args.results)
    record = result.to_dict()
    record["benchmark"] = "recon_demo"
    record["training"] = training
    record["corpus"] = info
    record["seconds"] = {"training": round(train_seconds, 1), "total": round(time.perf_counter() - t0, 1)}
    (results / "recon_demo.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    table = markdown(result)
    (results / "recon_demo.md").write_text(table)
    html_dir = results / "recon_demo"
    shutil.rmtree(html_dir, ignore_errors=True)
    write_html(result, html_dir, title="Demo tokenizer reconstruction (benchmarks/recon_demo.py)")
    size = sum(p.stat().st_size for p in html_dir.rglob("*") if p.is_file())
    print(json.dumps({"seconds": record["seconds"], "html_bytes": size}))
    print(table)


if __name__ == "__main__":
    main()
