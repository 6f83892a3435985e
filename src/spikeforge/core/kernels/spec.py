"""The static description of a multi-step neuron recurrence shared by all kernels.

For ``t = 0 .. T-1`` and ``x`` of shape ``[T, ...]``, with ``reset_timing="now"``::

    h_t = decay * u_{t-1} + input_scale * x_t        (u_{-1} = v_init)
    s_t = H(h_t - v_th)                              (strict: >, else >=; NaN if h_t is NaN)
    u_t = h_t * (1 - s_t) + v_reset * s_t            (hard reset: v_reset where s_t = 1, even for h_t = +inf)
    u_t = h_t - v_th * s_t                           (soft reset)

and the final state is ``u_{T-1}``. With ``reset_timing="next_step"`` (snnTorch's
``Leaky``) the reset decided at step ``t-1`` is applied at step ``t``, after the
leak (so it is not multiplied by the decay), and the state is ``h`` itself::

    h_t = decay * h_{t-1} + input_scale * x_t - v_th * s_{t-1}             (soft reset)
    h_t = v_reset + input_scale * x_t  if s_{t-1}  else  decay * h_{t-1} + input_scale * x_t   (hard)
    s_t = H(h_t - v_th)                              (h_{-1} = v_init, s_{-1} = H(v_init - v_th))

and the final state is ``h_{T-1}``. With ``detach_reset`` the spike in the reset
carries no gradient. The dynamic values (decay, input_scale, v_th, surrogate
width, v_init) are floats or tensors broadcastable to one time step ``x[0]``;
they are passed to the kernels separately so that they can be learnable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..surrogate import Surrogate

RESET_TIMINGS = ("now", "next_step")


@dataclass(frozen=True)
class NeuronSpec:
    """Static (non-learnable) part of the recurrence."""

    surrogate: type[Surrogate]
    hard_reset: bool = True
    v_reset: float = 0.0
    detach_reset: bool = False
    strict: bool = False
    reset_timing: str = "now"

    def __post_init__(self) -> None:
        if self.reset_timing not in RESET_TIMINGS:
            raise ValueError(f"reset_timing must be 'now' or 'next_step', got {self.reset_timing!r}")

    @property
    def delayed(self) -> bool:
        """The reset is applied at the next step, after the leak (``reset_timing="next_step"``)."""
        return self.reset_timing == "next_step"


def learns_parameters(*values) -> bool:
    """Whether a call with these neuron parameters (floats or tensors) must compute a parameter gradient:
    grad mode is on and one of them requires it."""
    return torch.is_grad_enabled() and any(isinstance(v, Tensor) and v.requires_grad for v in values)
