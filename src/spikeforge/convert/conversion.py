"""QCFS-ANN -> IF-SNN conversion (spec ``qcfs_srp.md`` section 2).

Every :class:`~spikeforge.convert.QCFS` becomes a :class:`ScaledIF`: an IF
neuron with threshold ``theta = lam``, initial membrane ``theta / 2`` and reset
by subtraction, whose 0/1 spikes are multiplied by ``theta`` so that the next
layer sees the ANN's scale. Weights, biases and pooling are used unchanged;
batch norm is either kept (evaluation mode, applied to every step's current)
or folded into the preceding convolution / linear layer: eval-mode BN is affine,
so the two give the same logits up to float rounding.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..core.neuron import IF
from ..core.time import SpikingNetwork
from .qcfs import QCFS

__all__ = ["ScaledIF", "to_snn", "fold_bn", "scaled_neurons", "ConversionError"]


class ConversionError(ValueError):
    """The ANN contains a layer that cannot be converted."""


class ScaledIF(nn.Module):
    """IF neuron (soft reset, ``v >= theta`` fires, ``v_init = theta / 2``) emitting ``theta * spike``.

    Called like any spiking activation: on a time-first tensor ``[T, ...]`` or,
    inside :class:`~spikeforge.SpikingNetwork`, on time folded into the batch.
    The inner :attr:`neuron` (a :class:`spikeforge.IF`) is what
    :func:`spikeforge.state_scope` records and carries.

    Attributes:
        theta: threshold (the QCFS ``lam``), a float.
        mask: ``None``, or a tensor of the shape of one time step (e.g.
            ``[B, C, H, W]``) multiplied into the output at every step (SRP
            silences neurons with it; their membrane keeps integrating).
    """

    def __init__(self, theta: float, backend: str = "auto"):
        super().__init__()
        theta = float(theta)
        if not theta > 0:
            raise ValueError(f"ScaledIF threshold must be > 0, got {theta}")
        self.theta = theta
        self.neuron = IF(v_th=theta, reset="soft", v_init=theta / 2, strict=False, backend=backend)
        self.mask: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        out = self.neuron(x) * self.theta
        if self.mask is None:
            return out
        steps = self.neuron.time_steps
        if steps is None:  # [T, B, ...]: the mask broadcasts over time
            return out * self.mask
        seq = out.view(steps, out.shape[0] // steps, *out.shape[1:])
        return (seq * self.mask).view_as(out)

    def extra_repr(self) -> str:
        return f"theta={self.theta:.4g}, v_init={self.theta / 2:.4g}, masked={self.mask is not None}"


def scaled_neurons(model: nn.Module) -> list[ScaledIF]:
    """All :class:`ScaledIF` modules of ``model`` in registration order."""
    return [m for m in model.modules() if isinstance(m, ScaledIF)]


_LINEAR = (nn.Conv2d, nn.Linear)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d)
_PASSIVE = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity)
_SUPPORTED_LEAVES = _LINEAR + _NORM + _PASSIVE + (nn.Dropout, QCFS)


def _check(module: nn.Module, path: str) -> None:
    """Raise :class:`ConversionError` naming the first layer that cannot be converted."""
    name = path or "<model>"
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool2d)):
        raise ConversionError(
            f"cannot convert layer {name} ({type(module).__name__}): max-pooling has no IF-SNN equivalent; "
            "build the ANN with average pooling (pool='avg')"
        )
    if isinstance(module, QCFS):
        return
    children = list(module.named_children())
    if not children:
        if not isinstance(module, _SUPPORTED_LEAVES):
            raise ConversionError(
                f"cannot convert layer {name} ({type(module).__name__}): only QCFS activations (turned into IF "
                "neurons) and linear layers (Conv2d, Linear, BatchNorm, AvgPool, Flatten, Dropout, Identity) "
                "are supported; train the ANN with neuron='qcfs'"
            )
        if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            raise ConversionError(f"cannot convert layer {name}: padding_mode={module.padding_mode!r}")
        return
    if isinstance(module, SpikingNetwork):
        raise ConversionError(f"{name} is already a spiking network: pass the QCFS ANN")
    own = [n for n, _ in module.named_parameters(recurse=False)]
    if own:
        raise ConversionError(
            f"cannot convert layer {name} ({type(module).__name__}): it owns parameters {own} used by its own "
            "forward; only containers of supported layers are supported"
        )
    for child_name, child in children:
        _check(child, f"{path}.{child_name}" if path else child_name)


@torch.no_grad()
def _fold_pair(layer: nn.Module, bn: nn.Module) -> None:
    """Fold eval-mode ``bn`` into the preceding ``layer`` (Conv2d or Linear) in place."""
    if bn.running_mean is None or bn.running_var is None:
        raise ConversionError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    weight = layer.weight
    if weight.shape[0] != scale.shape[0]:
        raise ConversionError(f"cannot fold BatchNorm of {scale.shape[0]} features into {type(layer).__name__} "
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
    they are: in evaluation mode they are affine and convert unchanged.
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


def _swap(module: nn.Module, backend: str) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, QCFS):
            setattr(module, name, ScaledIF(child.threshold, backend=backend))
        elif isinstance(child, nn.Dropout):
            setattr(module, name, nn.Identity())
        else:
            _swap(child, backend)


def to_snn(model: nn.Module, timesteps: int = 32, bn: str = "keep", backend: str = "auto") -> SpikingNetwork:
    """Convert a QCFS ANN (``[B, C, H, W] -> [B, K]``) into an IF SNN (``-> [T, B, K]``).

    The ANN is deep-copied (left untouched). Every QCFS with clip value ``lam``
    becomes a :class:`ScaledIF` with ``theta = lam``; Dropout becomes Identity.

    Args:
        model: the trained ANN, built with ``neuron="qcfs"`` (average pooling only).
        timesteps: ``T`` of the returned :class:`~spikeforge.SpikingNetwork` for static input.
        bn: ``"keep"`` (eval-mode BN applied to every step's current, as the QCFS
            CIFAR code) or ``"fold"`` (folded into the preceding conv/linear).
        backend: backend of the IF neurons (``"auto"``, ``"fused"``, ``"reference"``).

    Raises:
        ConversionError: a layer (named by its path) cannot be converted, e.g.
            MaxPool2d, ReLU or any other nonlinear activation.
    """
    if bn not in ("keep", "fold"):
        raise ValueError(f"bn must be 'keep' or 'fold', got {bn!r}")
    _check(model, "")
    if not any(isinstance(m, QCFS) for m in model.modules()):
        raise ConversionError("the model has no QCFS activation: train it with neuron='qcfs'")
    backbone = copy.deepcopy(model).eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    if bn == "fold":
        fold_bn(backbone)
    _swap(backbone, backend)
    return SpikingNetwork(backbone, timesteps=timesteps).eval()
