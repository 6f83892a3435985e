"""SpikeDHS building blocks shared by the search supernet and the retrained network.

Neuron: the iterative LIF of SpikeDHS, ``u_t = 0.2 u_{t-1} (1 - o_{t-1}) + I_t``,
``o_t = H(u_t - 0.5)`` (strict), hard reset to 0 with the gradient through the
reset, Dspike surrogate of temperature ``b`` (support ``(0, 1)``).

Edges carry *pre-activations* (conv 3x3 with bias -> BN): a node sums the
currents of its incoming edges and fires once ("mixed at the input of the
membrane potential", the paper's supplement). The operations differ in the
surrogate temperature that carries their gradient: ``snn_b3`` and ``snn_b5``
send their current's gradient through the node's spike with Dspike ``b = 3`` or
``b = 5``; ``skip_connect`` passes a node's spikes unchanged (on an edge from a
cell input it is a conv, as in the published code, since the channel counts
differ) with the node's own temperature. The forward spikes are those of one LIF
on the summed current, so operations stay distinct in the retrained network
without changing its forward pass (the official retrain code collapses them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.neuron import LIF
from ...core.packing import mark_spikes
from ...core.surrogate import DSpike

__all__ = [
    "PRIMITIVES", "NODE_TEMPERATURE", "op_temperature", "spikedhs_neuron", "PreActConv", "spiking_conv", "make_edge_op",
    "SpikingNode", "edge_inputs", "num_edges", "resize_nearest",
]

PRIMITIVES: tuple[str, ...] = ("skip_connect", "snn_b3", "snn_b5")
NODE_TEMPERATURE = 3.0  # Dspike b of every node (and of skip edges)
_TEMPERATURES = {"skip_connect": NODE_TEMPERATURE, "snn_b3": 3.0, "snn_b5": 5.0}


def op_temperature(op: str) -> float:
    """Dspike temperature carrying the gradient of operation ``op``."""
    if op not in _TEMPERATURES:
        raise ValueError(f"unknown SpikeDHS operation {op!r}: expected one of {', '.join(PRIMITIVES)}")
    return _TEMPERATURES[op]


def spikedhs_neuron(b: float = NODE_TEMPERATURE) -> LIF:
    """The SpikeDHS LIF: leak 0.2, threshold 0.5 (strict), hard reset, reset not detached, Dspike(b)."""
    return LIF(decay=0.2, input_scale=1.0, v_th=0.5, reset="hard", detach_reset=False, strict=True,
               surrogate=DSpike(b))


class PreActConv(nn.Sequential):
    """Conv ``k x k`` (with bias, as published) -> BN over ``dims`` = 2 (images) or 3 (cost volumes):
    ``[N, C_in, *S] -> [N, C_out, *S / stride]``; ``padding`` defaults to ``k // 2``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3, dims: int = 2,
                 padding: int | None = None):
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims!r}")
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.conv = conv(in_channels, out_channels, kernel_size, stride,
                         kernel_size // 2 if padding is None else padding, bias=True)
        self.bn = norm(out_channels)


def spiking_conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, dims: int = 2,
                 padding: int | None = None) -> nn.Sequential:
    """:class:`PreActConv` followed by the SpikeDHS LIF: spikes ``[N, C_out, *S / stride]``."""
    return nn.Sequential(PreActConv(in_channels, out_channels, stride, kernel_size, dims, padding), spikedhs_neuron())


def make_edge_op(op: str, in_channels: int, out_channels: int, stride: int, from_cell_input: bool,
                 dims: int = 2) -> nn.Module:
    """The module of one edge: identity for a skip between nodes, else a :class:`PreActConv` over ``dims``."""
    op_temperature(op)  # validates the name
    if op == "skip_connect" and not from_cell_input:
        if stride != 1 or in_channels != out_channels:
            raise ValueError("a skip between nodes needs equal channels and stride 1")
        return nn.Identity()
    return PreActConv(in_channels, out_channels, stride, dims=dims)


def resize_nearest(x: Tensor, size: Sequence[int]) -> Tensor:
    """``x [N, C, *S]`` at spatial ``size`` (``len(size)`` trailing dims) by nearest neighbour, as the
    published network (``F.interpolate``): output index ``i`` reads input ``floor(i * S / size)``. Halving
    an odd ``S = 7`` to 4 keeps elements 0, 1, 3, 5; halving an even size keeps every second element
    from the first (done by slicing). Spikes stay binary."""
    size = tuple(size)
    dims = len(size)
    current = tuple(x.shape[-dims:])
    if current == size:
        return x
    if all(n == 2 * m for n, m in zip(current, size)):
        return x[(..., *[slice(None, None, 2)] * dims)]
    return F.interpolate(x, size=size, mode="nearest")


def num_edges(nodes: int) -> int:
    """Edges of a cell with 2 inputs and ``nodes`` nodes: node i has 2 + i incoming edges."""
    return sum(2 + i for i in range(nodes))


def edge_inputs(nodes: int) -> list[tuple[int, int]]:
    """``(node, source)`` per edge index; source 0 = s0, 1 = s1, 2 + j = node j.

    Edges are numbered node by node: node 0 {0: s0, 1: s1}, node 1 {2: s0,
    3: s1, 4: node 0}, node 2 {5: s0, 6: s1, 7: node 0, 8: node 1}.
    """
    return [(node, source) for node in range(nodes) for source in range(2 + node)]


class SpikingNode(nn.Module):
    """A cell node: one SpikeDHS LIF on the sum of its incoming currents.

    ``forward(contributions)`` takes ``(current, b)`` pairs, currents ``[T*B, C, H, W]``.
    The spikes are those of the LIF on the summed current; the gradient reaching
    each current goes through the surrogate of its own temperature ``b + shift``
    (one extra backward-only neuron run per additional temperature). ``shift``
    (a buffer, 0 unless DGS moves it) offsets every temperature of the node.
    """

    def __init__(self, b: float = NODE_TEMPERATURE):
        super().__init__()
        self.b = float(b)  # the node's own temperature (skip edges use it too), as a float
        self.neuron = spikedhs_neuron(b)
        self.register_buffer("shift", torch.zeros(()))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.setdefault(prefix + "shift", torch.zeros(()))  # checkpoints from before DGS searched nodes
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, contributions: Sequence[tuple[Tensor, float]]) -> Tensor:
        if not contributions:
            raise ValueError("a node needs at least one incoming current")
        groups: dict[float, Tensor] = {}
        for current, b in contributions:
            groups[b] = groups[b] + current if b in groups else current
        total = sum(groups.values())
        if len(groups) == 1 or not torch.is_grad_enabled():  # one neuron run when no gradient is routed
            return self.neuron(total, width=self.shift + next(iter(groups)))
        fixed = total.detach()
        out = None
        for b, current in groups.items():
            # Exactly the summed current in the forward pass; the gradient reaches this group only.
            spikes = self.neuron(fixed + (current - current.detach()), width=self.shift + b)
            out = spikes.detach() if out is None else out
            out = out + (spikes - spikes.detach())
        return mark_spikes(out)  # the spikes themselves: saved for backward as bits under pack_spikes
