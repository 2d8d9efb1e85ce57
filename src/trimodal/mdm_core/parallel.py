"""How the model is spread over the ranks of a `torchrun` job: DDP replicas or FSDP2 shards.

DDP keeps a whole copy of the model and its AdamW state on every rank and all-reduces
gradients; it is the simple choice while they fit one device. FSDP2 (`fully_shard`, one
unit per transformer block plus the root for embeddings, final norm and head) keeps only
1/world of every parameter, gradient and optimizer state on each rank and gathers a block's
weights just for its forward and backward: the choice for models that do not fit (a 3B model
with fp32 AdamW state needs ~48 GB before activations).

Checkpoints stay one file of full tensors either way, so the sampler and a run with another
world size read them alike. Under FSDP the optimizer state in it is keyed by parameter name
(torch.distributed.checkpoint's full state dict) rather than by position, which is why a run
resumes only with the `parallel` it was saved with.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn as nn

def shard(model: nn.Module, device: torch.device, world_size: int, bf16: bool) -> None:
    """fully_shard each block, then the root (in place: parameters become DTensor shards).

    Build the optimizer after this: it must hold the sharded parameters. With `bf16` (CUDA
    runs) blocks compute in bf16 and gradients are reduced in fp32.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if bf16 else MixedPrecisionPolicy())
    for block in model.blocks:  # type: ignore[attr-defined]
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


@contextlib.contextmanager
def no_grad_sync(model: nn.Module) -> Iterator[None]:
    """FSDP2's counterpart of DDP.no_sync: accumulate this micro-batch's gradients locally;
    the next synced backward reduces the sum."""
    model.set_requires_gradient_sync(False)  # type: ignore[operator]
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)  # type: ignore[operator]


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Full (unsharded, CPU) model and optimizer state of a sharded model.

    A collective: every rank must call it; rank 0 gets the tensors, the others empty dicts.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(model, optimizer, options=options)


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                    optim_state: dict) -> None:
    """Each rank keeps its shard of full tensors (every rank has read the checkpoint)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
                   options=StateDictOptions(full_state_dict=True))


def total_norm(norm: torch.Tensor) -> torch.Tensor:
    """clip_grad_norm_'s result as a plain tensor (a DTensor under FSDP)."""
    full = getattr(norm, "full_tensor", None)
    return full() if callable(full) else norm
