"""Reference multi-step kernel: a plain autograd loop over time.

Slow and memory-hungry (autograd records every step), but obviously correct:
it is the oracle the fused kernels are tested against. Autograd chains the
steps (BPTT); the two non-smooth pieces state their derivative explicitly, so
the oracle follows the formulas everywhere, kinks and exact ties included: the
spike is :class:`~spikeforge.core.surrogate.SpikeFunction` (backward: the
shape's derivative formula, itself checked against the shape's primitive by
finite differences) and the hard reset is :class:`HardReset`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..surrogate import SpikeFunction
from .spec import NeuronSpec


class HardReset(torch.autograd.Function):
    """``u = h (1 - s) + v_reset s`` (``h``, ``s``: same shape), evaluated as the select
    ``v_reset`` where ``s == 1`` so that an infinite ``h`` resets cleanly (a NaN ``s``
    keeps its NaN ``h``); backward ``du/dh = 1 - s``, ``du/ds = v_reset - h``."""

    @staticmethod
    def forward(ctx, h: Tensor, s: Tensor, v_reset: float) -> Tensor:
        ctx.save_for_backward(h, s)
        ctx.v_reset = v_reset
        return torch.where(s == 1, v_reset, h * (1 - s) + v_reset * s)

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, s = ctx.saved_tensors
        grad_h = grad * (1 - s) if ctx.needs_input_grad[0] else None
        grad_s = grad * (ctx.v_reset - h) if ctx.needs_input_grad[1] else None
        return grad_h, grad_s, None


def reference_multistep(
    x: Tensor,
    spec: NeuronSpec,
    decay,
    input_scale,
    v_th,
    width,
    v_init,
    smooth: bool = False,
) -> tuple[Tensor, Tensor]:
    """Run the recurrence over ``x[T, ...]``; returns ``(spikes[T, ...], final state[...])``.

    ``smooth=True`` replaces the step by the surrogate's primitive in the
    forward pass too, giving a differentiable function whose gradients can be
    checked by finite differences.
    """
    def fire(h):
        z = h - v_th
        if smooth:
            return spec.surrogate.primitive(z, width)
        return SpikeFunction.apply(z, width, spec.surrogate, spec.strict)

    def for_reset(s):
        return s.detach() if spec.detach_reset else s

    spikes = []
    state = torch.zeros_like(x[0]) + v_init  # u (reset now) or h (reset at the next step)
    if spec.delayed:
        s = fire(state)
    for x_t in x.unbind(0):  # unbind: one backward node, not T full-size zero-padded gradients
        if not spec.delayed:
            h = decay * state + input_scale * x_t
            s = fire(h)
            r = for_reset(s)
            state = HardReset.apply(h, r, spec.v_reset) if spec.hard_reset else h - v_th * r
        else:
            r = for_reset(s)
            if spec.hard_reset:
                state = HardReset.apply(decay * state, r, spec.v_reset) + input_scale * x_t
            else:
                state = decay * state + input_scale * x_t - v_th * r
            s = fire(state)
        spikes.append(s)
    return torch.stack(spikes), state
