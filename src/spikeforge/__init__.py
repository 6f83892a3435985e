"""spikeforge: deep spiking neural networks for vision.

Core API::

    import spikeforge as sf
    lif = sf.LIF(decay=0.5, v_th=1.0, surrogate=sf.surrogate.Triangle(1.0))
    spikes = lif(x)                      # x: [T, B, ...] -> spikes [T, B, ...]
    net = sf.SpikingNetwork(backbone, timesteps=4)   # [B, C, H, W] -> [T, B, K]
    with sf.pack_spikes():               # spikes saved for backward as bits (same gradients)
        loss = criterion(net(x), y)
    loss.backward()
    spikes = sf.normalize_and_fire(bn, lif, conv(x))  # lif(bn(conv(x))), one fused node where it applies
"""

from . import surrogate
from .core.fused_norm import norm_fusion, normalize_and_fire
from .core.neuron import IF, LIF, LSGLIF, ParametricLIF, SpikingNeuron
from .core.norm import PerStepBatchNorm1d, PerStepBatchNorm2d, PerStepBatchNorm3d, set_bn_stats
from .core.packing import mark_spikes, pack_spikes, pack_spikes_in
from .core.pooling import AvgPool2d
from .core.synapse import Synapse
from .core.time import (
    MembraneState,
    SpikingNetwork,
    direct_encode,
    fold,
    neurons,
    poisson_encode,
    state_scope,
    unfold,
)

__version__ = "0.1.0"

__all__ = [
    "surrogate",
    "SpikingNeuron",
    "LIF",
    "IF",
    "ParametricLIF",
    "LSGLIF",
    "Synapse",
    "PerStepBatchNorm1d",
    "PerStepBatchNorm2d",
    "PerStepBatchNorm3d",
    "set_bn_stats",
    "SpikingNetwork",
    "MembraneState",
    "state_scope",
    "neurons",
    "fold",
    "unfold",
    "direct_encode",
    "poisson_encode",
    "pack_spikes",
    "pack_spikes_in",
    "mark_spikes",
    "normalize_and_fire",
    "norm_fusion",
    "AvgPool2d",
]
