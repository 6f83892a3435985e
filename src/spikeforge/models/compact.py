"""Compact networks sized for a CPU: the default job on the embedded digits."""

from __future__ import annotations

from torch import nn

from .activations import ActivationFactory
from .layers import ConvBNAct, classifier, init_weights
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
    return init_weights(nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), classifier(channels, num_classes, act)))
