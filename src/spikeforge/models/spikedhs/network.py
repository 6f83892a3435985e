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

Cells, nodes and the edge operations are those of :mod:`.operations` (shared with the search):
a kept ``snn_b5`` edge sends its gradient through Dspike ``b = 5``, so decoded
operations stay distinct (the official retrain code collapses them).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..activations import ActivationFactory
from ..layers import ConvBNAct
from ..registry import register
from .cells import CellChain
from .genotype import Genotype, load_genotype
from .operations import spikedhs_neuron, spiking_conv

__all__ = ["SpikeDHSNet", "spikedhs"]


class SpikeDHSNet(nn.Module):
    """The retrained SpikeDHS classifier; ``[T*B, C, H, W] -> [T*B, K]`` (time folded, see the module doc)."""

    def __init__(self, genotype: Genotype, num_classes: int = 10, in_channels: int = 3, base_channels: int = 48,
                 auxiliary: bool = False, stem: str = "cifar"):
        super().__init__()
        multiplier = genotype.nodes
        stem_channels = multiplier * base_channels
        if stem == "cifar":
            self.stem = ConvBNAct(in_channels, stem_channels, spikedhs_neuron, 3, bias=True)
        elif stem == "imagenet":
            half = stem_channels // 2
            self.stem = nn.Sequential(ConvBNAct(in_channels, half, spikedhs_neuron, 3, stride=2, bias=True),
                                      ConvBNAct(half, stem_channels, spikedhs_neuron, 3, stride=2, bias=True))
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
