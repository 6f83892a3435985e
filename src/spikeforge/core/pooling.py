"""Average pooling whose backward keeps only its input's shape.

``torch.nn.AvgPool2d`` saves its whole input for backward although the gradient needs only its
sizes and strides. In a spiking network that input is a neuron's spikes, nothing else keeps them,
and saving them costs a full-size tensor per pool (or, under
:class:`~spikeforge.core.packing.pack_spikes`, packing and unpacking them for nothing).
:class:`AvgPool2d` computes the same forward and backward and keeps the geometry only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["AvgPool2d"]


class _AvgPoolShapeOnly(torch.autograd.Function):
    """``F.avg_pool2d(x, *geometry)``; saves ``x``'s sizes, strides, dtype and device, not ``x``."""

    @staticmethod
    def forward(ctx, x: Tensor, geometry: tuple):
        ctx.geometry = geometry
        ctx.layout = (x.shape, x.stride(), x.dtype, x.device)
        return F.avg_pool2d(x, *geometry)

    @staticmethod
    def backward(ctx, grad: Tensor):
        size, stride, dtype, device = ctx.layout
        # The backward reads only the input's sizes and memory format: an uninitialised stand-in (never touched,
        # so large ones cost no page faults) with the same strides.
        stand_in = torch.empty_strided(size, stride, dtype=dtype, device=device)
        return torch.ops.aten.avg_pool2d_backward(grad.contiguous(memory_format=_memory_format(stand_in)), stand_in,
                                                  *ctx.geometry), None


def _memory_format(t: Tensor) -> torch.memory_format:
    channels_last = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


class AvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` (same arguments, results and gradients) that does not keep its input for backward."""

    def forward(self, x: Tensor) -> Tensor:
        if type(x) is not Tensor or not (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        geometry = (_pair(self.kernel_size), _pair(self.stride if self.stride is not None else self.kernel_size),
                    _pair(self.padding), self.ceil_mode, self.count_include_pad, self.divisor_override)
        return _AvgPoolShapeOnly.apply(x, geometry)


def _pair(value) -> list[int]:
    return list(value) if isinstance(value, (tuple, list)) else [value, value]
