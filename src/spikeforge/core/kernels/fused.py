"""Fused multi-step kernel: one autograd node for the whole time loop.

Forward runs the ``T`` steps with in-place tensor operations and records no
graph; it keeps only the membrane before firing ``h[T, ...]`` (the surrogate's
input, in the compute dtype) and the spikes it returns anyway. Backward runs
BPTT in one pass. Everything that does not depend on the running gradient
(the surrogate derivative, the reset Jacobian) is computed for all steps at
once; the only sequential part is the linear recurrence

    grad_h[t] = grad_s[t] * sg[t] + (dL/du_t) * du_t/dh_t,   dL/du_{t-1} = decay * grad_h[t]

(with a delayed reset, ``grad_h[t] = grad_s[t] * sg[t] + grad_h[t+1] * dh_{t+1}/dh_t``),
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
    """Membrane after firing, ``u = reset(h, s)`` (``s`` fired from this ``h``); works per step
    or on all steps at once.

    The hard reset is ``min(h, v_th) (1 - s) + v_reset s``: ``h`` where ``s = 0`` (``-inf``
    included), exactly ``v_reset`` where ``s = 1`` (``+inf`` included, as ``min(h, v_th)``
    is finite there), NaN where ``h`` is NaN; arithmetic only, much faster than a select.
    """
    if spec.hard_reset:
        kept = torch.clamp(h, max=v_th, out=out).mul_(1 - s)
        return kept if spec.v_reset == 0.0 else kept.add_(s, alpha=spec.v_reset)
    if isinstance(v_th, Tensor):
        return torch.addcmul(h, s, v_th, value=-1, out=out)
    return torch.sub(h, s, alpha=v_th, out=out)


def _fires(v: Tensor, v_th, spec: NeuronSpec, out: Tensor | None = None) -> Tensor:
    """``H(v - v_th)`` in the dtype of ``v``, NaN where ``v`` is NaN (into ``out`` if given)."""
    compare = torch.gt if spec.strict else torch.ge
    spikes = compare(v, v_th).to(v.dtype) if out is None else compare(v, v_th, out=out)
    return spikes.add_(v.clamp(0.0, 0.0))  # + 0, or + NaN where v is NaN (cheaper than isnan + masked_fill)


def _leak(drive_t: Tensor, state: Tensor, decay, out: Tensor) -> Tensor:
    """``out = decay * state + drive_t``."""
    if _is_const(decay, 1.0):
        return torch.add(drive_t, state, out=out)
    if isinstance(decay, Tensor):
        return torch.addcmul(drive_t, state, decay, out=out)
    return torch.add(drive_t, state, alpha=float(decay), out=out)


def _pending_reset(h: Tensor, drive_t: Tensor, fired: Tensor, spec: NeuronSpec, v_th) -> None:
    """Apply the previous step's reset to ``h = decay * h_prev + drive`` in place (``reset_timing="next_step"``)."""
    if spec.hard_reset:
        torch.where(fired == 1, drive_t + spec.v_reset, h, out=h)
    else:
        _reset(h, fired, spec, v_th, out=h)


def forward_loop(x: Tensor, spec: NeuronSpec, decay, input_scale, v_th, v_init, keep_h: bool):
    """Run the recurrence without autograd; returns ``(spikes, h or None, final state, counts)``.

    ``counts[T]`` (spikes per step) is None here: torch operations would need
    an extra pass, which the neuron does only when it records rates.
    """
    spikes = torch.empty_like(x)
    h_all = torch.empty_like(x) if keep_h else None
    drive = x if _is_const(input_scale, 1.0) else x * input_scale
    state = torch.zeros_like(x[0]) + v_init  # u, or h when the reset is delayed
    if state.shape != x.shape[1:]:
        raise ValueError(f"initial membrane of shape {tuple(state.shape)} does not broadcast to one step "
                         f"{tuple(x.shape[1:])}")
    fired = _fires(state, v_th, spec) if spec.delayed else None
    h_step = None if keep_h or spec.delayed else torch.empty_like(x[0])
    for t in range(x.shape[0]):
        h = h_all[t] if keep_h else (state if spec.delayed else h_step)
        _leak(drive[t], state, decay, out=h)
        if spec.delayed:
            _pending_reset(h, drive[t], fired, spec, v_th)
        _fires(h, v_th, spec, out=spikes[t])
        if spec.delayed:
            state, fired = h, spikes[t]
        else:
            _reset(h, spikes[t], spec, v_th, out=state)
    final = state.clone() if spec.delayed and keep_h else state
    return spikes, h_all, final, None


def _carry_jacobian(h: Tensor, s: Tensor, sg: Tensor, spec: NeuronSpec, decay, v_th):
    """Derivative of the state carried out of each step with respect to that step's ``h``.

    ``du_t/dh_t`` when the reset is immediate, ``dh_{t+1}/dh_t`` when it is delayed (the
    leak comes first); through the spike too unless ``detach_reset``. Returns
    ``(jacobian, per_step)``: a ``[T, ...]`` tensor, or a factor common to all steps.
    """
    leak = decay if spec.delayed else 1.0
    if spec.hard_reset:
        jac = torch.sub(1.0, s) if _is_const(leak, 1.0) else (1.0 - s) * leak
        if not spec.detach_reset:
            jac.addcmul_(spec.v_reset - h * leak, sg)
        return jac, True
    if spec.detach_reset:
        return leak, False
    return leak - v_th * sg, True


def _add_scaled(out: Tensor, g: Tensor, factor) -> None:
    """``out += factor * g`` for a float factor or a tensor broadcastable to ``g``."""
    if isinstance(factor, Tensor):
        out.addcmul_(g, factor)
    else:
        out.add_(g, alpha=float(factor))


def bptt(grad_spikes: Tensor, grad_u_final: Tensor | None, h: Tensor, s: Tensor, spec: NeuronSpec, decay, v_th, width,
         scale=1.0) -> Tensor:
    """``scale * dL/dh_t`` for every step, by the backward recurrence (torch operations)."""
    steps = h.shape[0]
    sg = spec.surrogate.derivative(h - v_th, width)
    jac, per_step = _carry_jacobian(h, s, sg, spec, decay, v_th)
    # grad_h is built in place in the buffer that starts as grad_s * sg.
    grad_h = grad_spikes * sg
    del sg
    g = grad_u_final  # dL/d(state carried out of step t)
    g_next = torch.empty_like(h[0])
    for t in range(steps - 1, -1, -1):
        if g is not None:
            final_h = spec.delayed and t == steps - 1  # the final state is h_{T-1} itself
            _add_scaled(grad_h[t], g, 1.0 if final_h else (jac[t] if per_step else jac))
        if spec.delayed or _is_const(decay, 1.0):
            g = grad_h[t]
        else:
            g = torch.mul(grad_h[t], decay, out=g_next)
    return grad_h if _is_const(scale, 1.0) else grad_h.mul_(scale)


def _leaked_states(h: Tensor, s: Tensor, spec: NeuronSpec, v_th, v_init) -> Tensor:
    """What the decay multiplies at every step: ``u_{t-1}`` (immediate reset), or ``h_{t-1}``
    with the entries a delayed hard reset sets to ``v_reset`` zeroed."""
    prev = torch.empty_like(h)
    prev[0] = v_init
    if not spec.delayed:
        _reset(h[:-1], s[:-1], spec, v_th, out=prev[1:])
        return prev
    prev[1:] = h[:-1]
    if spec.hard_reset:
        prev.mul_(1 - torch.cat([_fires(prev[:1], v_th, spec), s[:-1]]))
    return prev


def _carried_grads(grad_h: Tensor, grad_u_final: Tensor | None, spec: NeuronSpec, decay) -> Tensor:
    """dL/d(state carried out of step t) along the reset path: ``decay * grad_h[t+1]`` and the
    final state's gradient (immediate reset), or ``grad_h[t+1]`` and 0 (delayed: the final state is h)."""
    carried = torch.zeros_like(grad_h)
    if spec.delayed:
        carried[:-1] = grad_h[1:]
        return carried
    torch.mul(grad_h[1:], decay, out=carried[:-1])
    if grad_u_final is not None:
        carried[-1] = grad_u_final
    return carried


def _spike_terms(h: Tensor, s: Tensor, grad_s: Tensor | None, carried: Tensor, spec: NeuronSpec, decay, v_th, width):
    """Gradient terms of firing events at membranes ``h`` (spikes ``s``, output gradient ``grad_s``,
    ``carried``: dL/d(the state the reset acts on)).

    Returns ``(total dL/ds, z = h - v_th, surrogate derivative, elementwise dL/dv_th)``.
    """
    leak = decay if spec.delayed else 1.0
    z = h - v_th
    sg = spec.surrogate.derivative(z, width)
    total = torch.zeros_like(h) if grad_s is None else grad_s.clone()
    if not spec.detach_reset:  # the spike also moves the next state through the reset
        if spec.hard_reset:
            total.addcmul_(carried, spec.v_reset - h * leak)
        else:
            total.sub_(carried * v_th)
    grad_vth = -(total * sg)
    if not spec.hard_reset:
        grad_vth.addcmul_(carried, s, value=-1)
    return total, z, sg, grad_vth


def input_and_parameter_grads(need, grad_h, grad_spikes, grad_u_final, h, s, x, spec: NeuronSpec, values):
    """Gradients for ``(x, decay, input_scale, v_th, width, v_init)`` from ``dL/dh``.

    Parameter gradients are reductions over all steps; ``need`` says which
    inputs want one (``ctx.needs_input_grad``). A delayed reset also fires on
    ``v_init`` (the pending spike of step -1), which adds one event to the sums.
    """
    decay, input_scale, v_th, width, v_init = values
    grads = [None] * 6
    if need[0]:
        grads[0] = grad_h if _is_const(input_scale, 1.0) else grad_h * input_scale
    if need[1]:
        grads[1] = _sum_to(grad_h * _leaked_states(h, s, spec, v_th, v_init), decay)
    if need[2]:
        grads[2] = _sum_to(grad_h * x, input_scale)
    if need[5] and not spec.delayed:
        grads[5] = _sum_to(grad_h[0] * decay, v_init)
    if not (need[3] or need[4] or (need[5] and spec.delayed)):
        return grads
    events = [(h, s, grad_spikes, _carried_grads(grad_h, grad_u_final, spec, decay))]
    if spec.delayed:
        v0 = torch.zeros_like(h[0]) + v_init
        events.append((v0, _fires(v0, v_th, spec), None, grad_h[0]))
    terms = [_spike_terms(*event, spec, decay, v_th, width) for event in events]
    if need[3]:
        grads[3] = sum(_sum_to(t[3], v_th) for t in terms)
    if need[4]:
        grads[4] = sum(_sum_to(t[0] * spec.surrogate.width_derivative(t[1], width), width) for t in terms)
    if need[5] and spec.delayed:  # h_0 depends on v_init through the leak and through the pending spike
        (v0, s0, _, _), (total0, _, sg0, _) = events[1], terms[1]
        leak_path = grad_h[0] * decay * (1 - s0) if spec.hard_reset else grad_h[0] * decay
        grads[5] = _sum_to(leak_path + total0 * sg0, v_init)
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
