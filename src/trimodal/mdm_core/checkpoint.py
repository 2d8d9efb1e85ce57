"""Checkpoints that load with `torch.load(weights_only=True)` and resume exactly.

Layout of one checkpoint (a folder, any fsspec URL):

    step_00001000/state.pt     model, optimizer, step, config (plain dict), vocab hash  (rank 0)
    step_00001000/rank_<r>.pt  data-reader state and RNG states of rank r              (every rank)
    latest                     text file naming the newest complete checkpoint folder

Only tensors and plain containers are stored, so loading never unpickles code. Files are
written to a temporary name and renamed, and `latest` moves last, so a crash mid-save leaves
the previous checkpoint as the one to resume from.
"""

from __future__ import annotations

import io
import logging
import posixpath
from typing import Any

import fsspec
import torch

from trimodal.errors import UserError
from trimodal.io import atomic_write
from trimodal.packing.vocab import VocabError

log = logging.getLogger(__name__)


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, incomplete or does not belong to this run."""


def _write(obj: Any, url: str) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(url, buf.getvalue())


def _read(url: str, map_location: Any = "cpu") -> Any:
    try:
        with fsspec.open(url, "rb") as f:
            data = f.read()
    except FileNotFoundError as err:
        raise CheckpointError(f"checkpoint file not found: {url}") from err
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt or not a weights-only file
        raise CheckpointError(f"{url}: cannot load as a weights-only checkpoint ({err})") from err


def step_dir(out_dir: str, step: int) -> str:
    return posixpath.join(out_dir, f"step_{step:08d}")


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_rank_state(out_dir: str, step: int, rank: int, data_state: dict | None,
                    rng: dict[str, torch.Tensor]) -> None:
    fs, path = fsspec.core.url_to_fs(step_dir(out_dir, step))
    fs.makedirs(path, exist_ok=True)
    _write({"data": data_state, "rng": rng}, posixpath.join(step_dir(out_dir, step), f"rank_{rank}.pt"))


def save_main_state(out_dir: str, step: int, model_state: dict, optim_state: dict,
                    config: dict, vocab_hash: str, extra: dict | None = None) -> None:
    d = step_dir(out_dir, step)
    fs, path = fsspec.core.url_to_fs(d)
    fs.makedirs(path, exist_ok=True)
    _write({"step": step, "model": model_state, "optimizer": optim_state, "config": config,
            "vocab_hash": vocab_hash, "extra": extra or {}}, posixpath.join(d, "state.pt"))


def mark_latest(out_dir: str, step: int) -> None:
    """Point `latest` at a checkpoint once every rank has written its part."""
    atomic_write(posixpath.join(out_dir, "latest"), posixpath.basename(step_dir(out_dir, step)))
    log.info("checkpoint saved: %s", step_dir(out_dir, step))


def latest_checkpoint(out_dir: str) -> str | None:
    fs, path = fsspec.core.url_to_fs(posixpath.join(out_dir, "latest"))
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as f:
        name = f.read().strip()
    return posixpath.join(out_dir, name)


def load_checkpoint(ckpt_dir: str, rank: int, vocab_hash: str, map_location: Any = "cpu") -> dict:
    """Main state + this rank's state; refuses a checkpoint made with another vocabulary."""
    main = _read(posixpath.join(ckpt_dir, "state.pt"), map_location)
    if main.get("vocab_hash") != vocab_hash:
        raise VocabError(f"{ckpt_dir}: checkpoint was trained with vocabulary {main.get('vocab_hash')}, "
                         f"but this run uses {vocab_hash}; refusing to load")
    per_rank = _read(posixpath.join(ckpt_dir, f"rank_{rank}.pt"), map_location)
    main["data"] = per_rank["data"]
    main["rng"] = per_rank["rng"]
    return main


def load_model_weights(ckpt_dir: str, map_location: Any = "cpu") -> tuple[dict, dict, str]:
    """(model state dict, config dict, vocab hash) for inference (the sampler)."""
    main = _read(posixpath.join(ckpt_dir, "state.pt"), map_location)
    return main["model"], main["config"], main["vocab_hash"]
