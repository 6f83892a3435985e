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
    """Run the recurrence over ``x[T, ...]``; returns ``(spikes[T, ...], u_final[...])``.

    ``smooth=True`` replaces the step by the surrogate's primitive in the
    forward pass too, giving a differentiable function whose gradients can be
    checked by finite differences.
    """
    u = torch.zeros_like(x[0]) + v_init
    spikes = []
    for x_t in x.unbind(0):  # unbind: one backward node, not T full-size zero-padded gradients
        h = decay * u + input_scale * x_t
        z = h - v_th
        smooth_step = spec.surrogate.primitive(z, width)
        if smooth:
            s = smooth_step
        else:
            s = heaviside(z.detach(), spec.strict) + (smooth_step - smooth_step.detach())
        s_reset = s.detach() if spec.detach_reset else s
        if spec.hard_reset:
            u = h * (1 - s_reset) + spec.v_reset * s_reset
        else:
            u = h - v_th * s_reset
        spikes.append(s)
    return torch.stack(spikes), u
