"""Batch norm and spiking neuron in one autograd node: ``neuron(bn(y) + residual)``.

A convolution's output ``y`` goes through a batch norm and then a neuron in every layer of a deep SNN.
Run apart, the batch norm writes its output ``x`` (which the neuron then reads) and each layer keeps
two full-size tensors for backward: ``y`` (the batch norm's) and ``x`` (the neuron's). Here the
compiled CPU kernel (:mod:`spikeforge.core.kernels.cpu`) reads ``y`` and applies the normalisation
on the fly (``x = alpha * y + beta (+ residual)``, per-channel ``alpha = weight / sqrt(var + eps)``,
``beta = bias - mean * alpha``; a residual input, e.g. a block's shortcut, added, or first normalised by its
own batch norm), so ``x`` is never stored: the node keeps ``y`` (and the residual),
the backward recomputes each block's membrane from them, and the same pass that writes
``dL/dx`` sums ``dL/dx`` and ``dL/dx * (y - mean)`` per channel; one more pass writes ``dL/dy``.
Per layer and step that is one full-size tensor less kept for backward, and about 40% fewer bytes
moved than batch norm and neuron apart. A neuron with learnable parameters (PLIF, LSG) keeps its
membrane as its own node does (their gradients need it); the normalisation is still fused.

:func:`normalize_and_fire` takes this path when it applies and otherwise computes
``neuron(norm(y) + residual)`` with the modules as they are, so models call it unconditionally:

- a plain ``nn.BatchNorm1d/2d/3d`` in training mode (batch statistics over time and batch folded
  together; per-step and synchronised batch norms, and evaluation, take the plain path), and the same for
  the residual's batch norm when there is one;
- a :class:`~spikeforge.core.neuron.SpikingNeuron` on backend ``auto`` or ``cpu`` that the compiled
  kernel supports for this input (CPU, float32/float64/bfloat16), with no state scope and no rate window
  measurement;
- no hooks on either module (nor global module hooks), no tracing or compiling;
- fusion not switched off (:func:`norm_fusion`, e.g. to compare with batch norm and neuron apart).

The batch norm's statistics, running-statistics update (momentum, cumulative averaging with
``momentum=None``, ``num_batches_tracked``) and gradients are those of ``nn.BatchNorm`` (computed in
float64 from float64 channel sums; not bit-identical to torch's kernel, equal to rounding). Under
mixed precision ``x`` is not rounded to bfloat16 between batch norm and neuron, as it is when they
run apart.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _torch_module

from .kernels import cpu, host
from .kernels.fused import input_and_parameter_grads
from .kernels.layout import dense, like
from .neuron import SpikingNeuron

__all__ = ["normalize_and_fire", "fusable", "norm_fusion"]

_PLAIN_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_enabled = True


@contextmanager
def norm_fusion(enabled: bool):
    """Within the block, :func:`normalize_and_fire` fuses (``True``, the default) or never does (``False``);
    process-wide (all threads), restored on exit."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _global_hooks() -> bool:
    return bool(_torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks)


def _neuron_values(neuron: SpikingNeuron):
    """``(decay, input_scale, v_th, width, v_init)`` of a call of ``neuron`` from its initial membrane."""
    return neuron.decay, neuron.input_scale, neuron.v_th, neuron.surrogate_width(), neuron.initial_value


def _plain_training_norm(norm, channels: int) -> bool:
    """A torch batch norm of ``channels`` features, training with batch statistics folded over time, no hooks."""
    return (type(norm) in _PLAIN_NORMS and norm.training and norm.num_features == channels
            and not _hooked(norm))


def fusable(norm: nn.Module, neuron: nn.Module, y, residual=None, residual_norm: nn.Module | None = None) -> bool:
    """Whether :func:`normalize_and_fire` runs ``neuron(norm(y) + residual_norm(residual))`` as one fused node
    (module doc)."""
    return _fusable(norm, neuron, y, residual, residual_norm, lambda: _neuron_values(neuron))


def _fusable(norm, neuron, y, residual, residual_norm, values) -> bool:
    """:func:`fusable`, the neuron's values from ``values()`` (called only once the cheaper checks pass)."""
    if not _enabled or not isinstance(neuron, SpikingNeuron) or type(y) is not Tensor or y.dim() < 2:
        return False
    if not _plain_training_norm(norm, y.shape[1]) or y.numel() == 0:
        return False
    if residual is not None and (type(residual) is not Tensor or residual.shape != y.shape
                                 or residual.dtype != y.dtype):
        return False
    if residual_norm is not None and (residual is None or not _plain_training_norm(residual_norm, y.shape[1])):
        return False
    if neuron.backend not in ("auto", "cpu") or neuron._scope is not None or neuron.record_window:
        return False
    if _hooked(neuron) or _global_hooks() or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    steps = neuron.timesteps or y.shape[0]
    return y.shape[0] % steps == 0 and cpu.supports(y.view(steps, -1, *y.shape[1:]), neuron.spec, *values())


def normalize_and_fire(norm: nn.Module, neuron: nn.Module, y: Tensor, residual: Tensor | None = None,
                       residual_norm: nn.Module | None = None) -> Tensor:
    """``neuron(norm(y) + residual)`` (``residual`` optional, e.g. a residual block's shortcut; with
    ``residual_norm``, the shortcut's own batch norm, ``neuron(norm(y) + residual_norm(residual))``), fused into
    one node where :func:`fusable` (module doc), else with the modules as they are. ``y``: the folded
    ``[T*B, C, ...]`` inside a :class:`~spikeforge.SpikingNetwork` (or ``[T, B, ...]``-first as the neuron
    takes it); returns the neuron's output, shaped like ``y``."""
    values = _neuron_values(neuron) if isinstance(neuron, SpikingNeuron) else None
    if not _fusable(norm, neuron, y, residual, residual_norm, lambda: values):
        x = norm(y)
        if residual is not None:
            x = x + (residual_norm(residual) if residual_norm is not None else residual)
        return neuron(x)
    seq = neuron._sequence(y)  # [T, B, C, ...]
    res = residual.view(seq.shape) if residual is not None else None
    stats = (_Statistics(norm), _Statistics(residual_norm) if residual_norm is not None else None)
    rweight, rbias = (residual_norm.weight, residual_norm.bias) if residual_norm is not None else (None, None)
    spikes, counts = _NormFire.apply(seq, norm.weight, norm.bias, res, rweight, rbias, *values, stats, neuron.spec)
    return neuron._emit(spikes, counts).view_as(y)


class _Statistics:
    """What a batch norm's batch statistics update, taken in the forward as ``nn.BatchNorm`` would:
    the running buffers (or None), this call's update weight (counting the batch in ``num_batches_tracked``)
    and ``eps``."""

    def __init__(self, norm: nn.Module):
        self.running_mean, self.running_var, self.eps = norm.running_mean, norm.running_var, norm.eps
        self.factor = None
        if norm.track_running_stats and norm.running_mean is not None:
            norm.num_batches_tracked.add_(1)
            self.factor = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum

    def of(self, t: Tensor, spec) -> tuple[Tensor, Tensor]:
        """Batch ``(mean, 1 / sqrt(var + eps))`` per channel of a dense ``t[T, B, C, ...]`` (float64), the running
        statistics updated."""
        count = t.numel() // t.shape[2]  # values per channel
        if count < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(t.shape)}")
        sums = cpu.channel_sums(t, t, _channels(torch.zeros(t.shape[2], dtype=torch.float64), t[0]), spec)
        mean = sums[0] / count
        var = (sums[1] / count - mean * mean).clamp_(min=0)
        if self.factor is not None:
            self.running_mean.mul_(1 - self.factor).add_(mean.to(self.running_mean.dtype), alpha=self.factor)
            unbiased = (var * count / (count - 1)).to(self.running_var.dtype)
            self.running_var.mul_(1 - self.factor).add_(unbiased, alpha=self.factor)
        return mean, (var + self.eps).rsqrt()


def _affine(mean: Tensor, invstd: Tensor, weight: Tensor | None, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(alpha, beta)`` with ``batch_norm(y) = alpha * y + beta`` per channel (float64)."""
    alpha = invstd if weight is None else invstd * weight.detach().double()
    beta = -mean * alpha if bias is None else bias.detach().double() - mean * alpha
    return alpha, beta


def _affine_of(t: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """``alpha * t + beta`` per channel of ``t[T, B, C, ...]``, in ``t``'s dtype."""
    return torch.addcmul(_channels(beta, t[0]).to(t.dtype), t, _channels(alpha, t[0]).to(t.dtype))


def _channels(values: Tensor, step: Tensor) -> Tensor:
    """A per-channel vector ``[C]`` shaped to broadcast over one step ``[B, C, ...]``."""
    return values.view(-1, *([1] * (step.dim() - 2)))


class _NormFire(torch.autograd.Function):
    """``spikes[T, B, C, ...] = neuron(batch_norm(y) + residual)`` with the compiled CPU kernel (module doc), the
    residual optionally through its own batch norm; returns ``(spikes, spike counts per step)``.

    Without a learnable neuron parameter the node keeps ``y`` (and the residual) alone and the backward
    recomputes the membrane from them; with one (the parameter gradients need every step's membrane) it
    keeps the membrane ``h`` and the spikes as the neuron's own node does, and the batch norms' sums take
    one pass over ``dL/dx`` and their input each.
    """

    @staticmethod
    def forward(ctx, y, weight, bias, residual, rweight, rbias, decay, input_scale, v_th, width, v_init, stats, spec):
        ctx.set_materialize_grads(False)
        y = dense(y)
        residual = like(residual, y) if residual is not None else None
        step = y[0]
        mean, invstd = stats[0].of(y, spec)
        alpha, beta = _affine(mean, invstd, weight, bias)
        ctx.rnorm = stats[1] is not None
        rmean = rinvstd = ralpha = rbeta = None
        if ctx.rnorm:
            rmean, rinvstd = stats[1].of(residual, spec)
            ralpha, rbeta = _affine(rmean, rinvstd, rweight, rbias)
        values = (decay, input_scale, v_th, width, v_init)
        ctx.learns = any(ctx.needs_input_grad[6:11])
        spikes, h, _, counts = cpu.cpu_forward(y, spec, decay, input_scale, v_th, v_init, ctx.learns,
                                               _fused(step, alpha, beta, mean, residual, ralpha, rbeta, rmean), False)
        kept = (h, spikes) if ctx.learns else (None, None)
        ctx.save_for_backward(y, residual, mean, invstd, alpha, beta, rmean, rinvstd, ralpha, rbeta, *kept,
                              *(v if isinstance(v, Tensor) else None for v in values))
        ctx.spec, ctx.values, ctx.count = spec, values, y.numel() // y.shape[2]
        ctx.dtypes = (weight.dtype if weight is not None else None, rweight.dtype if rweight is not None else None)
        ctx.mark_non_differentiable(counts)
        return spikes, counts

    @staticmethod
    def backward(ctx, grad_spikes, grad_counts):
        if grad_spikes is None:
            return (None,) * 13
        y, residual, mean, invstd, alpha, beta, rmean, rinvstd, ralpha, rbeta, h, s, *saved = ctx.saved_tensors
        values = tuple(t if isinstance(v, Tensor) else v for t, v in zip(saved, ctx.values))
        decay, input_scale, v_th, width, v_init = values
        step = y[0]
        neuron_grads = (None,) * 5
        if ctx.learns:
            x = None
            if ctx.needs_input_grad[7]:  # the input scale's gradient needs the input currents
                x = _affine_of(y, alpha, beta)
                if residual is not None:
                    x = x.add_(_affine_of(residual, ralpha, rbeta) if ctx.rnorm else residual)
            grad_spikes = grad_spikes.to(h.dtype)  # bfloat16 spikes' gradient: once, for the loop and the sums
            grad_h = cpu.cpu_bptt(grad_spikes, None, h, s, ctx.spec, decay, v_th, width)
            grads = input_and_parameter_grads((True, *ctx.needs_input_grad[6:11]), grad_h, grad_spikes, None, h, s, x,
                                              ctx.spec, values)
            # dL/dx in y's dtype, as a batch norm run apart receives it from the neuron
            grad_x, neuron_grads = grads[0].to(y.dtype), tuple(grads[1:6])
            sums = cpu.channel_sums(grad_x, y, _channels(mean, step), ctx.spec)
            if ctx.rnorm:
                sums = torch.cat([sums, cpu.channel_sums(grad_x, residual, _channels(rmean, step), ctx.spec)[1:]])
        else:
            norm = _fused(step, alpha, beta, mean, residual, ralpha, rbeta, rmean)
            grad_x, sums = cpu.cpu_norm_bptt(grad_spikes, None, y, ctx.spec,
                                             (decay, input_scale, v_th, v_init, width), norm)
        need_y, need_weight, need_bias, need_residual, need_rweight, need_rbias = ctx.needs_input_grad[:6]
        grad_r = grad_rweight = grad_rbias = None
        if ctx.rnorm:
            grad_rweight = (sums[2] * rinvstd).to(ctx.dtypes[1]) if need_rweight else None
            grad_rbias = sums[0].to(ctx.dtypes[1]) if need_rbias else None
            if need_residual:
                grad_r = _norm_input_grad(grad_x, residual, ralpha, rmean, rinvstd, sums[0], sums[2], ctx,
                                          host.empty_like(grad_x))
        elif need_residual:
            grad_r = grad_x
        grad_y = None
        if need_y:  # in place unless grad_x is the residual's gradient
            out = host.empty_like(grad_x) if grad_r is grad_x else grad_x
            grad_y = _norm_input_grad(grad_x, y, alpha, mean, invstd, sums[0], sums[1], ctx, out)
        grad_weight = (sums[1] * invstd).to(ctx.dtypes[0]) if need_weight else None
        grad_bias = sums[0].to(ctx.dtypes[0]) if need_bias else None
        return (grad_y, grad_weight, grad_bias, grad_r, grad_rweight, grad_rbias, *neuron_grads, None, None)


def _fused(step, alpha, beta, mean, residual, ralpha, rbeta, rmean):
    """The kernel's description of the normalisations (per-channel vectors shaped for ``step``)."""
    rnorm = tuple(_channels(v, step) for v in (ralpha, rbeta, rmean)) if ralpha is not None else None
    return cpu.fused_norm(_channels(alpha, step), _channels(beta, step), _channels(mean, step), residual, step, rnorm)


def _norm_input_grad(grad_x, t, alpha, mean, invstd, total, centred, ctx, out):
    """A batch norm's input gradient ``alpha (g - total/count - (t - mean) invstd^2 centred/count)`` for its
    output gradient ``grad_x`` and input ``t``, into ``out``."""
    step = t[0]
    m1 = total / ctx.count
    m2 = invstd * invstd * centred / ctx.count
    return cpu.norm_input_grad(grad_x, t, [_channels(c, step) for c in (alpha, m1, mean, m2)], ctx.spec, out)
