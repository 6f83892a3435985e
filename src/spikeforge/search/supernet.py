"""The SpikeDHS classification supernet: a stem, mixed spiking cells on a same/down trellis
(AutoDeepLab style, :class:`~spikeforge.search.trellis.Trellis` with stride-2 edges as in
the official search code) and a head.

The last state of every level is brought to the lowest resolution by stride-2
conv-BN layers and a 1x1 conv, the results are summed, pooled and classified by
a linear layer (which is trained, unlike the official search code's).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..models.layers import ConvBN
from .cells import PRIMITIVES, spikedhs_neuron
from .trellis import MixedCell, Trellis

__all__ = ["MixedCell", "SearchNetwork"]


class SearchNetwork(Trellis):
    """SpikeDHS supernet, ``[T*B, C, H, W] -> [T*B, K]`` (time folded; wrap in ``SpikingNetwork``).

    Args:
        layers: trellis depth ``L`` (8 in the paper).
        levels: resolutions (4 in the paper: 32, 16, 8, 4 px for CIFAR).
        base_channels: ``F``; a level-``k`` node has ``F * 2**k`` channels, a cell ``steps`` times that.
        steps: nodes per cell (3).
        primitives: candidate operations (names from :data:`~spikeforge.search.cells.PRIMITIVES`).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, layers: int = 8, levels: int = 4,
                 base_channels: int = 8, steps: int = 3, primitives: tuple[str, ...] = PRIMITIVES):
        stem = steps * base_channels
        super().__init__(stem, layers, levels, base_channels, steps, primitives, trellis="down")
        self.stem = nn.Sequential(ConvBN(in_channels, stem), spikedhs_neuron())
        width = self.widths
        self.heads = nn.ModuleList()
        for k in self.out_levels:
            chain: list[nn.Module] = []
            c = width[k]
            for _ in range(k, levels - 1):
                chain += [ConvBN(c, 2 * c, stride=2)]
                c *= 2
            chain.append(nn.Conv2d(c, width[-1], 1))
            self.heads.append(nn.Sequential(*chain))
        self.classifier = nn.Linear(width[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        states = self.run_cells(self.stem(x))
        features = sum(head(state) for head, state in zip(self.heads, states))
        return self.classifier(features.mean(dim=(2, 3)))
