"""SpikeDHS networks built from a searched genotype (Che et al., NeurIPS 2022).

``create("spikedhs", genotype="spikedhs_cifar" | path.json | Genotype, ...)``:

- stem: spiking conv 3x3 (``3 * base_channels`` outputs) -> BN -> LIF;
- one cell per entry of the genotype's path; a cell at level ``k`` has
  ``base_channels * 2**k`` channels per node and outputs its 3 nodes
  concatenated. Where the path goes down a level, the cell subsamples its
  ``s1`` input by 2 (nearest neighbour) and resizes ``s0`` to match; every conv
  has stride 1. Cell ``i`` takes (input, output) of cell ``i - 1``;
- head: spiking global average pool (LIF) -> Linear -> BN1d, analog logits
  per step; optional auxiliary head after cell ``2 * layers // 3`` (training
  only; the model then returns ``(logits, aux_logits)``).

Cells, nodes and the edge operations are those of :mod:`spikeforge.search.cells`:
a kept ``snn_b5`` edge sends its gradient through Dspike ``b = 5``, so decoded
operations stay distinct (the official retrain code collapses them).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..search.cells import (NODE_TEMPERATURE, SpikingNode, make_edge_op, op_temperature, resize_nearest, spikedhs_neuron,
                            spiking_conv)
from ..search.genotype import Genotype, load_genotype
from .activations import ActivationFactory
from .layers import ConvBNAct
from .registry import register

__all__ = ["SpikeDHSCell", "CellChain", "SpikeDHSNet", "level_sizes", "spikedhs"]


class SpikeDHSCell(nn.Module):
    """``(s0 [N, C0, *S0], s1 [N, C1, *S]) -> [N, steps * channels, *S']`` over ``dims`` = 2 or 3 spatial dims.

    ``move`` is the level change into this cell: ``+1`` subsamples ``s1`` by 2
    (``S' = ceil(S / 2)``), ``-1`` upsamples it (nearest) to ``size`` (default
    ``2 S``), ``0`` keeps it; ``s0`` is resized (nearest) to match. Spikes stay
    binary under both resamplings.
    """

    def __init__(self, genotype: Genotype, c_prev_prev: int, c_prev: int, channels: int, move: int = 0, dims: int = 2):
        super().__init__()
        if move not in (-1, 0, 1):
            raise ValueError(f"move must be -1, 0 or 1, got {move!r}")
        self.move, self.dims = move, dims
        self.steps = genotype.steps
        in_channels = [c_prev_prev, c_prev] + [channels] * genotype.steps
        self.sources: list[list[tuple[int, float]]] = []
        self.edges = nn.ModuleList()
        for node in range(genotype.steps):
            sources, ops = [], nn.ModuleList()
            for source, op in genotype.node_edges(node):
                ops.append(make_edge_op(op, in_channels[source], channels, 1, from_cell_input=source < 2, dims=dims))
                sources.append((source, op_temperature(op)))
            self.sources.append(sources)
            self.edges.append(ops)
        self.nodes = nn.ModuleList(SpikingNode(NODE_TEMPERATURE) for _ in range(genotype.steps))

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
            c_prev_prev, c_prev, level = c_prev, genotype.steps * channels, new_level
        self.out_channels, self.out_level = c_prev, level

    def forward(self, x: Tensor) -> list[Tensor]:
        sizes = level_sizes(x.shape[-self.dims:], max(self.path) + 1)
        s0 = s1 = x
        outputs = []
        for cell, level in zip(self, self.path):
            s0, s1 = s1, cell(s0, s1, size=sizes[level])
            outputs.append(s1)
        return outputs


class SpikeDHSNet(nn.Module):
    """The retrained SpikeDHS classifier; ``[T*B, C, H, W] -> [T*B, K]`` (time folded, see the module doc)."""

    def __init__(self, genotype: Genotype, num_classes: int = 10, in_channels: int = 3, base_channels: int = 48,
                 auxiliary: bool = False, stem: str = "cifar"):
        super().__init__()
        multiplier = genotype.steps
        stem_channels = multiplier * base_channels
        if stem == "cifar":
            self.stem = ConvBNAct(in_channels, stem_channels, spikedhs_neuron, 3, bias=True)
        elif stem == "imagenet":
            self.stem = nn.Sequential(ConvBNAct(in_channels, stem_channels // 2, spikedhs_neuron, 3, stride=2, bias=True),
                                      ConvBNAct(stem_channels // 2, stem_channels, spikedhs_neuron, 3, stride=2, bias=True))
        else:
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        self.cells = CellChain(genotype, stem_channels, base_channels)
        self.aux_index = 2 * len(genotype.path) // 3
        self.aux_head = None
        if auxiliary:
            aux_channels = multiplier * base_channels * 2 ** genotype.path[self.aux_index]
            self.aux_head = nn.Sequential(
                nn.AvgPool2d(5, stride=3), spikedhs_neuron(),
                spiking_conv(aux_channels, 128, 1, padding=0), spiking_conv(128, 768, 2, padding=0),
                nn.Flatten(), nn.Linear(768, num_classes), nn.BatchNorm1d(num_classes),
            )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), spikedhs_neuron(), nn.Flatten(),
                                  nn.Linear(self.cells.out_channels, num_classes), nn.BatchNorm1d(num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor):
        outputs = self.cells(self.stem(x))
        logits = self.head(outputs[-1])
        if self.aux_head is None or not self.training:
            return logits
        return logits, self.aux_head(outputs[self.aux_index])


@register("spikedhs")
def spikedhs(act: ActivationFactory, num_classes: int = 10, in_channels: int = 3,
             genotype="spikedhs_cifar", base_channels: int = 48, auxiliary: bool = False,
             stem: str = "cifar") -> nn.Module:
    """SpikeDHS network from ``genotype`` (a name in ``spikeforge.search.GENOTYPES``, a JSON path,
    a mapping or a Genotype). Its neurons are always the SpikeDHS LIF (leak 0.2, threshold 0.5,
    Dspike temperatures per operation); ``neuron`` must be a spiking activation and its keywords
    are not used. 14.29 M parameters at ``base_channels=48`` with the published genotype.
    ``stem="imagenet"``: two stride-2 spiking convs (size / 4) instead of one stride-1 conv; ours,
    since the paper's ImageNet network is not released."""
    if not act.spiking:
        raise ValueError(f"spikedhs is a spiking network; neuron={act.name!r} is not spiking")
    return SpikeDHSNet(load_genotype(genotype), num_classes, in_channels, base_channels, auxiliary, stem)
