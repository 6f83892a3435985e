"""The stereo search supernet: LEAStereo's two searched networks with SpikeDHS mixed cells.

The feature network and the matching network are each a 3-way (up / stay /
down) :class:`~spikeforge.search.trellis.Trellis` with their own ``alpha`` and
``beta``; cells resample their inputs to their level (nearest, as the retrained
cells of :mod:`spikeforge.models.spikedhs.stereo` do). A cell with no state two layers
back at its level takes its ``s1`` as ``s0`` (``s0_from_s1``): the stereo search
code is not released and the paper does not say how its first cells are wired,
so they keep both inputs rather than follow the CIFAR search code. The stems, the cost volume and the
disparity regression are those of the retrained :class:`~spikeforge.models.spikedhs.stereo.SpikingStereoNet`.
The last layer's state at every level is brought back to level 0 and

- feature network: projected by a 1x1 conv-BN per level, the currents summed
  and fed to one LIF (mixing at the membrane input): spikes for the cost volume;
- matching network: a 3x3x3 conv per level to one channel, summed: the cost.

With a single level at the last layer both reduce to the retrained network's
projection and cost layers. Decoding (:meth:`StereoSearchNet.genotype`) gives a
:class:`~spikeforge.models.spikedhs.genotype.StereoGenotype` for ``spikedhs_stereo``.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..models.spikedhs.genotype import StereoGenotype
from ..models.spikedhs.operations import PRIMITIVES, PreActConv, resize_nearest, spikedhs_neuron
from ..models.spikedhs.stereo import StereoBackbone, StereoNet, feature_stem, matching_stem, volume_disparities
from ..search.supernet import register_supernet
from ..search.trellis import Trellis, parameters_except

__all__ = ["FeatureSearchNet", "MatchingSearchNet", "StereoSearchNet"]


class FeatureSearchNet(Trellis):
    """``[N, in_channels, H, W] -> spikes [N, out_channels, ceil(H/3), ceil(W/3)]`` over a 2D trellis."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, levels: int, base_channels: int,
                 nodes: int = 3, primitives: tuple[str, ...] = PRIMITIVES):
        stem = nodes * base_channels
        super().__init__(stem, layers, levels, base_channels, nodes, primitives, trellis="updown", dims=2,
                         downsample="nearest", s0_from_s1=True)
        self.stem = feature_stem(in_channels, stem)
        self.project = nn.ModuleList(PreActConv(self.widths[k], out_channels, kernel_size=1, padding=0)
                                     for k in self.out_levels)
        self.neuron = spikedhs_neuron()

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        size = x.shape[-2:]
        states = self.run_cells(x)
        return self.neuron(sum(project(resize_nearest(s, size)) for project, s in zip(self.project, states)))


class MatchingSearchNet(Trellis):
    """Cost volume spikes ``[N, in_channels, D', H', W'] -> analog cost [N, D', H', W']`` over a 3D trellis."""

    def __init__(self, in_channels: int, layers: int, levels: int, base_channels: int, nodes: int = 3,
                 primitives: tuple[str, ...] = PRIMITIVES):
        stem = nodes * base_channels
        super().__init__(stem, layers, levels, base_channels, nodes, primitives, trellis="updown", dims=3,
                         downsample="nearest", s0_from_s1=True)
        self.stem = matching_stem(in_channels, stem)
        self.cost = nn.ModuleList(nn.Conv3d(self.widths[k], 1, 3, padding=1) for k in self.out_levels)

    def forward(self, volume: Tensor) -> Tensor:
        x = self.stem(volume)
        size = x.shape[-3:]
        states = self.run_cells(x)
        return sum(cost(resize_nearest(s, size)) for cost, s in zip(self.cost, states)).squeeze(1)


class StereoSearchNet(StereoNet):
    """The stereo supernet, ``views [B, 2, N, H, W] -> StereoOutput`` (as :class:`SpikingStereoNet`).

    Args:
        in_channels: event frames per view ``N``.
        feature_layers, matching_layers: trellis depths (2 and 4 in the SpikeDHS MVSEC search).
        levels: resolutions of both trellises (4: 1/3, 1/6, 1/12, 1/24 of the input).
        base_channels: ``F`` of both networks (4 in the search).
        max_disparity, feature_channels, timesteps: as in :class:`SpikingStereoNet`.
    """

    def __init__(self, in_channels: int = 5, feature_layers: int = 2, matching_layers: int = 4, levels: int = 4,
                 base_channels: int = 4, max_disparity: int = 63, feature_channels: int | None = None,
                 timesteps: int = 4, nodes: int = 3, primitives: tuple[str, ...] = PRIMITIVES):
        feature_channels = feature_channels or 2 * base_channels
        feature = FeatureSearchNet(in_channels, feature_channels, feature_layers, levels, base_channels, nodes,
                                        primitives)
        matching = MatchingSearchNet(2 * feature_channels, matching_layers, levels, base_channels, nodes,
                                          primitives)
        super().__init__(StereoBackbone(feature, matching, volume_disparities(max_disparity)),
                         max_disparity, timesteps)

    @property
    def trellises(self) -> dict[str, Trellis]:
        """The two searched networks by name: ``feature`` and ``matching``."""
        backbone = self.spiking.backbone
        return {"feature": backbone.feature, "matching": backbone.matching}

    def arch_parameters(self) -> list[nn.Parameter]:
        """Both networks' ``alpha`` and ``beta``."""
        return [p for trellis in self.trellises.values() for p in trellis.arch_parameters()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other parameter (convolutions, BN)."""
        return parameters_except(self, self.arch_parameters())

    def genotype(self) -> StereoGenotype:
        t = self.trellises
        return StereoGenotype(t["feature"].genotype(), t["matching"].genotype())

    def arch_record(self) -> dict:
        """``{"feature": {...}, "matching": {...}}`` of :meth:`Trellis.arch_record`."""
        return {name: trellis.arch_record() for name, trellis in self.trellises.items()}


def _stereo_supernet(config, train_set) -> tuple[nn.Module, nn.Module]:
    """The stereo search supernet of a search recipe, sized from the first left view of ``train_set``."""
    s, sample = config.supernet, train_set[0]
    if not isinstance(sample, dict) or "left" not in sample:
        raise ValueError(f"task=stereo needs left/right stereo samples (e.g. data.name=mvsec); "
                         f"data set {config.data.name!r} gives {type(sample).__name__}")
    supernet = StereoSearchNet(sample["left"].shape[0], s.layers, s.matching_layers, s.levels, s.base_channels,
                               s.max_disparity, s.feature_channels, config.timesteps, s.nodes, tuple(s.primitives))
    return supernet, supernet


register_supernet("stereo", _stereo_supernet)
