"""Rank, world size and local rank from explicit values, torchrun's or SLURM's variables."""

import pytest

from trimodal.config import ConfigError
from trimodal.launch import local_rank, resolve_rank


def test_explicit_then_torchrun_then_slurm_then_one_process():
    assert resolve_rank(env={}) == (0, 1)
    assert resolve_rank(env={"SLURM_PROCID": "1", "SLURM_NTASKS": "3"}) == (1, 3)
    both = {"RANK": "2", "WORLD_SIZE": "4", "SLURM_PROCID": "1", "SLURM_NTASKS": "3"}
    assert resolve_rank(env=both) == (2, 4)  # torchrun inside an srun allocation
    assert resolve_rank(0, 2, env=both) == (0, 2)


def test_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="SLURM_NTASKS"):
        resolve_rank(env={"SLURM_PROCID": "0", "SLURM_NTASKS": "two"})
    with pytest.raises(ConfigError, match="out of range"):
        resolve_rank(env={"RANK": "3", "WORLD_SIZE": "3"})


def test_local_rank():
    assert local_rank({}) == 0
    assert local_rank({"SLURM_LOCALID": "3"}) == 3
    assert local_rank({"LOCAL_RANK": "1", "SLURM_LOCALID": "3"}) == 1
