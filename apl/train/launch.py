"""Process layout of a run: one process, or several started by torchrun.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `setup` then joins the process group with the
backend that fits the device (nccl on CUDA, gloo on CPU) and gives each process its GPU
(cuda:LOCAL_RANK). Decisions that read or write the run folder are taken on rank 0 and broadcast
(`agree`), so that a refusal stops every rank with the same message instead of leaving the others
waiting in a collective.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist


@dataclass
class Launch:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # whether `setup` created the process group (and `teardown` ends it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" is CUDA when available; a CUDA device without CUDA is a clear error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: this torch has no usable CUDA (torch {torch.__version__}, "
                             f"CUDA build: {torch.version.cuda or 'no'}); use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif device.type != "cpu":
        raise ValueError(f"--device: apl trains on cpu or cuda, got {name!r}")
    return device


def setup(device_name: str) -> Launch:
    """The process layout from torchrun's environment (or a single process without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world <= 1:
        return Launch(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    return Launch(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device, owns_group=owns)


def teardown(launch: Launch) -> None:
    if launch.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def check_batch(batch_size: int, world_size: int) -> None:
    """The global batch must split evenly over the processes."""
    if world_size > batch_size:
        raise ValueError(f"--batch-size {batch_size} is the global batch; it cannot be split over {world_size} processes "
                         "(each needs at least one image): raise --batch-size or start fewer processes")
    if batch_size % world_size:
        raise ValueError(f"--batch-size {batch_size} is the global batch and must split evenly over the {world_size} "
                         f"processes; use a multiple of {world_size}")


def agree(launch: Launch, decide: Callable[[], Any]) -> Any:
    """Runs `decide` on rank 0 and gives its result (or raises its error) on every rank."""
    if not launch.distributed:
        return decide()
    payload: list = [None]
    if launch.is_main:
        try:
            payload[0] = ("ok", decide())
        except Exception as err:  # noqa: BLE001  (re-raised below, on every rank)
            payload[0] = ("error", err)
    dist.broadcast_object_list(payload, src=0)
    status, value = payload[0]
    if status == "error":
        raise value
    return value


def all_ok(launch: Launch, ok: bool) -> bool:
    """Whether `ok` holds on every rank (a collective)."""
    if not launch.distributed:
        return ok
    flag = torch.tensor([1 if ok else 0], device=launch.device if launch.device.type == "cuda" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
