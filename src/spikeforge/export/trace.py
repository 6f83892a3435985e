"""Trace a spiking backbone into a ``torch.fx`` graph whose nodes know their tensor shapes.

Spiking neurons and batch norms stay opaque leaves of the trace; residual sums appear as
``operator.add`` calls. Shapes come from one run on a sample input in which every neuron
passes its input through (neurons keep the shape, and no time steps are needed).
"""

from __future__ import annotations

import torch
from torch import Tensor, fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..core.neuron import SpikingNeuron

__all__ = ["trace", "SHAPE", "is_neuron"]

#: ``node.meta`` key of a traced value's shape without the batch dimension.
SHAPE = "spikeforge_shape"


def is_neuron(module: nn.Module) -> bool:
    """A spiking neuron layer (exported as a NIR neuron node)."""
    return isinstance(module, SpikingNeuron)


class _NeuronLeafTracer(fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        # batch norms and average pools of spikeforge's classes (per-step statistics, no input kept) are leaves
        # like torch's
        return (is_neuron(module) or isinstance(module, (_BatchNorm, nn.AvgPool2d))
                or super().is_leaf_module(module, qualified_name))


class _ShapeRecorder(fx.Interpreter):
    """Runs the traced graph with neurons as identities and stores each value's shape in ``node.meta``."""

    def call_module(self, target, args, kwargs):
        if is_neuron(self.fetch_attr(target)):
            return args[0]
        return super().call_module(target, args, kwargs)

    def run_node(self, node: fx.Node):
        out = super().run_node(node)
        if isinstance(out, Tensor):
            node.meta[SHAPE] = tuple(out.shape[1:])
        return out


def trace(backbone: nn.Module, sample: Tensor) -> fx.GraphModule:
    """``torch.fx`` trace of ``backbone`` (called on ``[N, ...]``) with shapes from ``sample`` ``[N, ...]``.

    Raises ValueError when the forward cannot be traced (data-dependent control flow).
    """
    try:
        graph = _NeuronLeafTracer().trace(backbone)
    except Exception as err:  # fx raises many types (TraceError, TypeError, ...) for untraceable code
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"cannot trace {type(backbone).__name__} for export: {first}") from None
    module = fx.GraphModule(backbone, graph)
    with torch.no_grad():
        _ShapeRecorder(module).run(sample)
    return module
