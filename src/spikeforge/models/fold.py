"""Folding evaluation-mode batch norm into the preceding convolution or linear layer.

An eval-mode batch norm is affine per channel, ``y = (x - mean) / sqrt(var + eps) * weight + bias``,
so it merges into the layer before it (weights scaled per output channel, bias shifted): the network
gives the same outputs up to float rounding, with one layer fewer. Conversion and export both use it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["fold_bn"]


@torch.no_grad()
def _fold_pair(layer: nn.Module, bn: nn.Module) -> None:
    """Fold eval-mode ``bn`` into the preceding ``layer`` (Conv2d or Linear) in place."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    weight = layer.weight
    if weight.shape[0] != scale.shape[0]:
        raise ValueError(f"cannot fold BatchNorm of {scale.shape[0]} features into {type(layer).__name__} "
                         f"with {weight.shape[0]} outputs")
    weight.mul_(scale.view(-1, *([1] * (weight.dim() - 1))))
    if layer.bias is None:
        layer.bias = nn.Parameter(shift.clone())
    else:
        layer.bias.copy_(layer.bias * scale + shift)


def fold_bn(model: nn.Module) -> int:
    """Fold every BatchNorm that directly follows a Conv2d / Linear inside an ``nn.Sequential``
    into that layer, replacing it by ``nn.Identity`` (in place). Returns the number folded.

    BN layers elsewhere (no preceding layer in the same Sequential) are left as
    they are (in evaluation mode they are affine anyway).
    ValueError for a BatchNorm without running statistics or of another width than its layer.
    """
    folded = 0
    for container in list(model.modules()):
        if not isinstance(container, nn.Sequential):
            continue
        names = list(container._modules)
        for prev, name in zip(names, names[1:]):
            layer, bn = container._modules[prev], container._modules[name]
            pair_ok = (isinstance(layer, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)) or (
                isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d)
            )
            if pair_ok:
                _fold_pair(layer, bn)
                container._modules[name] = nn.Identity()
                folded += 1
    return folded
