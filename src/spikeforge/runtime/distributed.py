"""DistributedDataParallel set-up from the torchrun environment (NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "average_gradients", "broadcast_state"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device, timeout_minutes: float) -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE > 1``); otherwise single process.

    A rank that waits ``timeout_minutes`` for the others (joining, or in a collective) fails with an
    error instead of waiting forever (NCCL: its watchdog stops the process).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                timeout=timedelta(minutes=timeout_minutes))
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def cleanup_distributed(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def _coalesced(tensors: list[torch.Tensor], collective) -> None:
    """Run ``collective`` on one flat tensor per dtype of ``tensors``, then copy the result back."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in tensors:
        by_dtype.setdefault(tensor.dtype, []).append(tensor)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        collective(flat)
        offset = 0
        for t in group:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def average_gradients(params, info: DistInfo) -> None:
    """Each gradient of ``params`` replaced by its mean over the ranks (what DDP's reduction does), in one
    all-reduce per dtype; parameters without a gradient are skipped (on every rank alike)."""
    if info.enabled:
        _coalesced([p.grad for p in params if p.grad is not None],
                   lambda flat: (dist.all_reduce(flat), flat.div_(info.world_size)))


def broadcast_state(module: torch.nn.Module, info: DistInfo, buffers_only: bool = False, src: int = 0) -> None:
    """``module``'s parameters and buffers (e.g. batch-norm statistics; only those with ``buffers_only``)
    set to rank ``src``'s on every rank."""
    if info.enabled:
        tensors = [*([] if buffers_only else module.parameters()), *module.buffers()]
        with torch.no_grad():
            _coalesced(tensors, lambda flat: dist.broadcast(flat, src))
