"""VGG family: VGG-11/16 (the QCFS conversion variant) and TET's VGGSNN for DVS data.

A VGG is a stack of conv3x3(bias)-BN-act layers with 2x2 stride-2 pools
between groups, followed by a classifier head: ``[N, C, H, W] -> [N, K]``.
No activation follows a pool: pooled values feed the next conv directly.
"""

from __future__ import annotations

from torch import nn

from .activations import ActivationFactory
from .layers import ConvBNAct, classifier, init_weights, make_pool, resolve_pool
from .registry import register

__all__ = ["VGG", "VGG_CONFIGS"]

P = "P"  # a 2x2 stride-2 pool in a config

#: Conv widths per layer, ``P`` for a pool.
VGG_CONFIGS = {
    "vgg11": [64, P, 128, P, 256, 256, P, 512, 512, P, 512, 512, P],
    "vgg16": [64, 64, P, 128, 128, P, 256, 256, 256, P, 512, 512, 512, P, 512, 512, 512, P],
    "vggsnn": [64, 128, P, 256, 256, P, 512, 512, P, 512, 512, P],
}


def make_features(config: list, in_channels: int, act: ActivationFactory, pool: str) -> nn.Sequential:
    """Conv-BN-act layers and pools from a config: ``[N, C, H, W] -> [N, 512, H / 2^p, W / 2^p]``."""
    layers: list[nn.Module] = []
    for item in config:
        if item == P:
            layers.append(make_pool(pool, 2, 2))
        else:
            layers.append(ConvBNAct(in_channels, item, act, 3, bias=True))
            in_channels = item
    return nn.Sequential(*layers)


def make_head(kind: str, channels: int, num_classes: int, act: ActivationFactory, dropout: float) -> nn.Sequential:
    """Classifier on the last feature map ``[N, channels, h, w]``.

    - ``"cifar"``: global average pool (identity on 32x32 inputs), Flatten,
      FC channels-4096-4096-K with activations (the QCFS code's CIFAR head).
    - ``"linear"``: global average pool, Flatten, one FC channels-K.
    - ``"imagenet"``: adaptive average pool to 7x7, Flatten, FC 49*channels-4096-4096-K.
    """
    if kind == "cifar":
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), classifier(channels, num_classes, act, (4096, 4096), dropout)
        )
    if kind == "linear":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
    if kind == "imagenet":
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(7), nn.Flatten(), classifier(channels * 49, num_classes, act, (4096, 4096), dropout)
        )
    raise ValueError(f"head must be 'cifar', 'linear' or 'imagenet', got {kind!r}")


class VGG(nn.Sequential):
    """``features`` then ``head``: ``[N, C, H, W] -> [N, K]``."""

    def __init__(self, features: nn.Sequential, head: nn.Sequential):
        super().__init__()
        self.features = features
        self.head = head


def _vgg(config: str, act, num_classes, in_channels, pool, head, dropout, init) -> VGG:
    pool = resolve_pool(pool, act, default="avg")
    features = make_features(VGG_CONFIGS[config], in_channels, act, pool)
    return init_weights(VGG(features, make_head(head, 512, num_classes, act, dropout)), init)


@register("vgg11")
def vgg11(act, num_classes=10, in_channels=3, pool="avg", head="cifar", dropout=0.0, init="kaiming"):
    """VGG-11 with BN. ``head``: "cifar" | "linear" | "imagenet"; ``pool``: "avg" | "max"."""
    return _vgg("vgg11", act, num_classes, in_channels, pool, head, dropout, init)


@register("vgg16")
def vgg16(act, num_classes=10, in_channels=3, pool="avg", head="cifar", dropout=0.0, init="kaiming"):
    """VGG-16 with BN (QCFS: 15 activations, average pooling). Options as :func:`vgg11`."""
    return _vgg("vgg16", act, num_classes, in_channels, pool, head, dropout, init)


@register("vggsnn")
def vggsnn(act, num_classes=10, in_channels=2, input_size=48, init="kaiming"):
    """TET's VGGSNN for DVS-CIFAR10: ``[N, 2, 48, 48] -> [N, K]``.

    64C3-128C3-AP2-256C3-256C3-AP2-512C3-512C3-AP2-512C3-512C3-AP2, then
    Flatten and FC(512 * (input_size/16)^2 -> K) (4608 for 48x48).
    """
    if input_size % 16:
        raise ValueError(f"vggsnn needs input_size divisible by 16 (four 2x2 pools), got {input_size}")
    features = make_features(VGG_CONFIGS["vggsnn"], in_channels, act, "avg")
    side = input_size // 16
    head = nn.Sequential(nn.Flatten(), nn.Linear(512 * side * side, num_classes))
    return init_weights(VGG(features, head), init)
