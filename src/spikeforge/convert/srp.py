"""SRP: residual-membrane-potential masks for converted networks.

Hao et al., "Reducing ANN-SNN Conversion Error through Residual Membrane Potential" (AAAI 2023),
Algorithm 1. A neuron that fired early on transient positive input and then received negative
input ends with a negative residual membrane; SRP silences such neurons. Per input batch:

1. pre-run ``tau`` steps from ``v = theta / 2`` with plain IF dynamics, outputs discarded;
2. per sample and per neuron, mask ``m = 1[v(tau) / theta > SRP_EPS]`` from the residual membrane
   (:func:`srp_masks`);
3. every membrane back to ``theta / 2`` (threshold and bias unchanged);
4. main run of ``T`` steps with each neuron's output multiplied by its mask (:func:`apply_masks`):
   silenced neurons keep integrating but send nothing; logits are accumulated over the main run
   only. Latency per input is ``tau + T``.

:func:`spikeforge.convert.simulate` with ``srp_tau = tau`` runs these steps.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

from torch import Tensor

from ..core.time import MembraneState
from .conversion import ScaledIF

__all__ = ["SRP_EPS", "srp_masks", "apply_masks"]

#: SRP's mask tolerance: a neuron stays active when ``v(tau) / theta > SRP_EPS``.
SRP_EPS = 1e-3


def srp_masks(state: MembraneState, neurons: list[ScaledIF]) -> dict[ScaledIF, Tensor]:
    """Per-sample, per-neuron masks ``1[v / theta > SRP_EPS]`` (shape of one step, ``[B, ...]``) from the
    membranes in ``state``."""
    masks = {}
    for neuron in neurons:
        v = state[neuron]
        masks[neuron] = (v / neuron.theta > SRP_EPS).to(v.dtype)
    return masks


def _mask_output(mask: Tensor, neuron: ScaledIF, inputs, out: Tensor) -> Tensor:
    """A forward hook: ``out`` (``[T, B, ...]`` or folded ``[T*B, ...]``) times ``mask`` ``[B, ...]`` at every step."""
    steps = neuron.timesteps
    if steps is None:  # [T, B, ...]: the mask broadcasts over time
        return out * mask
    seq = out.view(steps, out.shape[0] // steps, *out.shape[1:])
    return (seq * mask).view_as(out)


@contextmanager
def apply_masks(masks: dict[ScaledIF, Tensor]):
    """Multiply each neuron's output by its mask at every step inside the block (SRP's main run).

    The masks are forward hooks on the neurons, removed when the block ends.
    """
    handles = [neuron.register_forward_hook(partial(_mask_output, mask)) for neuron, mask in masks.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
