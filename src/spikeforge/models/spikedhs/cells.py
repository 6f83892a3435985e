"""SpikeDHS cells and the chain of cells along a genotype's network path (Che et al., NeurIPS 2022).

Nodes and edge operations are those of :mod:`.operations`; the retrained classifier
(:mod:`.network`) and the stereo networks (:mod:`.stereo`) are built from :class:`CellChain`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .genotype import Genotype
from .operations import NODE_TEMPERATURE, SpikingNode, make_edge_op, op_temperature, resize_nearest

__all__ = ["SpikeDHSCell", "CellChain", "level_sizes"]


class SpikeDHSCell(nn.Module):
    """``(s0 [N, C0, *S0], s1 [N, C1, *S]) -> [N, nodes * channels, *S']`` over ``dims`` = 2 or 3 spatial dims.

    ``move`` is the level change into this cell: ``+1`` subsamples ``s1`` by 2
    (``S' = ceil(S / 2)``), ``-1`` upsamples it (nearest) to ``size`` (default
    ``2 S``), ``0`` keeps it; ``s0`` is resized (nearest) to match. Spikes stay
    binary under both resamplings. :attr:`nodes` holds the cell's nodes (``genotype.nodes`` of them).
    """

    def __init__(self, genotype: Genotype, c_prev_prev: int, c_prev: int, channels: int, move: int = 0, dims: int = 2):
        super().__init__()
        if move not in (-1, 0, 1):
            raise ValueError(f"move must be -1, 0 or 1, got {move!r}")
        self.move, self.dims = move, dims
        in_channels = [c_prev_prev, c_prev] + [channels] * genotype.nodes
        self.sources: list[list[tuple[int, float]]] = []
        self.edges = nn.ModuleList()
        for node in range(genotype.nodes):
            sources, ops = [], nn.ModuleList()
            for source, op in genotype.node_edges(node):
                ops.append(make_edge_op(op, in_channels[source], channels, 1, from_cell_input=source < 2, dims=dims))
                sources.append((source, op_temperature(op)))
            self.sources.append(sources)
            self.edges.append(ops)
        self.nodes = nn.ModuleList(SpikingNode(NODE_TEMPERATURE) for _ in range(genotype.nodes))

    def forward(self, s0: Tensor, s1: Tensor, size: tuple[int, ...] | None = None) -> Tensor:
        if size is None:  # the next level's size, as level_sizes gives it
            size = tuple({1: -(-n // 2), 0: n, -1: 2 * n}[self.move] for n in s1.shape[-self.dims:])
        s1 = resize_nearest(s1, size)
        s0 = resize_nearest(s0, size)
        states = [s0, s1]
        for sources, ops, node in zip(self.sources, self.edges, self.nodes):
            states.append(node([(op(states[source]), b) for (source, b), op in zip(sources, ops)]))
        return torch.cat(states[2:], dim=1)


def level_sizes(size: tuple[int, ...], levels: int) -> list[tuple[int, ...]]:
    """Spatial size of every level from level 0's ``size``: each level halves it, rounding up."""
    sizes = [tuple(size)]
    for _ in range(1, levels):
        sizes.append(tuple(-(-n // 2) for n in sizes[-1]))
    return sizes


class CellChain(nn.ModuleList):
    """SpikeDHS cells along ``genotype.path``, over ``dims`` spatial dimensions.

    ``forward(x [N, in_channels, *S])`` returns every cell's output (the last one
    has :attr:`out_channels` channels at level :attr:`out_level`); ``x`` is at level 0.
    A cell at level ``k`` has ``base_channels * 2**k`` channels per node, and cell
    ``i`` takes (input, output) of cell ``i - 1`` (the first takes ``(x, x)``).
    """

    def __init__(self, genotype: Genotype, in_channels: int, base_channels: int, dims: int = 2):
        super().__init__()
        self.path, self.dims = genotype.path, dims
        c_prev_prev = c_prev = in_channels
        level = 0
        for new_level in genotype.path:
            channels = base_channels * 2**new_level
            self.append(SpikeDHSCell(genotype, c_prev_prev, c_prev, channels, move=new_level - level, dims=dims))
            c_prev_prev, c_prev, level = c_prev, genotype.nodes * channels, new_level
        self.out_channels, self.out_level = c_prev, level

    def forward(self, x: Tensor) -> list[Tensor]:
        sizes = level_sizes(x.shape[-self.dims:], max(self.path) + 1)
        s0 = s1 = x
        outputs = []
        for cell, level in zip(self, self.path):
            s0, s1 = s1, cell(s0, s1, size=sizes[level])
            outputs.append(s1)
        return outputs
