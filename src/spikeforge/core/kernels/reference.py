"""Reference multi-step kernel: a plain autograd loop over time.

Slow and memory-hungry (autograd records every step), but obviously correct:
it is the oracle the fused kernels are tested against. The surrogate gradient
comes from autograd through the shape's ``primitive`` (see
:func:`spikeforge.core.surrogate.spike`), so this kernel never calls the
hand-written derivatives the fused kernels use.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..surrogate import heaviside
from .spec import NeuronSpec


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
        smooth_step = spec.surrogate.primitive(z, width)
        if smooth:
            return smooth_step
        return heaviside(z.detach(), spec.strict) + (smooth_step - smooth_step.detach())

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
            state = h * (1 - r) + spec.v_reset * r if spec.hard_reset else h - v_th * r
        else:
            r = for_reset(s)
            if spec.hard_reset:
                state = decay * state * (1 - r) + spec.v_reset * r + input_scale * x_t
            else:
                state = decay * state + input_scale * x_t - v_th * r
            s = fire(state)
        spikes.append(s)
    return torch.stack(spikes), state
