"""Fan-out of convolutions and pools against independent references: the nonzero pattern of the
layer's Jacobian (avg pools, convs) and ``F.unfold`` windows (max pools)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeforge.analysis import OperationCounter


def counted_sops(layer: nn.Module, x: torch.Tensor) -> float:
    """SOPs per sample of ``layer`` alone on the spike input ``x`` (one step)."""
    with torch.no_grad(), OperationCounter(layer, input_is_spikes=True) as counter:
        layer(x)
    (ops,) = counter.result().layers
    return ops.snn_sops


def jacobian_fanout(layer: nn.Module, shape) -> torch.Tensor:
    """Per input element of one sample, the number of outputs depending on it (nonzero Jacobian column)."""
    x = torch.rand(1, *shape)
    jac = torch.autograd.functional.jacobian(layer, x)  # [1, *out, 1, *in]
    out_numel = layer(x).numel()
    return (jac.reshape(out_numel, -1) != 0).sum(0).reshape(shape)


def positive_weights(layer: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.rand_like(p) + 0.1)  # no weight is zero: the Jacobian pattern is the connectivity
    return layer


LAYERS = [
    (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 5, 6)),
    (lambda: nn.Conv2d(4, 6, 3, padding="same", dilation=2, groups=2), (4, 7, 5)),
    (lambda: nn.Conv2d(2, 2, (3, 1), stride=(1, 2), padding=(2, 0)), (2, 4, 5)),
    (lambda: nn.Conv1d(2, 3, 5, stride=3, padding=2), (2, 11)),
    (lambda: nn.Conv3d(1, 2, 3, stride=2, padding=1), (1, 3, 4, 5)),
    (lambda: nn.AvgPool2d(3, 2, 1), (2, 7, 6)),
    (lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), (2, 6, 6)),
    (lambda: nn.AvgPool1d(2), (3, 9)),
    (lambda: nn.AdaptiveAvgPool2d((3, 2)), (2, 5, 7)),
    (lambda: nn.AdaptiveAvgPool1d(4), (1, 10)),
]


@pytest.mark.parametrize("make, shape", LAYERS)
def test_sops_match_the_jacobian_connectivity(make, shape):
    layer = positive_weights(make())
    fanout = jacobian_fanout(layer, shape)
    torch.manual_seed(0)
    spikes = (torch.rand(3, *shape) < 0.4).float()
    expected = (spikes * fanout).sum().item() / 3
    assert counted_sops(layer, spikes) == pytest.approx(expected, abs=1e-9)
    # every input spiking: every connection used once
    assert counted_sops(layer, torch.ones(1, *shape)) == fanout.sum().item()


@pytest.mark.parametrize("kernel, stride, padding, dilation", [(3, 2, 1, 1), (3, 1, 1, 2), (2, 2, 0, 1)])
def test_max_pool_windows_match_unfold(kernel, stride, padding, dilation):
    shape = (2, 7, 6)
    pool = nn.MaxPool2d(kernel, stride, padding, dilation)
    # label each input position 1..H*W; unfold pads with 0, so zeros mark padding taps
    labels = torch.arange(1, 7 * 6 + 1, dtype=torch.float64).view(1, 1, 7, 6)
    windows = F.unfold(labels, kernel, dilation=dilation, padding=padding, stride=stride).long().flatten()
    reads = torch.bincount(windows[windows > 0] - 1, minlength=7 * 6).view(7, 6)
    spikes = (torch.rand(1, *shape) < 0.5).float()
    expected = (spikes[0] * reads).sum().item()
    assert counted_sops(pool, spikes) == expected
