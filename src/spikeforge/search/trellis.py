"""The searchable part of a SpikeDHS supernet: mixed spiking cells on a network-level trellis.

Cell level: every edge of a cell carries all candidate operations; their
currents, weighted by ``softmax(alpha[edge])``, feed the node's LIF (mixing at
the membrane input, as in the retrained network). One ``alpha [edges, ops]`` is
shared by every cell of a trellis.

Network level: ``layers`` layers over ``levels`` resolutions (level ``k`` is the
input's size halved ``k`` times). At layer ``l`` the state of level ``k`` is the
sum, over the moves of the trellis (:data:`~spikeforge.models.spikedhs.genotype.TRELLIS_MOVES`:
stay / down for classification, AutoDeepLab style; up / stay / down for stereo,
LEAStereo style), of

    exp(transition_log_weights(beta))[l, k - move, move] * Cell_move(s0, state[l-1, k - move])

Level ``k`` is reachable from layer ``k - 1`` on. ``s0`` is the state two layers
back at the same level (the input counts as level 0's state at layer -1). Where
none exists (layer 0 at level 0, layers ``k - 1`` and ``k`` at level ``k > 0``)
the cell has no ``s0`` edges, as in the official search code, or, with
``s0_from_s1=True``, takes its ``s1`` as ``s0``. How a cell
reaches its level: ``downsample="stride"`` puts stride-2 convs on its input
edges (the official CIFAR search code; no way up), ``"nearest"`` resamples
``s0`` and ``s1`` to the level's size as the retrained cells do (spikes stay
binary; needed to go up).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.spikedhs.cells import level_sizes
from ..models.spikedhs.genotype import TRELLIS_MOVES, Genotype
from ..models.spikedhs.operations import (
    NODE_TEMPERATURE,
    PRIMITIVES,
    SpikingNode,
    edge_inputs,
    make_edge_op,
    num_edges,
    op_temperature,
    resize_nearest,
)
from .decode import decode_cell, transition_log_weights, viterbi_path

__all__ = ["MixedCell", "Trellis", "MOVE_NAMES", "parameters_except"]

#: Names of the moves in cell keys (``l<layer>_k<level>_<name>``).
MOVE_NAMES = {-1: "up", 0: "same", 1: "down"}


def parameters_except(module: nn.Module, excluded: list[nn.Parameter]) -> list[nn.Parameter]:
    """``module``'s parameters that are not in ``excluded`` (its weights, given its architecture parameters)."""
    skip = {id(p) for p in excluded}
    return [p for p in module.parameters() if id(p) not in skip]


class MixedCell(nn.Module):
    """A search cell: ``(s0, s1, weights [edges, ops]) -> [N, nodes * channels, *S]`` over ``dims`` spatial dims.

    ``s0_stride`` / ``s1_stride`` (1 or 2) bring the inputs to the cell's size. ``c_s0=None``:
    no ``s0`` input (``forward`` takes ``s0=None``); its edges carry no operation and node ``i``
    sums only the edges from ``s1`` and nodes ``0 .. i-1``. :attr:`nodes` holds the cell's ``nodes`` nodes.
    """

    def __init__(self, c_s0: int | None, c_s1: int, channels: int, s0_stride: int, s1_stride: int,
                 nodes: int = 3, primitives: tuple[str, ...] = PRIMITIVES, dims: int = 2):
        super().__init__()
        self.primitives = primitives
        self.temperatures = [op_temperature(op) for op in primitives]
        in_channels, strides = [c_s0, c_s1], [s0_stride, s1_stride]
        self.inputs = edge_inputs(nodes)
        self.ops = nn.ModuleList()
        for _, source in self.inputs:
            from_input = source < 2
            c_in = in_channels[source] if from_input else channels
            stride = strides[source] if from_input else 1
            self.ops.append(nn.ModuleList(make_edge_op(op, c_in, channels, stride, from_input, dims)
                                          for op in primitives if c_in is not None))
        self.nodes = nn.ModuleList(SpikingNode(NODE_TEMPERATURE) for _ in range(nodes))

    def forward(self, s0: Tensor | None, s1: Tensor, weights: Tensor) -> Tensor:
        states = [s0, s1]
        contributions: list[list[tuple[Tensor, float]]] = [[] for _ in self.nodes]
        edge = 0
        for node in range(len(self.nodes)):
            for _ in range(2 + node):
                _, source = self.inputs[edge]
                x = states[source]
                for w, op, b in zip(weights[edge], self.ops[edge], self.temperatures):
                    contributions[node].append((w * op(x), b))
                edge += 1
            states.append(self.nodes[node](contributions[node]))
        return torch.cat(states[2:], dim=1)


class Trellis(nn.Module):
    """Mixed cells on a trellis (see the module doc); subclasses add a stem and a head.

    :meth:`run_cells` maps ``x [N, in_channels, *S]`` (level 0, time folded) to the
    last layer's state at every level of :attr:`out_levels`; a level-``k`` state
    has :attr:`widths`\\ ``[k] = nodes * base_channels * 2**k`` channels.

    Args:
        in_channels: channels of the trellis input (the stem's output).
        layers, levels: trellis depth and number of resolutions.
        base_channels: ``F``; a level-``k`` node has ``F * 2**k`` channels.
        nodes, primitives: nodes per cell and candidate operations.
        trellis: ``"down"`` or ``"updown"`` (the moves of :data:`TRELLIS_MOVES`).
        dims: 2 (images) or 3 (cost volumes).
        downsample: ``"stride"`` or ``"nearest"`` (module doc); ``"updown"`` needs ``"nearest"``.
        s0_from_s1: a cell with no state two layers back at its level takes its ``s1`` as ``s0``
            (True) or has no ``s0`` edges (False, the official search code; module doc).
    """

    def __init__(self, in_channels: int, layers: int, levels: int, base_channels: int, nodes: int = 3,
                 primitives: tuple[str, ...] = PRIMITIVES, trellis: str = "down", dims: int = 2,
                 downsample: str = "stride", s0_from_s1: bool = False):
        super().__init__()
        if trellis not in TRELLIS_MOVES:
            raise ValueError(f"trellis must be one of {', '.join(TRELLIS_MOVES)}, got {trellis!r}")
        if downsample not in ("stride", "nearest"):
            raise ValueError(f"downsample must be 'stride' or 'nearest', got {downsample!r}")
        if -1 in TRELLIS_MOVES[trellis] and downsample == "stride":
            raise ValueError(f"the {trellis!r} trellis goes up a level: it needs downsample='nearest'")
        if layers < levels - 1:
            raise ValueError(f"layers={layers} cannot reach the lowest of levels={levels} (need layers >= levels - 1)")
        self.layers, self.levels, self.nodes, self.primitives = layers, levels, nodes, tuple(primitives)
        self.trellis, self.dims, self.downsample = trellis, dims, downsample
        self.widths = [nodes * base_channels * 2**k for k in range(levels)]

        def exists(layer: int, k: int) -> bool:
            return (layer == -1 and k == 0) if layer < 0 else k <= min(layer + 1, levels - 1)

        def s0_source(layer: int, k: int, src: int) -> tuple[int, int] | None:
            if exists(layer - 2, k):
                return layer - 2, k
            return (layer - 1, src) if s0_from_s1 else None

        def channels(layer: int, k: int) -> int:
            return in_channels if layer < 0 else self.widths[k]

        self.cells = nn.ModuleDict()
        # per layer: (cell key, level, source level, move index, (s0 layer, s0 level) or None)
        self.plan: list[list[tuple[str, int, int, int, tuple[int, int] | None]]] = []
        for layer in range(layers):
            entries = []
            for k in range(levels):
                if not exists(layer, k):
                    continue
                for m, move in enumerate(TRELLIS_MOVES[trellis]):
                    src = k - move
                    if not 0 <= src < levels or not exists(layer - 1, src):
                        continue
                    s0 = s0_source(layer, k, src)
                    s0_level = k if s0 is None else s0[1]
                    strides = (2 ** (k - s0_level), 2 ** (k - src)) if downsample == "stride" else (1, 1)
                    key = f"l{layer}_k{k}_{MOVE_NAMES[move]}"
                    self.cells[key] = MixedCell(None if s0 is None else channels(*s0), channels(layer - 1, src),
                                                base_channels * 2**k, *strides, nodes, self.primitives, dims)
                    entries.append((key, k, src, m, s0))
            self.plan.append(entries)
        self.out_levels = [k for k in range(levels) if exists(layers - 1, k)]
        self.alpha = nn.Parameter(1e-3 * torch.randn(num_edges(nodes), len(self.primitives)))
        self.beta = nn.Parameter(1e-3 * torch.randn(layers, levels, len(TRELLIS_MOVES[trellis])))

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture weights ``[alpha, beta]``."""
        return [self.alpha, self.beta]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other parameter (convolutions, BN, heads)."""
        return parameters_except(self, self.arch_parameters())

    def transition_weights(self) -> Tensor:
        """``[layers, levels, moves]``: the probability of each move out of each level (0 where it leaves the
        trellis)."""
        return transition_log_weights(self.beta, self.trellis).exp()

    def genotype(self) -> Genotype:
        """The genotype the current architecture weights decode to."""
        return Genotype(decode_cell(self.alpha, self.nodes, self.primitives), viterbi_path(self.beta, self.trellis),
                        self.nodes, self.primitives, self.trellis)

    def arch_record(self) -> dict:
        """Softmaxed ``alpha`` and the transition weights, as lists (for the metrics log)."""
        return {"alpha": torch.softmax(self.alpha.detach(), -1).cpu().tolist(),
                "transitions": self.transition_weights().detach().cpu().tolist()}

    def run_cells(self, x: Tensor) -> list[Tensor]:
        """Level-0 input ``x`` -> the last layer's state at each level of :attr:`out_levels`."""
        edge_w = torch.softmax(self.alpha, dim=-1)
        trans = self.transition_weights()
        sizes = level_sizes(x.shape[-self.dims:], self.levels)
        history: dict[tuple[int, int], Tensor] = {(-1, 0): x}
        for layer, entries in enumerate(self.plan):
            for key, k, src, m, s0_at in entries:
                s0, s1 = history.get(s0_at), history[(layer - 1, src)]  # s0_at None: no s0 input
                if self.downsample == "nearest":
                    s1 = resize_nearest(s1, sizes[k])
                    s0 = None if s0 is None else resize_nearest(s0, sizes[k])
                weighted = trans[layer, src, m] * self.cells[key](s0, s1, edge_w)
                history[(layer, k)] = history[(layer, k)] + weighted if (layer, k) in history else weighted
            for level in range(self.levels):  # states older than two layers are no longer needed
                history.pop((layer - 2, level), None)
        return [history[(self.layers - 1, k)] for k in self.out_levels]
