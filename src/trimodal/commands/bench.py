"""`trimodal bench recon`: compare tokenizers by reconstruction on a held-out set."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="reconstruction benchmarks")
    bsub = p.add_subparsers(dest="what", required=True)
    r = bsub.add_parser(
        "recon", help="compare tokenizers by reconstruction on a held-out set",
        description="Encode and decode a held-out set with each tokenizer and write recon.json, "
                    "recon.md (one comparison table per modality) and index.html (examples) to "
                    "--out. See docs/recon_benchmark.md.")
    r.add_argument("--tokenizer", action="append", required=True,
                   metavar="KIND:[FORMAT:]PATH[:n_q=N][:label=NAME]",
                   help="image:FOLDER (our image tokenizer), audio:FILE.safetensors (our DAC), "
                        "dac:FILE.pth (upstream DAC weights), or MODALITY:FORMAT:PATH of a registered "
                        "format; repeat to compare; the same DAC at several n_q compares codebook counts")
    r.add_argument("--data", action="append", required=True,
                   help="folder (recursive) or file of held-out images (png/jpg/webp/bmp) and/or "
                        "audio (wav/flac/ogg); repeatable; each tokenizer reads its modality")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--limit", type=int, default=None, help="at most N files per modality (sorted order)")
    r.add_argument("--fid", action=argparse.BooleanOptionalAction, default=None,
                   help="FID on images (default: when Inception weights are installed)")
    r.add_argument("--fid-weights", default=None, help="FID Inception weights file (default: searched)")
    r.add_argument("--image-size", type=int, default=None,
                   help="crop/resize images to this size (default: each tokenizer's image_size)")
    r.add_argument("--resize-policy", default=None, choices=["center_crop", "resize", "pad"])
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--examples", type=int, default=4, help="items per modality shown in index.html")
    r.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    r.add_argument("--bf16", action="store_true", help="bf16 autocast in the tokenizers (CUDA)")
    r.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(run=run, stage=r.prog)


def run(args: argparse.Namespace) -> int:
    import torch

    from trimodal.metrics.recon import ReconBenchConfig, run_recon_bench, write_outputs
    from trimodal.tokenizers.spec import parse_tokenizer_spec

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = ReconBenchConfig(
        tokenizers=[parse_tokenizer_spec(t) for t in args.tokenizer], data=args.data,
        limit=args.limit, fid=args.fid, fid_weights=args.fid_weights, image_size=args.image_size,
        resize_policy=args.resize_policy, batch_size=args.batch_size, examples=args.examples,
        device=args.device, bf16=args.bf16, progress=not args.no_progress)
    result = run_recon_bench(cfg)
    paths = write_outputs(result, args.out)
    with open(paths["markdown"]) as f:
        print(f.read())
    print(json.dumps(paths))
    return 0
