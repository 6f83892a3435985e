"""Fused multi-step kernel: one autograd node for the whole time loop.

Forward runs the ``T`` steps with in-place tensor operations and records no
graph; it keeps only the membrane before firing ``h[T, ...]`` (the surrogate's
input, in the compute dtype) and the spikes it returns anyway. Backward runs
BPTT over the steps in reverse, on step-sized slices ``[...]``: each step
recomputes its surrogate derivative and reset Jacobian from ``h[t]`` and ``s[t]``
and advances the linear recurrence

    grad_h[t] = grad_s[t] * sg[t] + (dL/du_t) * du_t/dh_t,   dL/du_{t-1} = decay * grad_h[t]

(with a delayed reset, ``grad_h[t] = grad_s[t] * sg[t] + grad_h[t+1] * dh_{t+1}/dh_t``).
The only full-size tensor the backward allocates is ``dL/dh``, which becomes the
input gradient (scaled in place). Gradients for the learnable decay, input
scale, threshold, surrogate width and initial membrane take a second pass over
the steps, adding up into step-sized sums that are reduced to each parameter's
shape at the end. Plain torch operations only, so the kernel runs on any device
torch supports.

The two sequential loops are pluggable (:class:`Multistep` takes them as
``impl``): :data:`TORCH_LOOPS` here, compiled C loops in :mod:`.cpu`, Triton
kernels in :mod:`.triton_loops`. The autograd node, the saved tensors and the parameter gradients are shared.
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
    state = torch.zeros_like(x[0]) + v_init  # u, or h when the reset is delayed
    if state.shape != x.shape[1:]:
        raise ValueError(f"initial membrane of shape {tuple(state.shape)} does not broadcast to one step "
                         f"{tuple(x.shape[1:])}")
    fired = _fires(state, v_th, spec) if spec.delayed else None
    h_step = None if keep_h or spec.delayed else torch.empty_like(x[0])
    for t in range(x.shape[0]):
        drive_t = x[t] if _is_const(input_scale, 1.0) else x[t] * input_scale
        h = h_all[t] if keep_h else (state if spec.delayed else h_step)
        _leak(drive_t, state, decay, out=h)
        if spec.delayed:
            _pending_reset(h, drive_t, fired, spec, v_th)
        _fires(h, v_th, spec, out=spikes[t])
        if spec.delayed:
            state, fired = h, spikes[t]
        else:
            _reset(h, spikes[t], spec, v_th, out=state)
    final = state.clone() if spec.delayed and keep_h else state
    return spikes, h_all, final, None


def _add_reset_pull(out: Tensor, h: Tensor, factor: Tensor, spec: NeuronSpec, leak) -> Tensor:
    """``out += (v_reset - leak * h) * factor`` in place: how a spike moves the state a hard reset acts on."""
    pulled = h if _is_const(leak, 1.0) else h * leak
    if spec.v_reset == 0.0:
        return out.addcmul_(pulled, factor, value=-1)
    return out.addcmul_(spec.v_reset - pulled, factor)


def _carry_jacobian(h: Tensor, s: Tensor, sg: Tensor, spec: NeuronSpec, decay, v_th):
    """Derivative of the state carried out of a step with respect to that step's ``h`` (``[...]``).

    ``du_t/dh_t`` when the reset is immediate, ``dh_{t+1}/dh_t`` when it is delayed (the
    leak comes first); through the spike too unless ``detach_reset``. A step-sized tensor,
    or the leak factor itself when it does not depend on the step.
    """
    leak = decay if spec.delayed else 1.0
    if spec.hard_reset:
        jac = torch.sub(1.0, s) if _is_const(leak, 1.0) else (1.0 - s) * leak
        return jac if spec.detach_reset else _add_reset_pull(jac, h, sg, spec, leak)
    if spec.detach_reset:
        return leak
    return leak - v_th * sg


def _add_scaled(out: Tensor, g: Tensor, factor) -> None:
    """``out += factor * g`` for a float factor or a tensor broadcastable to ``g``."""
    if isinstance(factor, Tensor):
        out.addcmul_(g, factor)
    else:
        out.add_(g, alpha=float(factor))


def bptt(grad_spikes: Tensor, grad_u_final: Tensor | None, h: Tensor, s: Tensor, spec: NeuronSpec, decay, v_th, width,
         scale=1.0) -> Tensor:
    """``scale * dL/dh[T, ...]`` by the backward recurrence (torch operations), one step at a time:
    the result is the only full-size tensor allocated."""
    steps = h.shape[0]
    out = torch.empty_like(h)
    unscaled = _is_const(scale, 1.0)
    g = grad_u_final  # dL/d(state carried out of step t)
    for t in range(steps - 1, -1, -1):
        sg = spec.surrogate.derivative(h[t] - v_th, width)
        grad_h = torch.mul(grad_spikes[t], sg, out=out[t] if unscaled else None)
        if g is not None:
            final_h = spec.delayed and t == steps - 1  # the final state is h_{T-1} itself
            _add_scaled(grad_h, g, 1.0 if final_h else _carry_jacobian(h[t], s[t], sg, spec, decay, v_th))
        if not unscaled:
            torch.mul(grad_h, scale, out=out[t])
        g = grad_h if spec.delayed or _is_const(decay, 1.0) else grad_h * decay
    return out


def _leaked_state(h: Tensor, s: Tensor, t: int, v0: Tensor, s0: Tensor | None, spec: NeuronSpec, v_th) -> Tensor:
    """What the decay multiplies at step ``t`` (``[...]``): ``u_{t-1}`` (immediate reset; ``v0`` at step 0),
    or ``h_{t-1}`` (``v0`` at step 0) with the entries a delayed hard reset sets to ``v_reset`` zeroed."""
    if not spec.delayed:
        return v0 if t == 0 else _reset(h[t - 1], s[t - 1], spec, v_th)
    prev, fired = (v0, s0) if t == 0 else (h[t - 1], s[t - 1])
    return prev * (1 - fired) if spec.hard_reset else prev


def _spike_terms(h: Tensor, s: Tensor, grad_s: Tensor | None, carried: Tensor, spec: NeuronSpec, decay, v_th, width):
    """Gradient terms of the firing events of one step (``[...]``) at membranes ``h`` (spikes ``s``,
    output gradient ``grad_s``, ``carried``: dL/d(the state the reset acts on)).

    Returns ``(total dL/ds, z = h - v_th, surrogate derivative, elementwise dL/dv_th)``.
    """
    leak = decay if spec.delayed else 1.0
    z = h - v_th
    sg = spec.surrogate.derivative(z, width)
    total = torch.zeros_like(h) if grad_s is None else grad_s.clone()
    if not spec.detach_reset:  # the spike also moves the next state through the reset
        if spec.hard_reset:
            _add_reset_pull(total, h, carried, spec, leak)
        else:
            total.sub_(carried * v_th)
    grad_vth = -(total * sg)
    if not spec.hard_reset:
        grad_vth.addcmul_(carried, s, value=-1)
    return total, z, sg, grad_vth


def input_and_parameter_grads(need, grad_h, grad_spikes, grad_u_final, h, s, x, spec: NeuronSpec, values):
    """Gradients for ``(x, decay, input_scale, v_th, width, v_init)`` from ``dL/dh`` (``grad_h[T, ...]``,
    which becomes the input gradient in place). ``grad_spikes`` in ``h``'s dtype (its clones accumulate in place);
    half-precision ``s`` and ``x`` (mixed precision) take part as they are.

    ``need`` says which inputs want one (``ctx.needs_input_grad``). Parameter
    gradients add up step by step into step-sized sums, reduced to the
    parameter's shape at the end. A delayed reset also fires on ``v_init`` (the
    pending spike of step -1), which adds one event to the sums.
    """
    decay, input_scale, v_th, width, v_init = values
    steps = h.shape[0]
    v0 = torch.zeros_like(h[0]) + v_init
    s0 = _fires(v0, v_th, spec) if spec.delayed else None
    spike_events = need[3] or need[4]
    sums = {}  # input index -> step-sized sum of its elementwise gradient over the steps
    for t in range(steps):
        terms = {}
        if need[1]:
            terms[1] = grad_h[t] * _leaked_state(h, s, t, v0, s0, spec, v_th)
        if need[2]:
            terms[2] = grad_h[t] * x[t]
        if spike_events:  # carried: dL/d(state carried out of step t) along the reset path
            if t < steps - 1:
                carried = grad_h[t + 1] if spec.delayed else grad_h[t + 1] * decay
            elif spec.delayed or grad_u_final is None:  # delayed: the final state is h, which no reset acts on
                carried = torch.zeros_like(h[0])
            else:
                carried = grad_u_final
            total, z, _, grad_vth = _spike_terms(h[t], s[t], grad_spikes[t], carried, spec, decay, v_th, width)
            if need[3]:
                terms[3] = grad_vth
            if need[4]:
                terms[4] = total * spec.surrogate.width_derivative(z, width)
        for i, term in terms.items():
            sums[i] = term if i not in sums else sums[i].add_(term)
    grads = [None] * 6
    if spec.delayed and (need[3] or need[4] or need[5]):
        total0, z0, sg0, grad_vth0 = _spike_terms(v0, s0, None, grad_h[0], spec, decay, v_th, width)
        if need[3]:
            sums[3].add_(grad_vth0)
        if need[4]:
            sums[4].add_(total0 * spec.surrogate.width_derivative(z0, width))
        if need[5]:  # h_0 depends on v_init through the leak and through the pending spike
            leak_path = grad_h[0] * decay * (1 - s0) if spec.hard_reset else grad_h[0] * decay
            grads[5] = _sum_to(leak_path + total0 * sg0, v_init)
    elif need[5]:
        grads[5] = _sum_to(grad_h[0] * decay, v_init)
    for i, total in sums.items():
        grads[i] = _sum_to(total, values[i - 1])
    if need[0]:
        grads[0] = grad_h if _is_const(input_scale, 1.0) else grad_h.mul_(input_scale)
    return grads


class Multistep(torch.autograd.Function):
    """One autograd node for the whole recurrence; ``impl`` supplies the two sequential loops.

    ``impl.forward(x, spec, decay, input_scale, v_th, v_init, keep_h)`` (returns
    spikes, h, final membrane, per-step spike counts or None) and
    ``impl.bptt(grad_spikes, grad_u_final, h, s, spec, decay, v_th, width, scale)``
    (returns ``scale * dL/dh`` as a new tensor, which the node may turn into the input gradient
    in place): torch operations here (:data:`TORCH_LOOPS`), compiled C in ``cpu.py``, Triton in
    ``triton_loops.py``. Loops that can recompute ``h`` have ``impl.bptt_from_input(grad_spikes,
    grad_u_final, x, spec, decay, input_scale, v_th, width, v_init)`` and ``impl.recomputes(x)`` (whether
    they do for this input): when they do and only the input wants a gradient, the node saves ``x`` alone
    (no ``h``, no spikes) and the forward writes no ``h``.
    Inputs other than ``x`` may be floats or tensors.
    """

    @staticmethod
    def forward(ctx, x, decay, input_scale, v_th, width, v_init, spec: NeuronSpec, impl, record=None):
        ctx.set_materialize_grads(False)  # an unused final state gets no zero-filled gradient (None is handled)
        ctx.from_input = impl.recomputes(x) and not any(ctx.needs_input_grad[1:6])
        spikes, h, u, counts = impl.forward(x, spec, decay, input_scale, v_th, v_init, not ctx.from_input)
        if record is not None:
            record.counts = counts
        ctx.spec, ctx.impl = spec, impl
        ctx.scalars = (decay, input_scale, v_th, width, v_init)
        tensors = [t if isinstance(t, Tensor) else None for t in ctx.scalars]
        if ctx.from_input:
            ctx.save_for_backward(x, None, None, *tensors)
        else:
            ctx.save_for_backward(h, spikes, x if ctx.needs_input_grad[2] else None, *tensors)
        return spikes, u

    @staticmethod
    def backward(ctx, grad_spikes, grad_u_final):
        h, s, x, *saved = ctx.saved_tensors  # h is x itself when ctx.from_input
        values = tuple(t if isinstance(c, Tensor) else c for t, c in zip(saved, ctx.scalars))
        decay, _, v_th, width, _ = values
        if grad_spikes is None:
            grad_spikes = torch.zeros_like(h)
        if ctx.from_input:
            grad_x = ctx.impl.bptt_from_input(grad_spikes, grad_u_final, h, ctx.spec, *values)
            return grad_x, None, None, None, None, None, None, None, None
        need = ctx.needs_input_grad
        if not any(need[1:6]):  # only the input: let the loop apply the input scale as it writes
            grad_x = ctx.impl.bptt(grad_spikes, grad_u_final, h, s, ctx.spec, decay, v_th, width, values[1])
            return grad_x, None, None, None, None, None, None, None, None
        grad_spikes = grad_spikes.to(h.dtype)  # half-precision spikes' gradient: once, for the loop and the sums
        grad_h = ctx.impl.bptt(grad_spikes, grad_u_final, h, s, ctx.spec, decay, v_th, width)
        grads = input_and_parameter_grads(need, grad_h, grad_spikes, grad_u_final, h, s, x, ctx.spec, values)
        return (*grads, None, None, None)


#: The torch-operation loops, usable on any device.
TORCH_LOOPS = SimpleNamespace(forward=forward_loop, bptt=bptt, bptt_from_input=None, recomputes=lambda x: False)


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
