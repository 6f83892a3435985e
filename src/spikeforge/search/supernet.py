"""The SpikeDHS search supernet: mixed spiking cells on a same/down trellis (AutoDeepLab style).

Cell level: every edge of a cell carries all candidate operations; their
currents, weighted by ``softmax(alpha[edge])``, feed the node's LIF (mixing at
the membrane input, as in the retrained network). One ``alpha [edges, ops]`` is
shared by every cell.

Network level: ``layers`` layers over ``levels`` resolutions (level ``k`` is the
stem's size divided by ``2**k``). At layer ``l`` a level-``k`` state is

    softmax(beta[l, k])[stay] * Cell_same(s0, state[l-1, k])
  + softmax(beta[l, k-1])[down] * Cell_down(s0, state[l-1, k-1])

(the lowest level can only stay, with weight 1). Level ``k`` is reachable from
layer ``k - 1`` on. ``s0`` is the state two layers back at the same level (or
``s1`` where none exists). The last state of every level is brought to the
lowest resolution by stride-2 conv-BN layers and a 1x1 conv, the results are
summed, pooled and classified by a linear layer (which is trained, unlike the
official search code's).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.layers import ConvBN
from .cells import PRIMITIVES, NODE_TEMPERATURE, SpikingNode, edge_inputs, make_edge_op, num_edges, op_temperature, spikedhs_neuron

__all__ = ["MixedCell", "SearchNetwork"]


class MixedCell(nn.Module):
    """A search cell: ``(s0, s1, weights [edges, ops]) -> [N, steps * channels, H, W]``.

    ``s0_stride`` / ``s1_stride`` (1 or 2) bring the inputs to the cell's size.
    """

    def __init__(self, c_s0: int, c_s1: int, channels: int, s0_stride: int, s1_stride: int,
                 steps: int = 3, primitives: tuple[str, ...] = PRIMITIVES):
        super().__init__()
        self.steps = steps
        self.primitives = primitives
        self.temperatures = [op_temperature(op) for op in primitives]
        in_channels, strides = [c_s0, c_s1], [s0_stride, s1_stride]
        self.inputs = edge_inputs(steps)
        self.ops = nn.ModuleList()
        for _, source in self.inputs:
            from_input = source < 2
            c_in = in_channels[source] if from_input else channels
            stride = strides[source] if from_input else 1
            self.ops.append(nn.ModuleList(make_edge_op(op, c_in, channels, stride, from_input) for op in primitives))
        self.nodes = nn.ModuleList(SpikingNode(NODE_TEMPERATURE) for _ in range(steps))

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
        states = [s0, s1]
        contributions: list[list[tuple[Tensor, float]]] = [[] for _ in range(self.steps)]
        edge = 0
        for node in range(self.steps):
            for _ in range(2 + node):
                _, source = self.inputs[edge]
                x = states[source]
                for w, op, b in zip(weights[edge], self.ops[edge], self.temperatures):
                    contributions[node].append((w * op(x), b))
                edge += 1
            states.append(self.nodes[node](contributions[node]))
        return torch.cat(states[2:], dim=1)


class SearchNetwork(nn.Module):
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
        super().__init__()
        if layers < levels - 1:
            raise ValueError(f"layers={layers} cannot reach the lowest of levels={levels} (need layers >= levels - 1)")
        self.layers, self.levels, self.steps, self.primitives = layers, levels, steps, tuple(primitives)
        mult = steps
        width = [mult * base_channels * 2**k for k in range(levels)]  # cell output channels per level
        stem = mult * base_channels
        self.stem = nn.Sequential(ConvBN(in_channels, stem), spikedhs_neuron())

        def exists(layer: int, k: int) -> bool:
            return (k == 0) if layer < 0 else k <= min(layer + 1, levels - 1)

        def channels(layer: int, k: int) -> int:
            return stem if layer < 0 else width[k]

        self.cells = nn.ModuleDict()
        self.plan: list[list[tuple[str, int, int, int, int]]] = []  # per layer: (key, level, src_level, s0_layer, s0_level)
        for layer in range(layers):
            entries = []
            for k in range(levels):
                if not exists(layer, k):
                    continue
                for src in (k, k - 1):
                    if src < 0 or not exists(layer - 1, src):
                        continue
                    s0_layer, s0_level = (layer - 2, k) if exists(layer - 2, k) else (layer - 1, src)
                    key = f"l{layer}_k{k}_{'same' if src == k else 'down'}"
                    self.cells[key] = MixedCell(
                        channels(s0_layer, s0_level), channels(layer - 1, src), base_channels * 2**k,
                        2 ** (k - s0_level), 2 ** (k - src), steps, self.primitives)
                    entries.append((key, k, src, s0_layer, s0_level))
            self.plan.append(entries)
        self.heads = nn.ModuleList()
        for k in range(levels):
            chain: list[nn.Module] = []
            c = width[k]
            for _ in range(k, levels - 1):
                chain += [ConvBN(c, 2 * c, stride=2)]
                c *= 2
            chain.append(nn.Conv2d(c, width[-1], 1))
            self.heads.append(nn.Sequential(*chain))
        self.classifier = nn.Linear(width[-1], num_classes)
        self.alpha = nn.Parameter(1e-3 * torch.randn(num_edges(steps), len(self.primitives)))
        self.beta = nn.Parameter(1e-3 * torch.randn(layers, levels, 2))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture weights ``[alpha, beta]``."""
        return [self.alpha, self.beta]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other parameter (convolutions, BN, classifier)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def transition_weights(self) -> Tensor:
        """``[layers, levels, 2]``: softmax of beta, with the lowest level's stay fixed to 1."""
        w = torch.softmax(self.beta, dim=-1)
        lowest = torch.zeros_like(w[:, -1])
        lowest[:, 0] = 1.0
        return torch.cat([w[:, :-1], lowest.unsqueeze(1)], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        edge_w = torch.softmax(self.alpha, dim=-1)
        trans = self.transition_weights()
        stem = self.stem(x)
        history: dict[tuple[int, int], Tensor] = {(-1, 0): stem, (-2, 0): stem}
        for layer, entries in enumerate(self.plan):
            for key, k, src, s0_layer, s0_level in entries:
                out = self.cells[key](history[(s0_layer, s0_level)], history[(layer - 1, src)], edge_w)
                weighted = trans[layer, src, 0 if src == k else 1] * out
                history[(layer, k)] = history[(layer, k)] + weighted if (layer, k) in history else weighted
            for level in range(self.levels):  # states older than two layers are no longer needed
                history.pop((layer - 2, level), None)
        last = self.layers - 1
        features = sum(head(history[(last, k)]) for k, head in enumerate(self.heads))
        return self.classifier(features.mean(dim=(2, 3)))
