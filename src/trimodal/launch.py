"""Where a process learns its place in a multi-process run: torchrun's or SLURM's variables.

Jobs, sweeps and the trainer all take (rank, world size) the same way: explicit values win,
then torchrun's RANK/WORLD_SIZE, then SLURM's SLURM_PROCID/SLURM_NTASKS (so `srun` alone
launches them), else one process. The device index follows LOCAL_RANK, else SLURM_LOCALID.
"""

from __future__ import annotations

import os
from typing import Mapping

from trimodal.config import ConfigError


def _from_env(env: Mapping[str, str], *names: str) -> int | None:
    for n in names:
        if env.get(n, "").strip():
            try:
                return int(env[n])
            except ValueError:
                raise ConfigError(f"environment variable {n}={env[n]!r} is not an integer") from None
    return None


def resolve_rank(rank: int | None = None, world_size: int | None = None,
                 env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(rank, world size): explicit values, then RANK/WORLD_SIZE, then SLURM's, then 0 of 1."""
    env = os.environ if env is None else env
    r = rank if rank is not None else _from_env(env, "RANK", "SLURM_PROCID")
    w = world_size if world_size is not None else _from_env(env, "WORLD_SIZE", "SLURM_NTASKS")
    r = 0 if r is None else r
    w = 1 if w is None else w
    if w <= 0 or not 0 <= r < w:
        raise ConfigError(f"rank {r} out of range for world size {w}")
    return r, w


def local_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's index on its host (which GPU it takes): LOCAL_RANK, SLURM_LOCALID, else 0."""
    env = os.environ if env is None else env
    found = _from_env(env, "LOCAL_RANK", "SLURM_LOCALID")
    return 0 if found is None else found
