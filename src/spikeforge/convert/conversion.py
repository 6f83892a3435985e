"""QCFS-ANN -> IF-SNN conversion (Bu et al., ICLR 2022, "Optimal ANN-SNN Conversion for High-accuracy and
Ultra-low-latency Spiking Neural Networks").

Every :class:`~spikeforge.convert.QCFS` becomes a :class:`ScaledIF`: an IF
neuron with threshold ``theta = lam``, initial membrane ``theta / 2`` and reset
by subtraction, emitting ``theta * spike`` (its ``output_scale``) so that the next
layer sees the ANN's scale. Weights, biases and pooling are used unchanged;
batch norm is either kept (evaluation mode, applied to every step's current)
or folded into the preceding convolution / linear layer (:func:`~spikeforge.models.fold.fold_bn`):
eval-mode BN is affine, so the two give the same logits up to float rounding.
"""

from __future__ import annotations

import copy

from torch import nn

from ..core.neuron import IF
from ..core.time import SpikingNetwork
from ..models.fold import fold_bn
from .qcfs import QCFS

__all__ = ["ScaledIF", "to_snn", "scaled_neurons", "ConversionError"]


class ConversionError(ValueError):
    """The ANN contains a layer that cannot be converted."""


class ScaledIF(IF):
    """The IF neuron of a converted QCFS layer: soft reset, ``v >= theta`` fires, ``v_init = theta / 2``,
    and it emits ``theta * spike`` (``output_scale = theta``); ``[T, B, ...]`` or folded ``[T*B, ...]``.

    A plain :class:`spikeforge.IF` in every other respect (state scopes, export); the class marks
    the neurons conversion made, which SRP masks (:mod:`spikeforge.convert.srp`).
    """

    def __init__(self, theta: float, backend: str = "auto"):
        theta = float(theta)
        if not theta > 0:
            raise ValueError(f"ScaledIF threshold must be > 0, got {theta}")
        super().__init__(v_th=theta, reset="soft", v_init=theta / 2, strict=False, backend=backend,
                         output_scale=theta)

    @property
    def theta(self) -> float:
        """The threshold, which is also the emitted value of a spike (the QCFS ``lam``)."""
        return self.v_th


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
        try:
            fold_bn(backbone)
        except ValueError as err:
            raise ConversionError(str(err)) from None
    _swap(backbone, backend)
    return SpikingNetwork(backbone, timesteps=timesteps).eval()
