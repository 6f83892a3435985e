"""SEW-ResNet (Fang et al., NeurIPS 2021): spike-element-wise residual blocks.

Each branch ends in its own activation and the block combines the two spike
tensors with a connect function ``g(A, S)`` (A = branch spikes, S = shortcut
spikes) instead of firing after the add; identity mapping is then exact.
"""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from .activations import ActivationFactory
from .layers import ConvBNAct
from .registry import register
from .resnet import IMAGENET_WIDTHS, ResNet

__all__ = ["SEWBlock", "CONNECT"]

#: Connect functions ``g(A, S)``: ADD (the default), AND, and IAND = (not A) and S.
CONNECT = {
    "add": lambda a, s: a + s,
    "and": lambda a, s: a * s,
    "iand": lambda a, s: (1.0 - a) * s,
}


class SEWBlock(nn.Module):
    """``g(act(BN(conv(act(BN(conv_s(x)))))), shortcut(x))``: ``[N, C_in, H, W] -> [N, C_out, H/s, W/s]``.

    The shortcut is the identity, or conv1x1(stride s)-BN-act when the shape changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, act: ActivationFactory, connect: str = "add"):
        super().__init__()
        if connect not in CONNECT:
            raise ValueError(f"connect must be one of {sorted(CONNECT)}, got {connect!r}")
        self.connect = connect
        self.branch = nn.Sequential(
            ConvBNAct(in_channels, out_channels, act, 3, stride),
            ConvBNAct(out_channels, out_channels, act, 3),
        )
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = ConvBNAct(in_channels, out_channels, act, 1, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return CONNECT[self.connect](self.branch(x), self.shortcut(x))

    def extra_repr(self) -> str:
        return f"connect={self.connect!r}"


def _sew(act, depths, num_classes, connect, stem, **kwargs) -> ResNet:
    block = partial(SEWBlock, connect=connect)
    return ResNet(act, block, IMAGENET_WIDTHS, depths, num_classes, stem=stem, **kwargs)


@register("sew_resnet18")
def sew_resnet18(act, num_classes=10, connect="add", stem="imagenet", **kwargs):
    """SEW-ResNet-18 ([2, 2, 2, 2] SEW blocks), ImageNet stem by default."""
    return _sew(act, (2, 2, 2, 2), num_classes, connect, stem, **kwargs)


@register("sew_resnet34")
def sew_resnet34(act, num_classes=10, connect="add", stem="imagenet", **kwargs):
    """SEW-ResNet-34 ([3, 4, 6, 3] SEW blocks), ImageNet stem by default (TET: T=4 on ImageNet)."""
    return _sew(act, (3, 4, 6, 3), num_classes, connect, stem, **kwargs)
