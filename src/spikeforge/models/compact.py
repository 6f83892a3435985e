"""Compact networks sized for a CPU: the default job on the embedded digits."""

from __future__ import annotations

from torch import nn

from ..core.fused_norm import normalize_and_fire
from .activations import ActivationFactory
from .layers import ConvBNAct, classifier, init_weights, make_pool, resolve_pool
from .registry import register


@register("digits_cnn")
def digits_cnn(act: ActivationFactory, num_classes: int = 10, in_channels: int = 1, width: int = 16) -> nn.Module:
    """``[N, C, H, W] -> [N, K]`` (made for 16x16 digits): two conv-BN-act stages with 2x2
    average pooling, pooled to 4x4, then a linear readout."""
    return init_weights(
        nn.Sequential(
            ConvBNAct(in_channels, width, act),
            nn.AvgPool2d(2),
            ConvBNAct(width, 2 * width, act),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            classifier(2 * width * 16, num_classes, act),
        )
    )


@register("cifar_cnn")
def cifar_cnn(act: ActivationFactory, num_classes: int = 10, in_channels: int = 3, width: int = 32) -> nn.Module:
    """Seven conv-BN-act layers for 32x32 images, sized for a CPU (~43 M MACs per step at width 32).

    ``[N, 3, 32, 32] -> [N, K]``: widths ``w, 2w, 2w, 4w, 4w, 8w, 8w``; stride-2
    convolutions halve the size at the 2nd, 4th and 6th layer; global average pool
    and a linear readout.
    """
    widths = [width, 2 * width, 2 * width, 4 * width, 4 * width, 8 * width, 8 * width]
    layers, channels = [], in_channels
    for i, out in enumerate(widths):
        layers.append(ConvBNAct(channels, out, act, stride=2 if i in (1, 3, 5) else 1))
        channels = out
    return init_weights(nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      classifier(channels, num_classes, act)))


class ConvPoolBNAct(nn.Sequential):
    """Conv3x3 -> 2x2 pool (optional) -> BN -> act: pooling before the neuron, so the
    neurons run at the pooled size. ``[N, C_in, H, W] -> [N, C_out, H/2, W/2]`` with a pool.
    Batch norm and a spiking act run as one node where they can (:func:`~spikeforge.normalize_and_fire`)."""

    def __init__(self, in_channels: int, out_channels: int, act: ActivationFactory, pool: str | None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)
        if pool is not None:
            self.pool = make_pool(pool, 2, 2)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = act()

    def forward(self, x):
        y = self.conv(x)
        if "pool" in self._modules:
            y = self.pool(y)
        return normalize_and_fire(self.bn, self.act, y)


@register("cifar_fast")
def cifar_fast(act: ActivationFactory, num_classes: int = 10, in_channels: int = 3,
               widths: tuple[int, int, int] = (64, 128, 256), stem_width: int = 24,
               pool: str | None = None) -> nn.Module:
    """A fast-to-train 32x32 network in the style of Jordan's airbench: a conv-BN-act stem and
    three blocks of (conv -> pool -> BN -> act, conv -> BN -> act); ~81 M MACs per step at
    the default widths.

    ``[N, 3, 32, 32] -> [N, K]``: stem ``stem_width`` channels at 32x32, blocks at 16, 8 and
    4 pixels with ``widths`` channels, global average pool, linear readout. ``pool``:
    ``"max"`` (default) or ``"avg"`` (forced for conversion activations).
    """
    kind = resolve_pool(pool, act)
    layers, channels = [ConvBNAct(in_channels, stem_width, act)], stem_width
    for width in widths:
        layers += [ConvPoolBNAct(channels, width, act, kind), ConvPoolBNAct(width, width, act, None)]
        channels = width
    return init_weights(nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      classifier(channels, num_classes, act)))
