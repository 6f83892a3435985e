"""ResNets with basic blocks: ResNet-18/34 (CIFAR or ImageNet stem), ResNet-20, TET's ResNet-19,
and the standard spiking ResNet-34.

The body (:class:`ResNet`) takes its block type as an argument, so the SEW
variant (:mod:`spikeforge.models.sew_resnet`) reuses it with another block.
"""

from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor, nn

from ..core.fused_norm import normalize_and_fire
from .activations import ActivationFactory
from .layers import ConvBN, ConvBNAct, classifier, init_weights, make_stem, resolve_pool
from .registry import register

__all__ = ["BasicBlock", "ResNet"]


class BasicBlock(nn.Module):
    """Standard (spiking) residual block, activation after the add:

    ``act(BN(conv3x3(act(BN(conv3x3_s(x))))) + shortcut(x))``,
    ``[N, C_in, H, W] -> [N, C_out, H/s, W/s]``. The shortcut is the identity,
    or conv1x1(stride s)-BN when the shape changes. The post-add activation is
    the module ``self.act`` so that conversion can swap it.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, act: ActivationFactory):
        super().__init__()
        self.branch = nn.Sequential(
            ConvBNAct(in_channels, out_channels, act, 3, stride),
            ConvBN(out_channels, out_channels, 3),
        )
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = ConvBN(in_channels, out_channels, 1, stride)
        else:
            self.shortcut = nn.Identity()
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        first, second = self.branch
        y = second.conv(first(x))
        if isinstance(self.shortcut, ConvBN):  # both batch norms fused into the neuron where they can be
            return normalize_and_fire(second.bn, self.act, y, self.shortcut.conv(x), self.shortcut.bn)
        return normalize_and_fire(second.bn, self.act, y, self.shortcut(x))


Block = Callable[[int, int, int, ActivationFactory], nn.Module]


class ResNet(nn.Module):
    """Stem, stages of residual blocks, global average pool, classifier: ``[N, C, H, W] -> [N, K]``.

    Args:
        act: activation factory (one fresh module per place).
        block: ``block(in_channels, out_channels, stride, act)``.
        widths, depths: channels and number of blocks per stage.
        strides: stride of each stage's first block (default 1, then 2).
        stem: ``"cifar"`` (conv3x3 stride 1, no pool) or ``"imagenet"``
            (conv7x7 stride 2 + 3x3 stride-2 pool).
        stem_channels: stem width (default ``widths[0]``).
        pool: stem pool kind for the ImageNet stem; ``None`` = max-pool,
            or average pool when the activation forbids max-pool (QCFS).
        hidden: hidden FC widths before the output FC (ResNet-19: ``(256,)``).
        init: ``"kaiming"`` or ``"default"`` (see :func:`~spikeforge.models.layers.init_weights`).
    """

    def __init__(
        self,
        act: ActivationFactory,
        block: Block,
        widths: Sequence[int],
        depths: Sequence[int],
        num_classes: int = 10,
        strides: Sequence[int] | None = None,
        in_channels: int = 3,
        stem: str = "cifar",
        stem_channels: int | None = None,
        pool: str | None = None,
        hidden: Sequence[int] = (),
        init: str = "kaiming",
    ):
        super().__init__()
        if len(widths) != len(depths):
            raise ValueError(f"widths and depths must have the same length, got {len(widths)} and {len(depths)}")
        strides = list(strides) if strides is not None else [1] + [2] * (len(widths) - 1)
        channels = stem_channels or widths[0]
        self.stem = make_stem(stem, in_channels, channels, act, resolve_pool(pool, act))
        stages = []
        for width, depth, stride in zip(widths, depths, strides):
            blocks = []
            for i in range(depth):
                blocks.append(block(channels, width, stride if i == 0 else 1, act))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = classifier(channels, num_classes, act, hidden)
        init_weights(self, init)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:  # block by block: a container's call would keep its input until it returns
            for block in stage:
                x = block(x)
        return self.fc(self.flatten(self.pool(x)))


IMAGENET_WIDTHS = (64, 128, 256, 512)


@register("resnet18")
def resnet18(act, num_classes=10, stem="cifar", **kwargs):
    """ResNet-18 ([2, 2, 2, 2] basic blocks, 64-512 channels). ``stem``: "cifar" (QCFS) or "imagenet"."""
    return ResNet(act, BasicBlock, IMAGENET_WIDTHS, (2, 2, 2, 2), num_classes, stem=stem, **kwargs)


@register("resnet34")
def resnet34(act, num_classes=10, stem="cifar", **kwargs):
    """ResNet-34 ([3, 4, 6, 3] basic blocks). ``stem``: "cifar" (QCFS, also at 224x224) or "imagenet"."""
    return ResNet(act, BasicBlock, IMAGENET_WIDTHS, (3, 4, 6, 3), num_classes, stem=stem, **kwargs)


@register("spiking_resnet34")
def spiking_resnet34(act, num_classes=10, stem="imagenet", **kwargs):
    """Standard spiking ResNet-34 (activation after the add), ImageNet stem (TET: T=6 on ImageNet)."""
    return resnet34(act, num_classes, stem=stem, **kwargs)


@register("resnet20")
def resnet20(act, num_classes=10, **kwargs):
    """CIFAR ResNet-20: 16-channel stem, 3 stages x 3 blocks at 16/32/64 channels (~0.27M params)."""
    return ResNet(act, BasicBlock, (16, 32, 64), (3, 3, 3), num_classes, **kwargs)


@register("resnet19")
def resnet19(act, num_classes=10, stem_channels=64, init="default", **kwargs):
    """TET's ResNet-19 for CIFAR: stem 3x3 (``stem_channels``: 64 as TET, 128 as tdBN),
    stages 128x3 (stride 1), 256x3 (stride 2), 512x2 (stride 2), FC 512-256-act-K.
    PyTorch default init, as in TET's code."""
    return ResNet(
        act, BasicBlock, (128, 256, 512), (3, 3, 2), num_classes,
        stem_channels=stem_channels, hidden=(256,), init=init, **kwargs,
    )
