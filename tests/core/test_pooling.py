"""The average pool that keeps only its input's shape: results and gradients of nn.AvgPool2d, nothing saved."""

import pytest
import torch
from torch import nn

from spikeforge.core.pooling import AvgPool2d

GEOMETRIES = [(2,), (3, 2, 1), (3, 2, 1, True, False), (2, 2, 0, False, True, 3), ((2, 3), (1, 2))]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("args", GEOMETRIES)
def test_same_results_and_gradients_as_torch(args, channels_last):
    x = torch.rand(4, 5, 9, 11, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ours, out_theirs = AvgPool2d(*args)(ours), nn.AvgPool2d(*args)(theirs)
    grad = torch.randn_like(out_theirs)
    out_ours.backward(grad)
    out_theirs.backward(grad)
    assert torch.equal(out_ours, out_theirs)
    assert torch.equal(ours.grad, theirs.grad)
    assert ours.grad.stride() == theirs.grad.stride()


def test_the_input_is_not_saved():
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        AvgPool2d(2)(x).sum().backward()
    assert saved == []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        nn.AvgPool2d(2)(x.detach().requires_grad_())
    assert saved == [x.shape]  # torch's keeps it: what the test above would catch


def test_without_gradient_it_is_torch_s_pool():
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(AvgPool2d(2)(x), nn.functional.avg_pool2d(x, 2))
