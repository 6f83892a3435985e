"""The base of layers that carry state from one time step to the next (neurons, synapses).

Such a layer runs over dim 0 of a time-first tensor ``[T, B, ...]``. Inside a
:class:`spikeforge.SpikingNetwork` it gets time folded into the batch
(``[T*B, ...]``) and the wrapper sets ``timesteps`` so the layer can unfold it.
Each call starts from the layer's initial state unless a
:func:`spikeforge.state_scope` carries it; :meth:`TemporalLayer.step` runs one
step at a time with an explicit state.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .kernels import compute_dtype

__all__ = ["TimeAware", "TemporalLayer"]


class TimeAware:
    """Mixin of modules that need ``T`` to unfold a folded input ``[T*B, ...]`` into ``[T, B, ...]``.

    :class:`spikeforge.SpikingNetwork` sets ``timesteps`` on every such module of its
    backbone for the duration of a call; ``None`` outside (the input is then one step,
    or a sequence ``[T, B, ...]`` for layers that take one).
    """

    timesteps: int | None = None


class TemporalLayer(TimeAware, nn.Module):
    """A layer with a recurrence over time; subclasses define ``_run`` and ``initial_value``.

    ``_run(seq [T, B, ...], initial state) -> (outputs [T, B, ...], final state [B, ...])``.
    """

    initial_value: float = 0.0  # the state before the first step, everywhere

    def __init__(self):
        super().__init__()
        self._scope = None
        self._folded_ndim: int | None = None  # rank of the folded input seen inside a SpikingNetwork

    def initial_state(self, x0: Tensor) -> Tensor:
        """The state before the first step, for :meth:`step`: ``initial_value`` in the shape of one
        input step ``x0`` (``[B, ...]``, no time dimension), float32 for half-precision, integer
        and bool inputs."""
        return torch.full(x0.shape, self.initial_value, dtype=compute_dtype(x0.dtype), device=x0.device)

    def step(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One time step for closed-loop use: ``x`` ``[B, ...]`` (no time dimension) and the state
        from :meth:`initial_state` or the previous step; returns ``(output [B, ...], new state)``.

        Steps one by one equal one multi-step call on the stacked inputs, in values and
        gradients (the state keeps its graph: backpropagate through a loop of steps).
        :func:`~spikeforge.state_scope` does not apply here.
        """
        if state.shape != x.shape:
            raise ValueError(f"{type(self).__name__}.step: state of shape {tuple(state.shape)} does not match the "
                             f"input step {tuple(x.shape)} (start from layer.initial_state(x0))")
        out, state = self._run(x.unsqueeze(0), state)
        return out[0], state

    def _sequence(self, x: Tensor) -> Tensor:
        """``x`` as ``[T, B, ...]``: unfolded with the wrapper's ``T``, or as given (checked)."""
        name, shape, steps = type(self).__name__, tuple(x.shape), self.timesteps
        if steps is not None:
            if x.shape[0] % steps:
                raise ValueError(f"{name}: folded input [T*B, ...] of shape {shape} has {x.shape[0]} rows, not a "
                                 f"multiple of T={steps}; did a layer of the backbone change the batch dimension?")
            self._folded_ndim = x.dim()
            return x.view(steps, x.shape[0] // steps, *x.shape[1:])
        if x.dim() < 2:
            raise ValueError(f"{name}: expected a time-first tensor [T, B, ...], got shape {shape} "
                             "(for one time step use layer.step(x, state))")
        if x.dim() == self._folded_ndim:
            raise ValueError(f"{name}: got shape {shape} without a time dimension (inside its SpikingNetwork this "
                             f"layer sees rank-{x.dim()} folded [T*B, ...] tensors); call the SpikingNetwork, "
                             "not its backbone, or pass [T, B, ...]")
        return x

    def _scoped(self, x: Tensor, **options) -> Tensor:
        """``_run`` on ``x`` (folded or not) from the initial or the scope's carried state; the
        final state goes to the scope. ``options`` go to ``_run``."""
        seq = self._sequence(x)
        scope = self._scope
        initial = self.initial_value
        if scope is not None and scope.carry:
            initial = scope.initial(self, seq.shape[1:], initial)
        out, state = self._run(seq, initial, **options)
        if scope is not None:
            scope.store(self, state)
        return out.view_as(x) if self.timesteps is not None else out
