"""Test helpers for NIR export: networks that spike, spike recording, peer simulators stepped by hand."""

import torch
from torch import nn

from spikeforge import SpikingNeuron


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random batch-norm statistics and affine parameters (so that folding matters); eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2 + 0.3)
    return model.eval()


@torch.no_grad()
def run_recording(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``net(x)`` and the 0/1 spikes of every spiking neuron (its output over its ``output_scale``), in call order."""
    spikes = []
    hooks = [m.register_forward_hook(lambda m, _i, out: spikes.append(out / m.output_scale))
             for m in net.modules() if isinstance(m, SpikingNeuron)]
    try:
        out = net(x)
    finally:
        for h in hooks:
            h.remove()
    return out, spikes


@torch.no_grad()
def run_peer(load, graph, x: torch.Tensor) -> torch.Tensor:
    """Outputs ``[T, B, ...]`` of a nirtorch-based peer: a fresh module per sample, stepped over ``x[T, B, ...]``.

    Samples go in one at a time without a batch dimension: these readers pass NIR's
    Flatten dimensions (which exclude the batch) to ``torch.nn.Flatten`` unchanged.
    """
    samples = []
    for b in range(x.shape[1]):
        module, state, steps = load(graph), None, []
        for t in range(x.shape[0]):
            out, state = module(x[t, b]) if state is None else module(x[t, b], state)
            steps.append(out)
        samples.append(torch.stack(steps))
    return torch.stack(samples, 1)
