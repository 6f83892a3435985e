"""The SpikeDHS classification supernet: a stem, mixed spiking cells on a same/down trellis
(AutoDeepLab style, :class:`~spikeforge.search.trellis.Trellis` with stride-2 edges as in
the official search code) and a head, wired as the official search supernet:

- stem: a non-spiking conv 3x3 (no bias) + BN to ``nodes * F`` channels; the first
  cells receive its analog output;
- a level's first cells (layer 0 at level 0, layers ``k - 1`` and ``k`` at level ``k``)
  have no ``s0`` input: there is no state two layers back at their level;
- head: one chain of non-spiking stride-2 conv 3x3 + BN layers (level ``k`` to
  ``k + 1``) shared by all levels brings each level's last state to the lowest
  resolution; the results are summed, go through a 1x1 conv (no bias, no BN), are
  pooled and classified by a linear layer.

Deliberate differences: edges mix pre-activations at the node's membrane (the paper's
supplement: "mixed at the input of membrane potential"; the search code mixes spikes)
and the linear classifier is trained (the search code leaves it at its initial weights).
Parameters at ``F = 8`` (8 layers, 4 levels, 3 nodes, 10 classes): 26,179,637 against
the official 26,205,173, which
also counts 25,536 parameters the official forward never uses (four 1x1 conv-BN
layers left over from LEAStereo and the BN of the final 1x1 conv, built but bypassed).
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn
from torch.utils.data import Dataset

from ..core.norm import set_bn_stats
from ..core.time import SpikingNetwork
from ..data import dataset_info
from ..models.layers import ConvBN
from ..models.spikedhs.operations import PRIMITIVES
from .trellis import MixedCell, Trellis

__all__ = ["MixedCell", "SearchNetwork"]


class SearchNetwork(Trellis):
    """SpikeDHS supernet, ``[T*B, C, H, W] -> [T*B, K]`` (time folded; wrap in ``SpikingNetwork``).

    Args:
        layers: trellis depth ``L`` (8 in the paper).
        levels: resolutions (4 in the paper: 32, 16, 8, 4 px for CIFAR).
        base_channels: ``F``; a level-``k`` node has ``F * 2**k`` channels, a cell ``nodes`` times that.
        nodes: nodes per cell (3).
        primitives: candidate operations (names from :data:`~spikeforge.models.spikedhs.operations.PRIMITIVES`).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, layers: int = 8, levels: int = 4,
                 base_channels: int = 8, nodes: int = 3, primitives: tuple[str, ...] = PRIMITIVES):
        stem = nodes * base_channels
        super().__init__(stem, layers, levels, base_channels, nodes, primitives, trellis="down")
        self.stem = ConvBN(in_channels, stem)
        width = self.widths
        self.down = nn.Sequential(*(ConvBN(width[k], width[k + 1], stride=2) for k in range(levels - 1)))
        self.project = nn.Conv2d(width[-1], width[-1], 1, bias=False)
        self.classifier = nn.Linear(width[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        states = self.run_cells(self.stem(x))
        # the 1x1 conv is linear: applied once to the sum, as to each level's result
        features = self.project(sum(self.down[k:](state) for k, state in zip(self.out_levels, states)))
        return self.classifier(features.mean(dim=(2, 3)))


#: task -> builder ``(search config, training set) -> (supernet, model)``; stereo is registered by
#: :mod:`spikeforge.stereo.search`.
_SUPERNETS: dict[str, Callable[..., tuple[nn.Module, nn.Module]]] = {}


def register_supernet(task: str, builder: Callable[..., tuple[nn.Module, nn.Module]]) -> None:
    """Make a search recipe's ``task: <task>`` build its supernet with ``builder(config, train_set)``."""
    _SUPERNETS[task] = builder


def build_supernet(config, train_set: Dataset) -> tuple[nn.Module, nn.Module]:
    """``(supernet, model)`` for ``config.task``: the module with ``arch_parameters``, ``weight_parameters``,
    ``genotype`` and ``arch_record``, and the module to call on inputs (the supernet in time). Its batch
    norms have the statistics of ``supernet.bn_stats`` (:func:`~spikeforge.core.norm.set_bn_stats`)."""
    if config.task not in _SUPERNETS:
        hint = ": import spikeforge.stereo first, it registers it" if config.task == "stereo" else ""
        raise ValueError(f"task {config.task!r} has no search supernet{hint} (known: {', '.join(sorted(_SUPERNETS))})")
    supernet, model = _SUPERNETS[config.task](config, train_set)
    set_bn_stats(supernet, config.supernet.bn_stats)
    return supernet, model


def _classification_supernet(config, train_set: Dataset) -> tuple[nn.Module, nn.Module]:
    s, info = config.supernet, dataset_info(config.data.name)
    supernet = SearchNetwork(info.num_classes, info.in_channels, s.layers, s.levels, s.base_channels, s.nodes,
                             tuple(s.primitives))
    return supernet, SpikingNetwork(supernet, config.timesteps)


register_supernet("classification", _classification_supernet)
