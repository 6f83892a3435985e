"""Spiking ResNet-19 and VGGSNN train: forward + backward at T=2 reaches the first conv."""

import pytest
import torch
import torch.nn.functional as F

from spikeforge import models


@pytest.mark.parametrize(
    "name, x_shape, first_conv",
    [
        ("resnet19", (2, 3, 16, 16), lambda net: net.backbone.stem[0].conv),
        ("vggsnn", (2, 2, 2, 48, 48), lambda net: net.backbone.features[0].conv),  # [T, B, 2, 48, 48]
    ],
)
def test_backward_reaches_the_first_conv(name, x_shape, first_conv):
    torch.manual_seed(0)
    net = models.create(name, num_classes=10, neuron="lif", timesteps=2)
    x = torch.rand(*x_shape)
    out = net(x)
    assert out.shape == (2, 2, 10)
    loss = F.cross_entropy(out.mean(0), torch.tensor([1, 7]))
    loss.backward()
    grad = first_conv(net).weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())
