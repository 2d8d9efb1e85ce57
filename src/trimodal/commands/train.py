"""`trimodal train`: train a masked diffusion model on shards (every torchrun process runs it)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("trimodal")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a masked diffusion model on shards",
                       description="Train an MDM (see docs/mdm_core.md). Under torchrun every "
                                   "process runs this same command.")
    p.add_argument("--config", help="YAML TrainConfig (model, masking, optim, sde, data, ...)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides, YAML values: optim.lr=1e-3 data.train=shards/text")
    p.set_defaults(run=run, stage=p.prog)


def run(args: argparse.Namespace) -> int:
    from trimodal.mdm_core.config import load_train_config
    from trimodal.mdm_core.trainer import run as run_training

    cfg = load_train_config(args.config, args.overrides)
    result = run_training(cfg)
    log.info("training finished at step %d; run folder %s", result.step, cfg.out_dir)
    return 0
