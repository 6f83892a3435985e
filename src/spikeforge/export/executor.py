"""Run the layers of an imported NIR graph in dependency order: the backbone :func:`from_nir` returns.

A NIR node's input is the sum of the outputs of the nodes with an edge into
it (this is how residual sums are written). The backbone sees time folded into
the batch, ``[T*B, ...]``, like any spikeforge backbone, so its neurons run
their recurrence inside :class:`~spikeforge.SpikingNetwork`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.neuron import SpikingNeuron

__all__ = ["GraphBackbone", "topological_order"]


def topological_order(names: list[str], sources: dict[str, list[str]], start: str) -> list[str]:
    """``names`` reordered as little as possible so that every node comes after its sources
    (``start`` is the graph input).

    Raises ValueError naming the nodes on a cycle (recurrent graphs) or fed by one.
    """
    done, order, pending = {start}, [], list(names)
    while pending:
        ready = next((n for n in pending if all(s in done for s in sources[n])), None)
        if ready is None:
            raise ValueError(f"cannot import the NIR graph: nodes {', '.join(pending)} wait on each other "
                             "(recurrent graphs are not supported)")
        done.add(ready)
        order.append(ready)
        pending.remove(ready)
    return order


class GraphBackbone(nn.Module):
    """``[N, *input_shape] -> [N, *output_shape]``: the layers of a NIR graph wired by its edges.

    Args:
        layers: NIR node name -> module, for every node except Input and Output.
        edges: ``(source, target)`` pairs of the graph.
        input_name, output_name: the graph's Input and Output nodes.
    """

    def __init__(self, layers: dict[str, nn.Module], edges: list[tuple[str, str]], input_name: str, output_name: str):
        super().__init__()
        known = set(layers) | {input_name, output_name}
        for src, dst in edges:
            if src not in known or dst not in known:
                raise ValueError(f"cannot import the NIR graph: edge ({src!r}, {dst!r}) names an unknown node")
        sources = {name: [s for s, d in edges if d == name] for name in [*layers, output_name]}
        for name, srcs in sources.items():
            if not srcs:
                raise ValueError(f"cannot import the NIR graph: node {name!r} has no input edge")
        self.names = topological_order(list(layers), sources, input_name)
        self.layers = nn.ModuleList(layers[n] for n in self.names)
        self.sources = [sources[n] for n in self.names]
        self.output_sources = sources[output_name]
        self.input_name, self.output_name = input_name, output_name

    def forward(self, x: Tensor) -> Tensor:
        values = {self.input_name: x}
        for name, layer, srcs in zip(self.names, self.layers, self.sources):
            values[name] = layer(_sum(values, srcs))
        return _sum(values, self.output_sources)

    @torch.no_grad()
    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one output sample for one input sample of ``input_shape`` (batch excluded).

        Raises ValueError naming the first node that cannot take the shape reaching it.
        """
        values = {self.input_name: torch.zeros(1, *input_shape)}
        for name, layer, srcs in zip(self.names, self.layers, self.sources):
            x = _checked_sum(values, srcs, name)
            if isinstance(layer, SpikingNeuron):  # elementwise: keeps the shape
                values[name] = x
                continue
            try:
                values[name] = layer(x)
            except (RuntimeError, IndexError, ValueError) as err:
                first = str(err).splitlines()[0]
                raise ValueError(f"cannot import the NIR graph: node {name} ({type(layer).__name__}) cannot take an "
                                 f"input of shape {list(x.shape[1:])} (batch excluded): {first}") from None
        return tuple(_checked_sum(values, self.output_sources, self.output_name).shape[1:])

    def extra_repr(self) -> str:
        wiring = [f"{n} <- {' + '.join(s)}" for n, s in zip(self.names, self.sources)]
        return "\n".join(wiring)


def _checked_sum(values: dict[str, Tensor], names: list[str], target: str) -> Tensor:
    """:func:`_sum`, after checking that the summed inputs of node ``target`` have one shape."""
    shapes = {tuple(values[n].shape[1:]) for n in names}
    if len(shapes) > 1:
        listed = ", ".join(f"{n} {list(values[n].shape[1:])}" for n in names)
        raise ValueError(f"cannot import the NIR graph: node {target} sums inputs of different shapes: {listed}")
    return _sum(values, names)


def _sum(values: dict[str, Tensor], names: list[str]) -> Tensor:
    total = values[names[0]]
    for name in names[1:]:
        total = total + values[name]
    return total
