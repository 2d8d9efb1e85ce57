"""`trimodal study {run,report,points}`: design-space sweeps, scaling-law fits, critical batch."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="design-space sweeps and scaling-law fits",
                       description="Sweeps over training settings, scaling-law fit, compute-optimal frontier "
                                   "and critical batch size (see docs/study.md).")
    ssub = p.add_subparsers(dest="action", required=True)
    for name, help_ in (("run", "run the sweep's missing points (resumable), then write the report"),
                        ("report", "rebuild the table and report from the finished points"),
                        ("points", "list the sweep's points and whether each is done")):
        a = ssub.add_parser(name, help=help_)
        src = a.add_mutually_exclusive_group(required=True)
        src.add_argument("--preset", help="named sweep: small (the committed report) or tiny (seconds)")
        src.add_argument("--config", help="YAML SweepConfig (base, defaults, blocks, data, analysis options)")
        a.add_argument("--out", required=True, help="sweep folder: data cache, points/<name>/result.json, tables")
        if name != "points":
            a.add_argument("--report", default=None, help="report folder (default: OUT/report)")
        if name == "run":
            a.add_argument("--rank", type=int, default=None, help="default: RANK or SLURM_PROCID, else 0")
            a.add_argument("--world-size", type=int, default=None, help="default: WORLD_SIZE or SLURM_NTASKS, else 1")
            a.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
            a.add_argument("--no-progress", action="store_true", help="no tqdm bars")
        a.set_defaults(run=run, stage=a.prog)


def run(args: argparse.Namespace) -> int:
    from trimodal import config as cfgmod
    from trimodal.study import make_report, preset, run_study
    from trimodal.study.sweep import SweepConfig, expand, result_path

    cfg = preset(args.preset) if args.preset else cfgmod.load(args.config, SweepConfig)
    if args.action == "points":
        for p in expand(cfg):
            done = "done" if result_path(args.out, p).exists() else "todo"
            print(f"{done}  {p.name}  {json.dumps(p.axes, default=str)}")
        return 0
    source = f"--preset {args.preset}" if args.preset else f"--config {args.config}"
    command = f"trimodal study run {source} --out {args.out}" + (f" --report {args.report}" if args.report else "")
    if args.action == "report":
        print(make_report(cfg, args.out, args.report, command=command))
        return 0
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    status = run_study(cfg, args.out, rank=args.rank, world_size=args.world_size, report_dir=args.report,
                       command=command, progress=not args.no_progress)
    print(json.dumps(status))
    return 1 if status["failed"] else 0
