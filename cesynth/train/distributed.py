"""The processes of a data-parallel training stage (torchrun, DistributedDataParallel): who is who, and what they
agree on. With one process (WORLD_SIZE unset) every function is the single-process case: no process group."""

from __future__ import annotations

import os

import torch

from cesynth.nets.device import select_device


def init_process_group(requested):
    """(rank, world size, device, whether this call created the process group) from torchrun's env."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    device = select_device(requested)
    if world == 1:
        return 0, 1, device, False
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    own = not torch.distributed.is_initialized()
    if own:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return torch.distributed.get_rank(), world, device, own


def any_rank(signum, world, device) -> bool:
    """Whether any process got a stop signal: all must stop at the same step or DDP deadlocks."""
    if world == 1:
        return signum is not None
    flag = torch.tensor([0 if signum is None else 1], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


def mean_over_ranks(sums: dict, world, device) -> dict:
    """Per-process loss sums -> their mean over processes, so the history describes every patch."""
    if world == 1:
        return sums
    values = torch.tensor(list(sums.values()), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(values)
    return dict(zip(sums, (values / world).tolist()))


def barrier(world):
    if world > 1:
        torch.distributed.barrier()
