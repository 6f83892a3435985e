"""Batch norm and spiking neuron in one autograd node: ``neuron(bn(y) + residual)``.

A convolution's output ``y`` goes through a batch norm and then a neuron in every layer of a deep SNN.
Run apart, the batch norm writes its output ``x`` (which the neuron then reads) and each layer keeps
two full-size tensors for backward: ``y`` (the batch norm's) and ``x`` (the neuron's). Here the
compiled CPU kernel (:mod:`spikeforge.core.kernels.cpu`) reads ``y`` and applies the normalisation
on the fly (``x = alpha * y + beta (+ residual)``, per-channel ``alpha = weight / sqrt(var + eps)``,
``beta = bias - mean * alpha``), so ``x`` is never stored: the node keeps ``y`` (and the residual),
the backward recomputes each block's membrane from them, and the same pass that writes
``dL/dx`` sums ``dL/dx`` and ``dL/dx * (y - mean)`` per channel; one more pass writes ``dL/dy``.
Per layer and step that is one full-size tensor less kept for backward, and about 40% fewer bytes
moved than batch norm and neuron apart. A neuron with learnable parameters (PLIF, LSG) keeps its
membrane as its own node does (their gradients need it); the normalisation is still fused.

:func:`normalize_and_fire` takes this path when it applies and otherwise computes
``neuron(norm(y) + residual)`` with the modules as they are, so models call it unconditionally:

- a plain ``nn.BatchNorm1d/2d/3d`` in training mode (batch statistics over time and batch folded
  together; per-step and synchronised batch norms, and evaluation, take the plain path);
- a :class:`~spikeforge.core.neuron.SpikingNeuron` on backend ``auto`` or ``cpu`` that the compiled
  kernel supports for this input (CPU, float32/float64, bfloat16 when no neuron parameter is learnable),
  with no state scope and no rate window measurement;
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


def fusable(norm: nn.Module, neuron: nn.Module, y, residual=None) -> bool:
    """Whether :func:`normalize_and_fire` runs ``neuron(norm(y) + residual)`` as one fused node (module doc)."""
    if not _enabled or type(norm) not in _PLAIN_NORMS or not norm.training or not isinstance(neuron, SpikingNeuron):
        return False
    if type(y) is not Tensor or (residual is not None and (type(residual) is not Tensor or residual.shape != y.shape
                                                           or residual.dtype != y.dtype)):
        return False
    if neuron.backend not in ("auto", "cpu") or neuron._scope is not None or neuron.record_window:
        return False
    if _hooked(norm) or _hooked(neuron) or _global_hooks() or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if y.dim() < 2 or y.shape[1] != norm.num_features or y.numel() == 0:
        return False
    steps = neuron.timesteps or y.shape[0]
    return y.shape[0] % steps == 0 and cpu.supports(y.view(steps, -1, *y.shape[1:]), neuron.spec,
                                                    *_neuron_values(neuron))


def normalize_and_fire(norm: nn.Module, neuron: nn.Module, y: Tensor, residual: Tensor | None = None) -> Tensor:
    """``neuron(norm(y) + residual)`` (``residual`` optional, e.g. a residual block's shortcut), fused into one
    node where :func:`fusable` (module doc), else with the modules as they are. ``y``: the folded
    ``[T*B, C, ...]`` inside a :class:`~spikeforge.SpikingNetwork` (or ``[T, B, ...]``-first as the neuron
    takes it); returns the neuron's output, shaped like ``y``."""
    if not fusable(norm, neuron, y, residual):
        x = norm(y)
        return neuron(x if residual is None else x + residual)
    seq = neuron._sequence(y)  # [T, B, C, ...]
    res = residual.view(seq.shape) if residual is not None else None
    factor = _update_factor(norm)
    spikes, counts = _NormFire.apply(seq, norm.weight, norm.bias, res, *_neuron_values(neuron), norm.running_mean,
                                     norm.running_var, factor, norm.eps, neuron.spec)
    return neuron._emit(spikes, counts).view_as(y)


def _update_factor(norm: nn.Module) -> float | None:
    """The running statistics' update weight of this call, as ``nn.BatchNorm`` computes it (None: no
    running statistics); counts the batch in ``num_batches_tracked``."""
    if not norm.track_running_stats or norm.running_mean is None:
        return None
    norm.num_batches_tracked.add_(1)
    return 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum


def _channels(values: Tensor, step: Tensor) -> Tensor:
    """A per-channel vector ``[C]`` shaped to broadcast over one step ``[B, C, ...]``."""
    return values.view(-1, *([1] * (step.dim() - 2)))


class _NormFire(torch.autograd.Function):
    """``spikes[T, B, C, ...] = neuron(batch_norm(y) + residual)`` with the compiled CPU kernel (module doc);
    returns ``(spikes, spike counts per step)``.

    Without a learnable neuron parameter the node keeps ``y`` (and the residual) alone and the backward
    recomputes the membrane from them; with one (the parameter gradients need every step's membrane) it
    keeps the membrane ``h`` and the spikes as the neuron's own node does, and the batch norm's sums take
    one pass over ``dL/dx`` and ``y``.
    """

    @staticmethod
    def forward(ctx, y, weight, bias, residual, decay, input_scale, v_th, width, v_init, running_mean, running_var,
                factor, eps, spec):
        ctx.set_materialize_grads(False)
        y = dense(y)
        residual = like(residual, y) if residual is not None else None
        step = y[0]
        count = y.numel() // y.shape[2]  # values per channel
        if count < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(y.shape)}")
        sums = cpu.channel_sums(y, y, _channels(torch.zeros(y.shape[2], dtype=torch.float64), step), spec)
        mean = sums[0] / count
        var = (sums[1] / count - mean * mean).clamp_(min=0)
        if factor is not None:
            running_mean.mul_(1 - factor).add_(mean.to(running_mean.dtype), alpha=factor)
            running_var.mul_(1 - factor).add_((var * count / (count - 1)).to(running_var.dtype), alpha=factor)
        invstd = (var + eps).rsqrt()
        alpha = invstd if weight is None else invstd * weight.detach().double()
        beta = -mean * alpha if bias is None else bias.detach().double() - mean * alpha
        norm = cpu.fused_norm(_channels(alpha, step), _channels(beta, step), _channels(mean, step), residual, step)
        values = (decay, input_scale, v_th, width, v_init)
        ctx.learns = any(ctx.needs_input_grad[4:9])
        spikes, h, _, counts = cpu.cpu_forward(y, spec, decay, input_scale, v_th, v_init, ctx.learns, norm, False)
        kept = (h, spikes) if ctx.learns else (None, None)
        ctx.save_for_backward(y, residual, mean, invstd, alpha, beta, *kept,
                              *(v if isinstance(v, Tensor) else None for v in values))
        ctx.spec, ctx.values, ctx.count = spec, values, count
        ctx.parameter_dtype = weight.dtype if weight is not None else None
        ctx.mark_non_differentiable(counts)
        return spikes, counts

    @staticmethod
    def backward(ctx, grad_spikes, grad_counts):
        if grad_spikes is None:
            return (None,) * 14
        y, residual, mean, invstd, alpha, beta, h, s, *saved = ctx.saved_tensors
        values = tuple(t if isinstance(v, Tensor) else v for t, v in zip(saved, ctx.values))
        decay, input_scale, v_th, width, v_init = values
        step = y[0]
        norm = cpu.fused_norm(_channels(alpha, step), _channels(beta, step), _channels(mean, step), residual, step)
        neuron_grads = (None,) * 5
        if ctx.learns:
            x = None
            if ctx.needs_input_grad[5]:  # the input scale's gradient needs the input currents
                x = torch.addcmul(_channels(beta, step).to(y.dtype), y, _channels(alpha, step).to(y.dtype))
                x = x if residual is None else x.add_(residual)
            grad_h = cpu.cpu_bptt(grad_spikes, None, h, s, ctx.spec, decay, v_th, width)
            grads = input_and_parameter_grads((True, *ctx.needs_input_grad[4:9]), grad_h, grad_spikes, None, h, s, x,
                                              ctx.spec, values)
            grad_x, neuron_grads = grads[0], tuple(grads[1:6])
            sums = cpu.channel_sums(grad_x, y, _channels(mean, step), ctx.spec)
        else:
            grad_x, sums = cpu.cpu_norm_bptt(grad_spikes, None, y, ctx.spec,
                                             (decay, input_scale, v_th, v_init, width), norm)
        grad_bias, centred = sums[0], sums[1]
        need_y, need_weight, need_bias, need_residual = ctx.needs_input_grad[:4]
        grad_y = None
        if need_y:
            m1 = grad_bias / ctx.count
            m2 = invstd * invstd * centred / ctx.count
            out = host.empty_like(grad_x) if need_residual else grad_x  # grad_x is the residual's too
            coefficients = [_channels(c, step) for c in (alpha, m1, mean, m2)]
            grad_y = cpu.norm_input_grad(grad_x, y, coefficients, ctx.spec, out)
        grad_weight = (centred * invstd).to(ctx.parameter_dtype) if need_weight else None
        grad_bias = grad_bias.to(ctx.parameter_dtype) if need_bias else None
        return (grad_y, grad_weight, grad_bias, grad_x if need_residual else None, *neuron_grads) + (None,) * 5
