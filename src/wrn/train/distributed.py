"""Several processes with DistributedDataParallel, started by ``torchrun``.

``torchrun --nproc-per-node=N -m wrn train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; :func:`setup` reads
them and joins the process group (NCCL on CUDA, gloo on CPU). Without them the run is a single process and
every helper here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
    )


def setup(device_kind: str) -> DistInfo:
    """Join the process group if started by torchrun; return this process's place in it."""
    info = from_env()
    if info.enabled and not dist.is_initialized():
        if device_kind == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return info


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def finish(info: DistInfo) -> None:
    """Leave the group at a clean end: every rank finishes its collectives before any destroys the group (gloo
    can abort a process whose peer tore the group down while its last messages were in flight: "terminate
    called without an active exception"), and the DDP wrappers still held in reference cycles are freed first,
    so that the group is not destroyed again at the interpreter's exit, by their destructors. After a failure
    call :func:`teardown` alone: a barrier would wait for a rank that is gone."""
    import gc

    barrier(info)
    gc.collect()
    teardown()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj``, as a list indexed by rank (on every rank)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(info: DistInfo, tensor: torch.Tensor) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(info: DistInfo, flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (one small collective)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_buffers(info: DistInfo, module: torch.nn.Module) -> None:
    """Give every rank rank 0's BatchNorm running statistics (DDP keeps per-rank batch statistics)."""
    if not info.enabled:
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=0)
