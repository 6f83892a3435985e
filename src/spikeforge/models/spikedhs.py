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
import torch.nn.functional as F
from torch import Tensor, nn

from ..search.cells import NODE_TEMPERATURE, SpikingNode, make_edge_op, op_temperature, spikedhs_neuron
from ..search.genotype import Genotype, load_genotype
from .activations import ActivationFactory
from .layers import ConvBNAct
from .registry import register

__all__ = ["SpikeDHSCell", "SpikeDHSNet", "spikedhs"]


class SpikeDHSCell(nn.Module):
    """``(s0 [N, C0, H0, W0], s1 [N, C1, H, W]) -> [N, 3 * channels, H', W']`` (``H' = ceil(H / 2)`` if reducing)."""

    def __init__(self, genotype: Genotype, c_prev_prev: int, c_prev: int, channels: int, reduction: bool):
        super().__init__()
        self.reduction = reduction
        self.steps = genotype.steps
        in_channels = [c_prev_prev, c_prev] + [channels] * genotype.steps
        self.sources: list[list[tuple[int, float]]] = []
        self.edges = nn.ModuleList()
        for node in range(genotype.steps):
            sources, ops = [], nn.ModuleList()
            for source, op in genotype.node_edges(node):
                ops.append(make_edge_op(op, in_channels[source], channels, 1, from_cell_input=source < 2))
                sources.append((source, op_temperature(op)))
            self.sources.append(sources)
            self.edges.append(ops)
        self.nodes = nn.ModuleList(SpikingNode(NODE_TEMPERATURE) for _ in range(genotype.steps))

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        if self.reduction:
            s1 = s1[..., ::2, ::2]
        if s0.shape[-2:] != s1.shape[-2:]:
            s0 = F.interpolate(s0, size=s1.shape[-2:], mode="nearest")
        states = [s0, s1]
        for sources, ops, node in zip(self.sources, self.edges, self.nodes):
            states.append(node([(op(states[source]), b) for (source, b), op in zip(sources, ops)]))
        return torch.cat(states[2:], dim=1)


def _spiking_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """Conv (no padding, with bias) -> BN -> SpikeDHS LIF."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, bias=True),
                         nn.BatchNorm2d(out_channels), spikedhs_neuron())


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
        self.cells = nn.ModuleList()
        c_prev_prev = c_prev = stem_channels
        level = 0
        for new_level in genotype.path:
            channels = base_channels * 2**new_level
            self.cells.append(SpikeDHSCell(genotype, c_prev_prev, c_prev, channels, reduction=new_level > level))
            c_prev_prev, c_prev, level = c_prev, multiplier * channels, new_level
        self.aux_index = 2 * len(genotype.path) // 3
        self.aux_head = None
        if auxiliary:
            aux_channels = multiplier * base_channels * 2 ** genotype.path[self.aux_index]
            self.aux_head = nn.Sequential(
                nn.AvgPool2d(5, stride=3), spikedhs_neuron(),
                _spiking_conv(aux_channels, 128, 1), _spiking_conv(128, 768, 2),
                nn.Flatten(), nn.Linear(768, num_classes), nn.BatchNorm1d(num_classes),
            )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), spikedhs_neuron(), nn.Flatten(),
                                  nn.Linear(c_prev, num_classes), nn.BatchNorm1d(num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor):
        s0 = s1 = self.stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == self.aux_index and self.aux_head is not None and self.training:
                aux = self.aux_head(s1)
        logits = self.head(s1)
        return logits if aux is None else (logits, aux)


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
