"""The spiking stereo network of SpikeDHS (Che et al., NeurIPS 2022, MVSEC stereo): LEAStereo with spiking cells.

``[B, 2, N, H, W]`` (left and right views of ``N`` event-count frames; or a
sequence ``[T, B, 2, N, H, W]``) -> :class:`StereoOutput`:

1. feature network, shared by both views: three spiking convs (the second with
   stride 3, so level 0 is a third of the input size), SpikeDHS cells on the
   feature path, the last cell brought back to level 0 (nearest), a spiking
   1x1 conv to ``feature_channels``: spikes ``[2, C, H/3, W/3]`` per sample;
2. concatenation cost volume over ``D/3`` disparities: ``[2C, D/3, H/3, W/3]``,
   still spikes (zeros where the shifted right view is outside the image);
3. matching network: two 3D spiking convs, 3D SpikeDHS cells on the matching
   path (levels halve disparity, height and width), back to level 0, an analog
   3x3x3 conv to one channel: the matching cost ``[D/3, H/3, W/3]`` per step;
4. the cost averaged over the ``T`` steps, upsampled trilinearly to
   ``[D, H, W]``, soft-min over disparity (``p = softmax(-cost)``) and the
   expected disparity ``sum_d d p(d)``.

Steps 1-3 run inside a :class:`~spikeforge.SpikingNetwork` (:attr:`SpikingStereoNet.spiking`,
the part whose synaptic operations :func:`spikeforge.analysis.energy_report` counts); step
4 is analog. Ours where the paper is silent (no stereo code is released): the stem,
the feature projection and the nearest-neighbour resampling of spikes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.time import SpikingNetwork
from ..activations import ActivationFactory
from ..layers import ConvBNAct
from ..registry import register
from .cells import CellChain
from .genotype import Genotype, load_stereo_genotype
from .operations import spikedhs_neuron, spiking_conv

__all__ = ["StereoOutput", "cost_volume", "feature_stem", "matching_stem", "FeatureNet", "MatchingNet",
           "StereoBackbone", "StereoNet", "volume_disparities", "SpikingStereoNet",
           "spikedhs_stereo"]


@dataclass
class StereoOutput:
    """``disparity [B, H, W]`` in pixels and ``log_prob [B, D, H, W]``, the log soft-min distribution."""

    disparity: Tensor
    log_prob: Tensor


def cost_volume(left: Tensor, right: Tensor, disparities: int) -> Tensor:
    """Concatenation volume ``[N, 2C, disparities, H, W]`` of features ``[N, C, H, W]``:
    at disparity ``d``, pixel ``x`` pairs ``left[..., x]`` with ``right[..., x - d]`` (zeros for ``x < d``)."""
    if left.shape != right.shape:
        raise ValueError(f"left and right features differ in shape: {tuple(left.shape)} vs {tuple(right.shape)}")
    n, c, h, w = left.shape
    volume = left.new_zeros(n, 2 * c, disparities, h, w)
    for d in range(min(disparities, w)):
        volume[:, :c, d, :, d:] = left[..., d:]
        volume[:, c:, d, :, d:] = right[..., : w - d]
    return volume


def _to_level_zero(x: Tensor, level: int, size: tuple[int, ...]) -> Tensor:
    """Spikes at ``level`` resized (nearest, values stay binary) to level 0's ``size``."""
    return x if level == 0 else F.interpolate(x, size=size, mode="nearest")


def feature_stem(in_channels: int, channels: int) -> nn.Sequential:
    """``[N, in_channels, H, W] -> spikes [N, channels, ceil(H/3), ceil(W/3)]``: three spiking convs, the
    second with stride 3 (conv-bn-act layers: DGS can search their surrogates, ``dgs.layers``)."""
    return nn.Sequential(
        ConvBNAct(in_channels, channels // 2, spikedhs_neuron, 3, bias=True),
        ConvBNAct(channels // 2, channels, spikedhs_neuron, 3, stride=3, bias=True),
        ConvBNAct(channels, channels, spikedhs_neuron, 3, bias=True))


def matching_stem(in_channels: int, channels: int) -> nn.Sequential:
    """Cost volume spikes ``[N, in_channels, D', H', W'] -> spikes [N, channels, D', H', W']``: two 3D spiking convs."""
    return nn.Sequential(spiking_conv(in_channels, channels, dims=3), spiking_conv(channels, channels, dims=3))


class FeatureNet(nn.Module):
    """``[N, in_channels, H, W] -> spikes [N, out_channels, ceil(H/3), ceil(W/3)]``."""

    def __init__(self, genotype: Genotype, in_channels: int, base_channels: int, out_channels: int):
        super().__init__()
        stem = genotype.nodes * base_channels
        self.stem = feature_stem(in_channels, stem)
        self.cells = CellChain(genotype, stem, base_channels, dims=2)
        self.project = spiking_conv(self.cells.out_channels, out_channels, kernel_size=1, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        out = _to_level_zero(self.cells(x)[-1], self.cells.out_level, x.shape[-2:])
        return self.project(out)


class MatchingNet(nn.Module):
    """Cost volume spikes ``[N, in_channels, D', H', W'] -> analog cost [N, D', H', W']``."""

    def __init__(self, genotype: Genotype, in_channels: int, base_channels: int):
        super().__init__()
        stem = genotype.nodes * base_channels
        self.stem = matching_stem(in_channels, stem)
        self.cells = CellChain(genotype, stem, base_channels, dims=3)
        self.cost = nn.Conv3d(self.cells.out_channels, 1, 3, padding=1)

    def forward(self, volume: Tensor) -> Tensor:
        x = self.stem(volume)
        out = _to_level_zero(self.cells(x)[-1], self.cells.out_level, x.shape[-3:])
        return self.cost(out).squeeze(1)


class StereoBackbone(nn.Module):
    """The spiking part, time folded: ``[T*B, 2, N, H, W] -> cost [T*B, D', H', W']``.

    ``feature``: ``[N, C_in, H, W] -> spikes [N, C, H', W']`` (both views); ``matching``: the
    ``[N, 2C, volume_disparities, H', W']`` cost volume -> ``[N, D', H', W']``.
    """

    def __init__(self, feature: nn.Module, matching: nn.Module, volume_disparities: int):
        super().__init__()
        self.volume_disparities = volume_disparities
        self.feature = feature
        self.matching = matching

    def forward(self, views: Tensor) -> Tensor:
        if views.dim() != 5 or views.shape[1] != 2:
            raise ValueError(f"stereo input must be [T*B, 2, N, H, W] (left, right), got {tuple(views.shape)}")
        # Rows stay time-major ((t, b, view) order), so the neurons see T steps of 2B samples.
        features = self.feature(views.flatten(0, 1)).unflatten(0, (-1, 2))
        return self.matching(cost_volume(features[:, 0], features[:, 1], self.volume_disparities))


class StereoNet(nn.Module):
    """A spiking backbone (steps 1-3 of the module doc, run in time as :attr:`spiking`) followed by the
    analog disparity regression (step 4); ``views [B, 2, N, H, W] -> StereoOutput``.

    ``max_disparity``: ``D``, disparity candidates ``0 .. D-1``; the backbone's cost covers
    ``ceil(D/3)`` of them at a third of the resolution. ``timesteps``: ``T``, the views are fed at
    every step (direct encoding).
    """

    def __init__(self, backbone: nn.Module, max_disparity: int, timesteps: int):
        super().__init__()
        self.max_disparity = int(max_disparity)
        self.spiking = SpikingNetwork(backbone, timesteps=timesteps, static_ndim=5)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def timesteps(self) -> int:
        return self.spiking.timesteps

    @timesteps.setter
    def timesteps(self, value: int) -> None:
        self.spiking.timesteps = int(value)

    def forward(self, views: Tensor) -> StereoOutput:
        cost = self.spiking(views).float().mean(0)  # [B, D', H', W'], averaged over the T steps
        height, width = views.shape[-2:]
        cost = F.interpolate(cost.unsqueeze(1), size=(self.max_disparity, height, width), mode="trilinear",
                             align_corners=False).squeeze(1)
        log_prob = torch.log_softmax(-cost, dim=1)
        candidates = torch.arange(self.max_disparity, device=cost.device, dtype=cost.dtype).view(1, -1, 1, 1)
        return StereoOutput((log_prob.exp() * candidates).sum(1), log_prob)


def volume_disparities(max_disparity: int) -> int:
    """Disparities of the cost volume at a third of the resolution: ``ceil(D / 3)``; ValueError unless ``D >= 1``."""
    if max_disparity < 1:
        raise ValueError(f"max_disparity must be >= 1, got {max_disparity}")
    return -(-int(max_disparity) // 3)


class SpikingStereoNet(StereoNet):
    """SpikeDHS stereo network (see the module doc), retrained from a genotype.

    Args:
        genotype: a :class:`StereoGenotype`, a name in :data:`~spikeforge.stereo.STEREO_GENOTYPES` or a JSON file.
        in_channels: event frames per view ``N`` (5 in SpikeDHS).
        base_channels: ``F``; a level-``k`` node has ``F * 2**k`` channels (8 in the retrain, 4 in the search).
        max_disparity: ``D``, disparity candidates ``0 .. D-1`` (63 for MVSEC); the volume has ``ceil(D/3)``.
        feature_channels: ``C`` of the features entering the cost volume (default ``2F``).
        timesteps: ``T``; the views are fed at every step (direct encoding).
    """

    def __init__(self, genotype="spikedhs_mvsec", in_channels: int = 5, base_channels: int = 8,
                 max_disparity: int = 63, feature_channels: int | None = None, timesteps: int = 4):
        genotype = load_stereo_genotype(genotype)
        feature_channels = feature_channels or 2 * base_channels
        backbone = StereoBackbone(FeatureNet(genotype.feature, in_channels, base_channels, feature_channels),
                                  MatchingNet(genotype.matching, 2 * feature_channels, base_channels),
                                  volume_disparities(max_disparity))
        super().__init__(backbone, max_disparity, timesteps)


@register("spikedhs_stereo", own_time=True)
def spikedhs_stereo(act: ActivationFactory, num_classes: int | None = None, timesteps: int = 4,
                    **kwargs) -> SpikingStereoNet:
    """The SpikeDHS stereo network (:class:`SpikingStereoNet` keywords); always the SpikeDHS LIF,
    ``neuron`` must be spiking. ``num_classes`` is ignored (there are no classes)."""
    if not act.spiking:
        raise ValueError(f"spikedhs_stereo is a spiking network; neuron={act.name!r} is not spiking")
    return SpikingStereoNet(timesteps=timesteps, **kwargs)
