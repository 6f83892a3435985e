"""``to_nir`` / ``from_nir``: a spikeforge spiking network <-> a NIR graph.

A NIR graph describes one time step of the network: its Input receives the
step's input (the image again at every step under direct encoding, or one
event frame) and its Output gives that step's output (the logits of the last
layer). Neurons follow the mapping of :mod:`spikeforge.export.neurons` at the
time step ``dt``, and a neuron's ``output_scale`` other than 1 is a Scale node after it; batch norm
is folded into the preceding conv / linear layer (:func:`spikeforge.models.fold.fold_bn`); a residual
sum is two edges into one node.
"""

from __future__ import annotations

import copy
import operator
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, fx, nn

from .. import __version__
from ..core.neuron import SpikingNeuron
from ..core.time import SpikingNetwork, fold
from ..models.fold import fold_bn
from .executor import GraphBackbone
from .layers import PASSIVE, layer_to_nodes, node_to_layer
from .neurons import DEFAULT_DT, check_dt, load_nir, neuron_to_node, node_to_neuron
from .trace import SHAPE, is_neuron, trace

if TYPE_CHECKING:
    import nir

__all__ = ["to_nir", "from_nir"]

DT_KEY = "spikeforge.dt"
TIMESTEPS_KEY = "spikeforge.timesteps"
_SUMS = (operator.add, torch.add)


def _backbone_and_sample(model: nn.Module, sample_input: Tensor) -> tuple[nn.Module, int | None, Tensor]:
    """The layers to export, the model's T (if it has one) and a one-sample batch ``[1, ...]``."""
    if not isinstance(sample_input, Tensor):
        raise TypeError(f"sample_input must be a tensor, got {type(sample_input).__name__}")
    timesteps = None
    backbone = model
    sample = sample_input
    if isinstance(model, SpikingNetwork):
        backbone, timesteps = model.backbone, model.timesteps
        if sample.dim() == model.static_ndim + 1:
            sample = fold(sample)
        elif sample.dim() != model.static_ndim:
            raise ValueError(f"sample_input of shape {tuple(sample.shape)} is neither a batch of rank "
                             f"{model.static_ndim} nor a sequence of rank {model.static_ndim + 1}")
    if not any(isinstance(m, SpikingNeuron) for m in backbone.modules()):
        raise ValueError(f"{type(model).__name__} has no spiking neurons: export a spiking network "
                         "(convert a QCFS ANN with spikeforge.convert.to_snn first)")
    if sample.shape[0] < 1:
        raise ValueError("sample_input has an empty batch")
    return backbone, timesteps, sample[:1]


def _neuron_nodes(neuron: SpikingNeuron, shape: tuple[int, ...], dt: float, name: str) -> list[tuple[str, nir.NIRNode]]:
    """NIR nodes of one neuron layer, in order: the neuron, then (``output_scale != 1``) the scale of its spikes."""
    if neuron._forward_hooks or neuron._forward_pre_hooks:
        raise ValueError(f"cannot export layer {name} ({type(neuron).__name__}): it has forward hooks (e.g. an SRP "
                         "mask), which a NIR graph cannot hold")
    nodes = [(name, neuron_to_node(neuron, shape, dt, name))]
    if neuron.output_scale != 1.0:
        scale = np.full(shape, neuron.output_scale, dtype=np.float64)
        nodes.append((f"{name}.scale", load_nir().Scale(scale=scale)))
    return nodes


class _GraphWriter:
    """Collects NIR nodes and edges while walking a traced backbone."""

    def __init__(self):
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []

    def add_chain(self, chain: list[tuple[str, nir.NIRNode]], sources: list[str], what: str) -> list[str]:
        """Append nodes fed by ``sources`` (each one feeding the next); returns the last node as new sources."""
        for name, node in chain:
            if name in self.nodes:
                raise ValueError(f"cannot export layer {what}: it is called more than once in the forward pass")
            self.nodes[name] = node
            self.edges += [(src, name) for src in sources]
            sources = [name]
        return sources


def _module_sources(writer: _GraphWriter, node: fx.Node, module: nn.Module, sources: list[str], dt: float):
    name = str(node.target)
    if isinstance(module, PASSIVE):
        return sources
    in_shape = node.args[0].meta[SHAPE]
    if is_neuron(module):
        chain = _neuron_nodes(module, in_shape, dt, name)
    else:
        chain = [(name, layer_to_nodes(module, in_shape, name))]
    return writer.add_chain(chain, sources, name)


def _fx_inputs(node: fx.Node) -> list[fx.Node]:
    if node.kwargs or not all(isinstance(a, fx.Node) for a in node.args):
        raise ValueError(f"cannot export {node.format_node()}: only tensor arguments are supported")
    return list(node.args)


def to_nir(model: nn.Module, sample_input: Tensor, dt: float = DEFAULT_DT) -> nir.NIRGraph:
    """Export a spiking network as a NIR graph of one time step.

    Args:
        model: a :class:`~spikeforge.SpikingNetwork` (a zoo model, or
            :func:`spikeforge.convert.to_snn`'s output), or a backbone of plain
            layers and spiking neurons taking time folded into the batch.
        sample_input: an input batch (``[B, C, H, W]``) or sequence
            (``[T, B, C, H, W]``); only its shape is used.
        dt: the time step (seconds) the NIR time constants are stated for.

    Returns:
        A ``nir.NIRGraph`` with Input ``[C, H, W]`` and Output ``[K]`` (batch
        excluded); save it with ``nir.write(path, graph)``. The graph is the
        network in evaluation mode (batch norm with its running statistics,
        dropout off) whatever the model's mode; the model, and its mode, are not
        changed. A Poisson encoder is not part of the graph: the graph's input is
        the encoded step.

    Raises:
        ValueError: naming the first layer NIR cannot express (max pooling,
            a non-spiking activation, an SRP mask, ...).
        MissingDependency: the ``nir`` package is not installed.
    """
    nir = load_nir()
    dt = check_dt(dt)
    backbone, timesteps, sample = _backbone_and_sample(model, sample_input)
    backbone = copy.deepcopy(backbone).eval()  # running statistics, whatever mode the model is in
    fold_bn(backbone)
    traced = trace(backbone, sample)
    modules = dict(traced.named_modules())
    writer = _GraphWriter()
    sources: dict[fx.Node, list[str]] = {}
    for node in traced.graph.nodes:
        if node.op == "placeholder":
            if writer.nodes:
                raise ValueError(f"cannot export {type(backbone).__name__}: its forward takes more than one input")
            writer.nodes["input"] = nir.Input(input_type={"input": np.array(node.meta[SHAPE])})
            sources[node] = ["input"]
        elif node.op == "call_module":
            args = _fx_inputs(node)
            if len(args) != 1:
                raise ValueError(f"cannot export layer {node.target}: it is called with {len(args)} inputs")
            arg = args[0]
            sources[node] = _module_sources(writer, node, modules[node.target], sources[arg], dt)
        elif node.op == "call_function" and node.target in _SUMS and len(node.args) == 2:
            left, right = _fx_inputs(node)
            total = sources[left] + sources[right]
            if len(set(total)) != len(total):
                raise ValueError(f"cannot export {node.format_node()}: a sum with the same term twice")
            sources[node] = total
        elif node.op == "output":
            result = node.args[0]
            if not isinstance(result, fx.Node):
                raise ValueError("cannot export a forward that returns more than one tensor")
            writer.nodes["output"] = nir.Output(output_type={"output": np.array(result.meta[SHAPE])})
            writer.edges += [(src, "output") for src in sources[result]]
        else:
            raise ValueError(f"cannot export {node.format_node()}: NIR export supports layers (modules) and "
                             "residual sums, not other functions or tensor methods")
    metadata = {DT_KEY: dt, "spikeforge.discretization": "forward Euler", "spikeforge.version": __version__}
    if timesteps is not None:
        metadata[TIMESTEPS_KEY] = int(timesteps)
    return nir.NIRGraph(nodes=writer.nodes, edges=writer.edges, metadata=metadata)


def _single(graph: nir.NIRGraph, kind: type) -> str:
    names = [name for name, node in graph.nodes.items() if isinstance(node, kind)]
    if len(names) != 1:
        raise ValueError(f"cannot import the NIR graph: it has {len(names)} {kind.__name__} nodes, spikeforge "
                         "reads graphs with exactly one")
    return names[0]


def _shape(types: dict | None, key: str) -> tuple[int, ...]:
    value = (types or {}).get(key)
    return () if value is None else tuple(int(d) for d in np.atleast_1d(value))


def _input_shape(graph: nir.NIRGraph, input_name: str, output_name: str, meta: dict) -> tuple[int, ...]:
    """The shape of one input sample: the Input node's type, without the batch of 1 that
    nirtorch-based writers (snnTorch's ``export_to_nir``, Norse's ``to_nir``) put in front of
    both the Input and the Output types."""
    shape = _shape(graph.nodes[input_name].input_type, "input")
    if not shape:
        raise ValueError(f"cannot import the NIR graph: its Input node {input_name} has no shape")
    out = _shape(graph.nodes[output_name].output_type, "output")
    if DT_KEY not in meta and len(shape) > 1 and len(out) > 1 and shape[0] == 1 == out[0]:
        warnings.warn(f"NIR graph: Input {input_name} {list(shape)} and Output {output_name} {list(out)} lead with "
                      f"a batch of 1; reading one sample as {list(shape[1:])}", stacklevel=3)
        return shape[1:]
    return shape


def from_nir(graph: nir.NIRGraph | str | Path, dt: float | None = None, timesteps: int | None = None) -> SpikingNetwork:
    """Build a spikeforge network from a NIR graph (or a ``.nir`` file).

    Args:
        graph: a ``nir.NIRGraph`` or the path of a file written by ``nir.write``.
        dt: the time step (seconds) to discretise the neurons with; default:
            the one recorded by :func:`to_nir`, else ``DEFAULT_DT`` (1e-4).
        timesteps: ``T`` for static inputs; default: the one recorded by :func:`to_nir`, else 4.

    Returns:
        A :class:`~spikeforge.SpikingNetwork` in evaluation mode mapping
        ``[B, *input_shape]`` or ``[T, B, *input_shape]`` to ``[T, B, *output_shape]``.
        A batch of 1 leading both the Input and the Output types (as
        nirtorch-based writers leave it) is dropped from ``input_shape``, with a warning.

    Raises:
        ValueError: naming the first node spikeforge cannot run (CubaLIF, Delay,
            per-neuron time constants, recurrent edges, a layer that cannot take
            the shape reaching it, ...).
        MissingDependency: the ``nir`` package is not installed.
    """
    nir = load_nir()
    if isinstance(graph, (str, Path)):
        if not Path(graph).is_file():
            raise FileNotFoundError(f"NIR file {graph} does not exist")
        graph = nir.read(str(graph))
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"from_nir needs a nir.NIRGraph or a file path, got {type(graph).__name__}")
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    dt = check_dt(dt if dt is not None else meta.get(DT_KEY, DEFAULT_DT))
    steps = int(timesteps if timesteps is not None else meta.get(TIMESTEPS_KEY, 4))
    input_name, output_name = _single(graph, nir.Input), _single(graph, nir.Output)
    layers = {}
    for name, node in graph.nodes.items():
        if name in (input_name, output_name):
            continue
        if isinstance(node, (nir.LIF, nir.IF)):
            layers[name] = node_to_neuron(node, dt, name)
        else:
            layers[name] = node_to_layer(node, name)
    backbone = GraphBackbone(layers, [tuple(e) for e in graph.edges], input_name, output_name)
    shape = _input_shape(graph, input_name, output_name, meta)
    backbone.output_shape(shape)  # ValueError naming the first node that cannot take its input
    return SpikingNetwork(backbone, timesteps=steps, static_ndim=len(shape) + 1).eval()
