"""The stateless layers: ``torch.nn`` modules <-> NIR nodes (conv, linear, pooling, flatten, scale).

NIR shapes exclude the batch dimension: a ``torch.nn`` layer seeing
``[N, C, H, W]`` is a NIR node of type ``[C, H, W]``, and NIR's ``Flatten``
dimensions count from the first non-batch dimension.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from .neurons import load_nir

if TYPE_CHECKING:
    import nir

__all__ = ["layer_to_nodes", "node_to_layer", "Scale", "PASSIVE"]

#: Layers that leave a tensor unchanged at inference (dropped from the graph).
PASSIVE = (nn.Identity, nn.Dropout)


class Scale(nn.Module):
    """Elementwise product with a fixed tensor (``nir.Scale``): ``[N, *shape] -> [N, *shape]``."""

    def __init__(self, scale: Tensor):
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _array(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(int(v) for v in value)


def _conv(m: nn.Conv2d, in_shape: tuple[int, ...], name: str) -> nir.Conv2d:
    if m.padding_mode != "zeros":
        raise ValueError(f"cannot export layer {name} (Conv2d): padding_mode={m.padding_mode!r} (NIR pads with zeros)")
    bias = m.bias if m.bias is not None else torch.zeros(m.out_channels)
    padding = m.padding if isinstance(m.padding, str) else _pair(m.padding)
    return load_nir().Conv2d(input_shape=tuple(in_shape[1:]), weight=_array(m.weight), stride=_pair(m.stride),
                             padding=padding, dilation=_pair(m.dilation), groups=m.groups, bias=_array(bias))


def _avg_pool(m: nn.AvgPool2d, name: str) -> nir.AvgPool2d:
    kernel = _pair(m.kernel_size)
    stride = _pair(m.stride if m.stride is not None else m.kernel_size)
    padding = _pair(m.padding)
    if m.ceil_mode or m.divisor_override is not None or (not m.count_include_pad and any(padding)):
        raise ValueError(f"cannot export layer {name} (AvgPool2d): ceil_mode, divisor_override and "
                         "count_include_pad=False have no NIR equivalent")
    return load_nir().AvgPool2d(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding))


def _adaptive_pool(m: nn.AdaptiveAvgPool2d, in_shape: tuple[int, ...], name: str) -> nir.AvgPool2d:
    """An adaptive average pool on a known input size as a fixed pool (sizes must divide)."""
    size = in_shape[1:]
    out = _pair(m.output_size) if m.output_size is not None else size
    out = tuple(s if o is None else o for s, o in zip(size, out))
    if any(s % o for s, o in zip(size, out)):
        raise ValueError(f"cannot export layer {name} (AdaptiveAvgPool2d): input size {tuple(size)} is not a "
                         f"multiple of the output size {out}")
    kernel = np.array([s // o for s, o in zip(size, out)])
    return load_nir().AvgPool2d(kernel_size=kernel, stride=kernel.copy(), padding=np.zeros(2, dtype=int))


def _flatten(m: nn.Flatten, in_shape: tuple[int, ...], name: str) -> nir.Flatten:
    if m.start_dim == 0 or m.end_dim == 0:
        raise ValueError(f"cannot export layer {name} (Flatten): it flattens the batch dimension")
    start = m.start_dim - 1 if m.start_dim > 0 else m.start_dim
    end = m.end_dim - 1 if m.end_dim > 0 else m.end_dim
    return load_nir().Flatten(input_type={"input": np.array(in_shape)}, start_dim=start, end_dim=end)


def _batch_norm(m: nn.modules.batchnorm._BatchNorm, in_shape: tuple[int, ...], name: str) -> nir.NIRNode:
    """A batch norm that no conv/linear precedes (so it was not folded), as its eval-mode affine map:
    a 1x1 ``Conv2d`` (BatchNorm2d) or an ``Affine`` (BatchNorm1d on ``[N, F]``) with a diagonal weight.
    (Not a depthwise conv: NIR's shape inference ignores ``groups``.)"""
    if m.running_mean is None or m.running_var is None:
        raise ValueError(f"cannot export layer {name} ({type(m).__name__}): no running statistics")
    scale = torch.rsqrt(m.running_var + m.eps) * (m.weight if m.weight is not None else 1.0)
    shift = (m.bias if m.bias is not None else 0.0) - m.running_mean * scale
    if isinstance(m, nn.BatchNorm2d):
        conv = nn.Conv2d(m.num_features, m.num_features, 1)
        conv.weight.data = torch.diag(scale.detach())[:, :, None, None].clone()
        conv.bias.data = shift.detach().clone()
        return _conv(conv, in_shape, name)
    if isinstance(m, nn.BatchNorm1d) and len(in_shape) == 1:
        return load_nir().Affine(weight=_array(torch.diag(scale)), bias=_array(shift))
    raise ValueError(f"cannot export layer {name} ({type(m).__name__}) on inputs of shape {tuple(in_shape)}")


def layer_to_nodes(module: nn.Module, in_shape: tuple[int, ...], name: str) -> nir.NIRNode:
    """The NIR node of a stateless layer; ``in_shape`` is its input shape without the batch.

    Raises ValueError naming the layer when NIR has no equivalent (max pooling,
    activations other than spiking neurons, ...).
    """
    if isinstance(module, nn.Conv2d):
        return _conv(module, in_shape, name)
    if isinstance(module, nn.Linear):
        nir = load_nir()
        if module.bias is None:
            return nir.Linear(weight=_array(module.weight))
        return nir.Affine(weight=_array(module.weight), bias=_array(module.bias))
    if isinstance(module, nn.AvgPool2d):
        return _avg_pool(module, name)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return _adaptive_pool(module, in_shape, name)
    if isinstance(module, nn.Flatten):
        return _flatten(module, in_shape, name)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return _batch_norm(module, in_shape, name)
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
        raise ValueError(f"cannot export layer {name} ({type(module).__name__}): NIR has no max pooling; "
                         "build the model with pool='avg'")
    raise ValueError(f"cannot export layer {name} ({type(module).__name__}): NIR export supports Conv2d, Linear, "
                     "AvgPool2d, AdaptiveAvgPool2d, Flatten, BatchNorm, Dropout, Identity, spiking neurons "
                     "and residual sums")


def _tensor(array) -> Tensor:
    return torch.as_tensor(np.asarray(array), dtype=torch.float32).clone()


def _two(value) -> tuple[int, int]:
    """An int or a 1- or 2-element array as a pair of ints."""
    values = tuple(int(v) for v in np.atleast_1d(value))
    return values * 2 if len(values) == 1 else values


def _pool_geometry(node) -> dict:
    return {"kernel_size": _two(node.kernel_size), "stride": _two(node.stride), "padding": _two(node.padding)}


def _conv_layer(node: nir.Conv2d, name: str) -> nn.Conv2d:
    weight = _tensor(node.weight)
    padding = node.padding if isinstance(node.padding, str) else _two(node.padding)
    conv = nn.Conv2d(weight.shape[1] * int(node.groups), weight.shape[0], tuple(weight.shape[2:]),
                     stride=_two(node.stride), padding=padding, dilation=_two(node.dilation), groups=int(node.groups))
    conv.weight.data = weight
    conv.bias.data = _tensor(node.bias)
    return conv


def _linear_layer(node: nir.Affine | nir.Linear, name: str) -> nn.Linear:
    weight = _tensor(node.weight)
    if weight.dim() != 2:
        raise ValueError(f"cannot import node {name} ({type(node).__name__}): weight of shape "
                         f"{tuple(weight.shape)} is not a matrix")
    bias = getattr(node, "bias", None)
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    linear.weight.data = weight
    if bias is not None:
        linear.bias.data = _tensor(bias)
    return linear


def _flatten_layer(node: nir.Flatten, name: str) -> nn.Flatten:
    start, end = int(node.start_dim), int(node.end_dim)
    return nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)


@cache
def _readers() -> dict[type, Callable[[nir.NIRNode, str], nn.Module]]:
    """NIR node type -> builder of its ``torch.nn`` layer (built on first use: ``nir`` is optional)."""
    nir = load_nir()
    return {
        nir.Conv2d: _conv_layer,
        nir.Affine: _linear_layer,
        nir.Linear: _linear_layer,
        nir.AvgPool2d: lambda node, name: nn.AvgPool2d(**_pool_geometry(node)),
        nir.SumPool2d: lambda node, name: nn.AvgPool2d(**_pool_geometry(node), divisor_override=1),
        nir.Flatten: _flatten_layer,
        nir.Scale: lambda node, name: Scale(_tensor(node.scale)),
    }


def node_to_layer(node: nir.NIRNode, name: str) -> nn.Module:
    """The ``torch.nn`` layer of a stateless NIR node (inverse of :func:`layer_to_nodes`)."""
    reader = _readers().get(type(node))
    if reader is None:
        known = ", ".join(kind.__name__ for kind in _readers())
        raise ValueError(f"cannot import node {name} ({type(node).__name__}): spikeforge reads Input, Output, LIF, "
                         f"IF and {known} nodes")
    return reader(node, name)
