"""Building blocks shared by the model files: conv-BN(-act), pooling, classifier heads, init.

All blocks work on tensors with time folded into the batch, ``[N, C, H, W]``
with ``N = T*B`` (spiking) or ``N = B`` (ANN). Activations are always modules
(made by an :class:`~spikeforge.models.activations.ActivationFactory`), never
functional calls, so that conversion can find and swap them.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from ..core.fused_norm import normalize_and_fire
from ..core.pooling import AvgPool2d
from .activations import ActivationFactory

__all__ = ["ConvBN", "ConvBNAct", "resolve_pool", "make_pool", "make_stem", "classifier", "init_weights"]


class ConvBN(nn.Sequential):
    """Conv2d -> BatchNorm2d: ``[N, C_in, H, W] -> [N, C_out, H/stride, W/stride]``.

    Padding keeps the size for odd kernels (``kernel_size // 2``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, bias: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=bias)
        self.bn = nn.BatchNorm2d(out_channels)


class ConvBNAct(ConvBN):
    """Conv2d -> BatchNorm2d -> activation (a fresh module from ``act``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        act: ActivationFactory,
        kernel_size: int = 3,
        stride: int = 1,
        bias: bool = False,
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, bias)
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        """``act(bn(conv(x)))``: batch norm and a spiking neuron fused into one node where they can be."""
        return normalize_and_fire(self.bn, self.act, self.conv(x))


def resolve_pool(pool: str | None, act: ActivationFactory, default: str = "max") -> str:
    """Pick ``"avg"`` or ``"max"``: ``None`` means ``default``, downgraded to ``"avg"``
    when the activation forbids max-pooling (QCFS, for conversion)."""
    if pool is None:
        return default if act.allows_maxpool else "avg"
    if pool not in ("avg", "max"):
        raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
    if pool == "max" and not act.allows_maxpool:
        raise ValueError(
            f"activation {act.name!r} is meant for ANN->SNN conversion, which forbids max-pooling: use pool='avg'"
        )
    return pool


def make_pool(kind: str, kernel_size: int, stride: int, padding: int = 0) -> nn.Module:
    """An average pool (:class:`~spikeforge.core.pooling.AvgPool2d`: does not keep its input for backward)
    or ``nn.MaxPool2d`` with the same geometry."""
    cls = AvgPool2d if kind == "avg" else nn.MaxPool2d
    return cls(kernel_size, stride, padding)


def make_stem(kind: str, in_channels: int, out_channels: int, act: ActivationFactory, pool: str) -> nn.Sequential:
    """Network input stem.

    - ``"cifar"``: conv3x3 stride 1 -> BN -> act (size kept).
    - ``"imagenet"``: conv7x7 stride 2 -> BN -> act -> 3x3 stride-2 pool (``pool`` kind); size / 4.
    """
    if kind == "cifar":
        return nn.Sequential(ConvBNAct(in_channels, out_channels, act, 3))
    if kind == "imagenet":
        return nn.Sequential(ConvBNAct(in_channels, out_channels, act, 7, stride=2), make_pool(pool, 3, 2, 1))
    raise ValueError(f"stem must be 'cifar' or 'imagenet', got {kind!r}")


def classifier(
    in_features: int, num_classes: int, act: ActivationFactory, hidden: Sequence[int] = (), dropout: float = 0.0
) -> nn.Sequential:
    """Flattened features ``[N, in_features] -> [N, num_classes]``.

    Each hidden width adds Linear -> act (-> Dropout if ``dropout > 0``); the
    last Linear has no activation (spiking models read its output as logits).
    """
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), act()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


def init_weights(model: nn.Module, init: str = "kaiming") -> nn.Module:
    """``"kaiming"``: Kaiming-normal (fan_out, ReLU gain) conv weights, the rest PyTorch default;
    ``"default"``: leave PyTorch's default init (TET's ResNet-19 does)."""
    if init not in ("kaiming", "default"):
        raise ValueError(f"init must be 'kaiming' or 'default', got {init!r}")
    if init == "kaiming":
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model
