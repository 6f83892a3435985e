"""The static description of a multi-step neuron recurrence shared by all kernels.

For ``t = 0 .. T-1`` and ``x`` of shape ``[T, ...]``::

    h_t = decay * u_{t-1} + input_scale * x_t        (u_{-1} = v_init)
    s_t = H(h_t - v_th)                              (strict: >, else >=)
    u_t = h_t * (1 - s_t) + v_reset * s_t            (hard reset)
    u_t = h_t - v_th * s_t                           (soft reset)

With ``detach_reset`` the spike in the reset line carries no gradient.
The dynamic values (decay, input_scale, v_th, surrogate width, v_init) are
floats or tensors broadcastable to one time step ``x[0]``; they are passed to
the kernels separately so that they can be learnable.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..surrogate import Surrogate


@dataclass(frozen=True)
class NeuronSpec:
    """Static (non-learnable) part of the recurrence."""

    surrogate: type[Surrogate]
    hard_reset: bool = True
    v_reset: float = 0.0
    detach_reset: bool = False
    strict: bool = False
