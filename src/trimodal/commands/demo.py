"""`trimodal demo`: the whole pipeline on the bundled demo corpus, resumable stage by stage."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on the bundled demo corpus",
                       description="corpus -> tokenizers -> jobs -> pack/shards -> MDM -> samples -> "
                       "reconstruction metrics -> OUT/report/index.html. Finished stages are reused.")
    p.add_argument("--out", default="demo_out", help="output folder (stages are resumable)")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run (what the tests use)")
    p.add_argument("--config", help="YAML with DemoConfig fields (see trimodal/demo/pipeline.py)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.set_defaults(run=run, stage=p.prog)


def run(args: argparse.Namespace) -> int:
    from trimodal.config import load
    from trimodal.demo.pipeline import Demo, DemoConfig

    cfg = load(args.config, DemoConfig) if args.config else (DemoConfig.tiny() if args.tiny else DemoConfig())
    if args.threads:
        cfg.threads = args.threads
    path = Demo(args.out, cfg).run()
    print(f"report: {path}")
    return 0
