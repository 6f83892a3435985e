"""Fused multi-step kernel: one autograd node for the whole time loop.

Forward runs the ``T`` steps with in-place tensor operations and records no
graph; it keeps only the membrane before firing ``h[T, ...]`` (the surrogate's
input, in the compute dtype) and the spikes it returns anyway. Backward runs
BPTT in one pass. Everything that does not depend on the running gradient
(the surrogate derivative, the reset Jacobian) is computed for all steps at
once; the only sequential part is the linear recurrence

    grad_h[t] = grad_s[t] * sg[t] + (dL/du_t) * du_t/dh_t,   dL/du_{t-1} = decay * grad_h[t]

which costs two tensor operations per step. Gradients for the learnable decay,
input scale, threshold, surrogate width and initial membrane are reductions
over the saved tensors after the loop. Plain torch operations only, so the
kernel runs on any device torch supports.

The two sequential loops are pluggable (:class:`Multistep` takes them as
``impl``): :data:`TORCH_LOOPS` here, compiled C loops in :mod:`.cpu`. The
autograd node, the saved tensors and the parameter reductions are shared.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import Tensor

from .spec import NeuronSpec


def _is_const(value, constant: float) -> bool:
    return not isinstance(value, Tensor) and float(value) == constant


def _sum_to(grad: Tensor, like) -> Tensor | None:
    """Reduce an elementwise gradient over time and broadcast dims to ``like``'s shape."""
    if not isinstance(like, Tensor):
        return None
    return grad.sum_to_size(like.shape) if grad.dim() else grad.reshape(like.shape)


def _reset(h: Tensor, s: Tensor, spec: NeuronSpec, v_th, out: Tensor | None = None) -> Tensor:
    """Membrane after firing, ``u = reset(h, s)``; works per step or on all steps at once."""
    if spec.hard_reset:
        if spec.v_reset == 0.0:
            return torch.addcmul(h, h, s, value=-1, out=out)
        return torch.addcmul(h, spec.v_reset - h, s, out=out)
    if isinstance(v_th, Tensor):
        return torch.addcmul(h, s, v_th, value=-1, out=out)
    return torch.sub(h, s, alpha=v_th, out=out)


def forward_loop(x: Tensor, spec: NeuronSpec, decay, input_scale, v_th, v_init, keep_h: bool):
    """Run the recurrence without autograd; returns ``(spikes, h or None, u_final, counts)``.

    ``counts[T]`` (spikes per step) is None here: torch operations would need
    an extra pass, which the neuron does only when it records rates.
    """
    steps = x.shape[0]
    spikes = torch.empty_like(x)
    h_all = torch.empty_like(x) if keep_h else None
    h_step = None if keep_h else torch.empty_like(x[0])
    drive = x if _is_const(input_scale, 1.0) else x * input_scale
    u = torch.zeros_like(x[0]) + v_init
    if u.shape != x.shape[1:]:
        raise ValueError(f"initial membrane of shape {tuple(u.shape)} does not broadcast to one step {tuple(x.shape[1:])}")
    compare = torch.gt if spec.strict else torch.ge
    for t in range(steps):
        h = h_all[t] if keep_h else h_step
        if _is_const(decay, 1.0):
            torch.add(drive[t], u, out=h)
        elif isinstance(decay, Tensor):
            torch.addcmul(drive[t], u, decay, out=h)
        else:
            torch.add(drive[t], u, alpha=float(decay), out=h)
        compare(h, v_th, out=spikes[t])
        _reset(h, spikes[t], spec, v_th, out=u)
    return spikes, h_all, u, None


def bptt(grad_spikes: Tensor, grad_u_final: Tensor | None, h: Tensor, s: Tensor, spec: NeuronSpec, decay, v_th, width, scale=1.0) -> Tensor:
    """``scale * dL/dh_t`` for every step, by the backward recurrence (torch operations)."""
    steps = h.shape[0]
    sg = spec.surrogate.derivative(h - v_th, width)
    through_reset = not spec.detach_reset
    # Total du/dh = direct + du/ds * sg (direct: 1 - s hard, 1 soft).
    if spec.hard_reset:
        du_dh = torch.sub(1.0, s)
        if through_reset:
            du_dh.addcmul_(spec.v_reset - h, sg)
    else:
        du_dh = (1.0 - v_th * sg) if through_reset else None
    # grad_h is built in place in the buffer that starts as grad_s * sg.
    grad_h = grad_spikes * sg
    del sg
    g_u = grad_u_final
    g_next = torch.empty_like(h[0])
    for t in range(steps - 1, -1, -1):
        if g_u is not None:
            if du_dh is None:
                grad_h[t].add_(g_u)
            else:
                grad_h[t].addcmul_(du_dh[t], g_u)
        if _is_const(decay, 1.0):
            g_u = grad_h[t]
        else:
            g_u = torch.mul(grad_h[t], decay, out=g_next)
    return grad_h if _is_const(scale, 1.0) else grad_h.mul_(scale)


def input_and_parameter_grads(need, grad_h, grad_spikes, grad_u_final, h, s, x, spec: NeuronSpec, values):
    """Gradients for ``(x, decay, input_scale, v_th, width, v_init)`` from ``dL/dh``.

    Parameter gradients are reductions over all steps; ``need`` says which
    inputs want one (``ctx.needs_input_grad``).
    """
    decay, input_scale, v_th, width, v_init = values
    grads = [None] * 6
    if need[0]:
        grads[0] = grad_h if _is_const(input_scale, 1.0) else grad_h * input_scale
    if need[1] or need[5]:
        u_prev = torch.empty_like(h)
        u_prev[0] = v_init
        _reset(h[:-1], s[:-1], spec, v_th, out=u_prev[1:])
        if need[1]:
            grads[1] = _sum_to(grad_h * u_prev, decay)
        if need[5]:
            grads[5] = _sum_to(grad_h[0] * decay, v_init)
        del u_prev
    if need[2]:
        grads[2] = _sum_to(grad_h * x, input_scale)
    if need[3] or need[4]:
        # dL/du_t for every t, then the total gradient reaching each spike.
        z = h - v_th
        sg = spec.surrogate.derivative(z, width)
        grad_u = torch.zeros_like(h)
        torch.mul(grad_h[1:], decay, out=grad_u[:-1])
        if grad_u_final is not None:
            grad_u[-1] = grad_u_final
        grad_s_total = grad_spikes.clone()
        if not spec.detach_reset:
            if spec.hard_reset:
                grad_s_total.addcmul_(grad_u, spec.v_reset - h)
            else:
                grad_s_total.sub_(grad_u * v_th)
        if need[3]:
            grad_vth = -(grad_s_total * sg)
            if not spec.hard_reset:
                grad_vth.addcmul_(grad_u, s, value=-1)
            grads[3] = _sum_to(grad_vth, v_th)
        if need[4]:
            grads[4] = _sum_to(grad_s_total * spec.surrogate.width_derivative(z, width), width)
    return grads


class Multistep(torch.autograd.Function):
    """One autograd node for the whole recurrence; ``impl`` supplies the two sequential loops.

    ``impl.forward(x, spec, decay, input_scale, v_th, v_init, keep_h)`` (returns
    spikes, h, final membrane, per-step spike counts or None) and
    ``impl.bptt(grad_spikes, grad_u_final, h, s, spec, decay, v_th, width, scale)``
    (returns ``scale * dL/dh``): torch operations here (:data:`TORCH_LOOPS`),
    compiled C in ``cpu.py``.
    Inputs other than ``x`` may be floats or tensors.
    """

    @staticmethod
    def forward(ctx, x, decay, input_scale, v_th, width, v_init, spec: NeuronSpec, impl, record=None):
        spikes, h, u, counts = impl.forward(x, spec, decay, input_scale, v_th, v_init, True)
        if record is not None:
            record.counts = counts
        ctx.spec, ctx.impl = spec, impl
        ctx.scalars = (decay, input_scale, v_th, width, v_init)
        tensors = [t if isinstance(t, Tensor) else None for t in ctx.scalars]
        ctx.save_for_backward(h, spikes, x if ctx.needs_input_grad[2] else None, *tensors)
        return spikes, u

    @staticmethod
    def backward(ctx, grad_spikes, grad_u_final):
        h, s, x, *saved = ctx.saved_tensors
        values = tuple(t if isinstance(c, Tensor) else c for t, c in zip(saved, ctx.scalars))
        decay, _, v_th, width, _ = values
        if grad_spikes is None:
            grad_spikes = torch.zeros_like(h)
        need = ctx.needs_input_grad
        if not any(need[1:6]):  # only the input: let the loop apply the input scale as it writes
            grad_x = ctx.impl.bptt(grad_spikes, grad_u_final, h, s, ctx.spec, decay, v_th, width, values[1])
            return grad_x, None, None, None, None, None, None, None, None
        grad_h = ctx.impl.bptt(grad_spikes, grad_u_final, h, s, ctx.spec, decay, v_th, width)
        grads = input_and_parameter_grads(need, grad_h, grad_spikes, grad_u_final, h, s, x, ctx.spec, values)
        return (*grads, None, None, None)


#: The torch-operation loops, usable on any device.
TORCH_LOOPS = SimpleNamespace(forward=forward_loop, bptt=bptt)


def fused_multistep(x: Tensor, spec: NeuronSpec, decay, input_scale, v_th, width, v_init, loops=TORCH_LOOPS):
    """Run the recurrence over ``x[T, ...]``; returns ``(spikes[T, ...], u_final[...])``.

    ``loops`` supplies the sequential parts (torch operations by default).
    Without autograd (inference, or nothing requires grad) no per-step state
    is kept at all, so memory does not grow with ``T``.
    """
    return fused_multistep_counted(x, spec, decay, input_scale, v_th, width, v_init, loops)[:2]


def fused_multistep_counted(x: Tensor, spec: NeuronSpec, decay, input_scale, v_th, width, v_init, loops=TORCH_LOOPS):
    """:func:`fused_multistep` plus the per-step spike counts ``[T]`` when the loops provide them (else None)."""
    values = (x, decay, input_scale, v_th, width, v_init)
    if torch.is_grad_enabled() and any(isinstance(v, Tensor) and v.requires_grad for v in values):
        record = SimpleNamespace(counts=None)
        spikes, u = Multistep.apply(x, decay, input_scale, v_th, width, v_init, spec, loops, record)
        return spikes, u, record.counts
    spikes, _, u, counts = loops.forward(x, spec, decay, input_scale, v_th, v_init, False)
    return spikes, u, counts
