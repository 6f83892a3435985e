"""A first-order synaptic current: the input of current-based LIF neurons (Norse's ``LIFCell``).

Per step ``t`` (``i`` starts at 0)::

    i_t = decay * i_{t-1} + x_t

The current ``i`` is what the next neuron integrates: ``nn.Sequential(Synapse(0.8),
LIF(decay=0.9, input_scale=0.1))`` is a current-based LIF neuron. Like a neuron it
runs over dim 0 of ``[T, B, ...]`` (``[T*B, ...]`` inside a
:class:`spikeforge.SpikingNetwork`), carries its current through
:func:`spikeforge.state_scope`, and steps with ``initial_state`` / ``step``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .temporal import TemporalLayer

__all__ = ["Synapse"]


class Synapse(TemporalLayer):
    """Exponentially decaying synaptic current ``i_t = decay * i_{t-1} + x_t``; returns the currents.

    Args:
        decay: the current's factor per step, in ``[0, 1]`` (``1 - dt / tau_syn``).
    """

    def __init__(self, decay: float):
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"Synapse decay must lie in [0, 1], got {decay}")
        self.decay = float(decay)

    def forward(self, x: Tensor) -> Tensor:
        """Currents ``[T, B, ...]`` of inputs ``x`` (``[T*B, ...]`` folded inside a SpikingNetwork)."""
        return self._scoped(x)

    def _run(self, seq: Tensor, current) -> tuple[Tensor, Tensor]:
        """Currents of ``seq[T, ...]`` from ``current`` (a float or one step); ``(currents, final current)``."""
        currents = []
        for x_t in seq.unbind(0):
            current = self.decay * current + x_t
            currents.append(current)
        return torch.stack(currents), currents[-1]

    def extra_repr(self) -> str:
        return f"decay={self.decay:g}"
