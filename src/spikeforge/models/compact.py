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
