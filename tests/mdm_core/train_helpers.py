"""Shared tiny setup for trainer tests; also the torchrun entry point of the DDP/FSDP tests.

    python -m torch.distributed.run --nproc_per_node 2 train_helpers.py OUT_DIR [fsdp]
    SLURM_PROCID=r SLURM_NTASKS=2 MASTER_ADDR=... MASTER_PORT=... python train_helpers.py OUT_DIR

With `fsdp`: FSDP2, 2 micro-batches per step, trained to step 3 (checkpoint), then resumed
from that checkpoint in a second `train` call to step 6.
"""

from __future__ import annotations

import json
import os
import sys

from trimodal.config import from_dict
from trimodal.mdm_core.config import TrainConfig
from trimodal.mdm_core.data import InMemoryBatches, synthetic_corpus
from trimodal.mdm_core.trainer import dist_env, train
from trimodal.packing.vocab import Vocab

SEQ_LEN = 24


def tiny_vocab() -> Vocab:
    return Vocab.from_sizes(32, 16, 8, 2)


def tiny_config(out_dir: str, **over) -> TrainConfig:
    base = {
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_len": SEQ_LEN},
        "data": {"batch_size": 4},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "out_dir": out_dir, "max_steps": 6, "log_every": 1, "eval_every": 0, "ckpt_every": 0,
        "progress": False, "device": "cpu",
    }
    for key, value in over.items():
        node = base
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return from_dict(TrainConfig, base)


def tiny_tokens(n: int = 64, seed: int = 0):
    return synthetic_corpus(tiny_vocab(), n, SEQ_LEN, seed=seed)


def _fsdp_phases(out: str, rank: int, world: int) -> list[float]:
    losses = []
    for steps in (3, 6):
        cfg = tiny_config(out, parallel="fsdp", grad_accum=2, max_steps=steps, ckpt_every=3)
        data = InMemoryBatches(tiny_tokens(), cfg.data.batch_size, rank=rank, world_size=world)
        losses += train(cfg, tiny_vocab(), data).losses
    return losses


if __name__ == "__main__":
    out = sys.argv[1]
    env = dist_env()  # torchrun's variables, or SLURM's under a plain launch
    rank, world = env.rank, env.world_size
    if sys.argv[2:] == ["fsdp"]:
        losses = _fsdp_phases(out, rank, world)
    else:
        cfg = tiny_config(out, **{"masking.anti_masking": True})
        data = InMemoryBatches(tiny_tokens(), cfg.data.batch_size, rank=rank, world_size=world)
        losses = train(cfg, tiny_vocab(), data).losses
    if rank == 0:
        with open(os.path.join(out, "losses.json"), "w") as f:
            json.dump(losses, f)
