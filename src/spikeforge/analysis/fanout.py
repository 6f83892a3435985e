"""Fan-out: how many operations each input element of a layer triggers.

An event-driven layer does one accumulate per (nonzero input element, output
it reaches), so its operation count on a sparse input is the sum of the
fan-out over the nonzero inputs. For sliding windows (convolution, pooling)
the fan-out separates over the spatial dimensions: along one dimension, input
index ``i`` is read by the pairs (output ``o``, tap ``j``) with
``o * stride - padding + j * dilation == i``. Zero padding is read by the
window but is not an input element, so it triggers nothing: these counts are
exact at the borders. A convolution multiplies the spatial count by the
output channels each input channel connects to, ``C_out / groups``.
"""

from __future__ import annotations

from functools import reduce

import torch
from torch import Tensor, nn

__all__ = [
    "CONV_TYPES", "POOL_TYPES", "ADAPTIVE_POOL_TYPES", "pool_dims", "window_reads", "adaptive_reads", "spatial_fanout",
]

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_POOLS_BY_DIMS = {
    1: (nn.AvgPool1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d),
    2: (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d),
    3: (nn.AvgPool3d, nn.MaxPool3d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d),
}
POOL_TYPES = tuple(t for types in _POOLS_BY_DIMS.values() for t in types[:2])
ADAPTIVE_POOL_TYPES = tuple(t for types in _POOLS_BY_DIMS.values() for t in types[2:])


def pool_dims(module: nn.Module) -> int:
    """Number of spatial dimensions (1, 2 or 3) of a pooling layer."""
    for dims, types in _POOLS_BY_DIMS.items():
        if isinstance(module, types):
            return dims
    raise TypeError(f"not a pooling layer: {type(module).__name__}")


def window_reads(size_in: int, size_out: int, kernel: int, stride: int, padding: int, dilation: int) -> Tensor:
    """Along one dimension, the number of (output, tap) pairs reading each input index: int64 ``[size_in]``."""
    starts = torch.arange(size_out) * stride - padding
    taps = (starts[:, None] + torch.arange(kernel) * dilation).flatten()
    inside = taps[(taps >= 0) & (taps < size_in)]
    return torch.bincount(inside, minlength=size_in)


def adaptive_reads(size_in: int, size_out: int) -> Tensor:
    """Along one dimension of an adaptive pool, the number of windows containing each input index.

    Window ``o`` is ``[floor(o * in / out), ceil((o + 1) * in / out))``, as PyTorch computes it.
    """
    o = torch.arange(size_out)
    start = (o * size_in) // size_out
    end = ((o + 1) * size_in + size_out - 1) // size_out
    index = torch.arange(size_in)
    return ((index >= start[:, None]) & (index < end[:, None])).sum(0)


def _per_dim(value, dims: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


def _conv_padding(conv: nn.Module, dims: int) -> tuple[int, ...]:
    """Left padding per spatial dimension, also for ``padding="same"`` / ``"valid"``."""
    if conv.padding == "valid":
        return (0,) * dims
    if conv.padding == "same":
        return tuple(d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size))
    return _per_dim(conv.padding, dims)


def spatial_fanout(module: nn.Module, name: str, size_in: tuple[int, ...], size_out: tuple[int, ...]) -> Tensor:
    """Per input position, the number of (output position, kernel tap) pairs reading it:
    int64 of shape ``size_in`` (the spatial dimensions, without batch and channels).

    ``module`` is a convolution or a (possibly adaptive) pooling layer, ``name`` its
    path (named in errors); ``size_out`` is the spatial size of its actual output.
    """
    dims = len(size_in)
    if isinstance(module, ADAPTIVE_POOL_TYPES):
        per_dim = [adaptive_reads(i, o) for i, o in zip(size_in, size_out)]
    else:
        if isinstance(module, CONV_TYPES):
            if module.padding_mode != "zeros":
                raise ValueError(f"layer {name}: padding_mode={module.padding_mode!r} is not supported by the "
                                 "operation counter (only zero padding)")
            padding = _conv_padding(module, dims)
        else:
            padding = _per_dim(module.padding, dims)
        kernel = _per_dim(module.kernel_size, dims)
        stride = _per_dim(module.stride, dims)
        dilation = _per_dim(getattr(module, "dilation", 1), dims)
        per_dim = [window_reads(*args) for args in zip(size_in, size_out, kernel, stride, padding, dilation)]
    return reduce(lambda grid, reads: grid[..., None] * reads, per_dim)
