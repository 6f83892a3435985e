"""The memory layouts the compiled kernels run on directly.

A kernel walks ``t[T, ...]`` as ``T`` blocks of ``N = t[0].numel()`` elements, one
block per step, stepping ``N`` elements from one step to the next; within a step
any dense order works as long as every tensor of the call uses the same one.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dense", "like", "fits_step"]


def _time_major_dense(t: Tensor) -> bool:
    """Whether ``t[T, ...]`` is one block per step in memory, each step dense in some
    order (contiguous, or channels-last images): the kernel then runs on raw memory."""
    step = t[0]
    dense_step = step.is_contiguous() or (step.dim() == 4 and step.is_contiguous(memory_format=torch.channels_last))
    return dense_step and (t.shape[0] == 1 or t.stride(0) == step.numel())


def dense(t: Tensor) -> Tensor:
    """``t`` itself when a kernel can read its memory directly, else a contiguous copy."""
    return t if _time_major_dense(t) else t.contiguous()


def like(t: Tensor, layout: Tensor) -> Tensor:
    """``t`` (its dtype kept) with exactly ``layout``'s strides (copying only when they differ)."""
    return t if t.stride() == layout.stride() else torch.empty_like(layout, dtype=t.dtype).copy_(t)


def fits_step(value, step_shape: torch.Size) -> bool:
    """Whether a neuron parameter ``value`` is a float or a tensor that broadcasts to one time step."""
    if not isinstance(value, Tensor):
        return True
    try:
        return torch.broadcast_shapes(value.shape, step_shape) == step_shape
    except RuntimeError:
        return False
