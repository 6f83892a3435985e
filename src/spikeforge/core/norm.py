"""Batch norm statistics over time: folded (time and batch together) or per step.

Inside a :class:`~spikeforge.SpikingNetwork` a batch norm sees ``[T*B, C, ...]``
(time-major rows). A plain ``nn.BatchNorm*d`` there normalises, in training, with
statistics over time and batch together (*folded*, as tdBN and TET code do). A
per-step batch norm normalises each step's rows ``[B, C, ...]`` with that step's
batch statistics and updates the running statistics once per step, in step order:
exactly ``T`` calls of the plain layer, one per step (the official SpikeDHS code
runs its network step by step). In eval mode both use the running statistics and
agree. Outside a SpikingNetwork (``timesteps`` unset) the input is one step and
both layers are the plain one.

Per-step layers subclass the plain ones (``isinstance(m, nn.BatchNorm2d)`` holds), so
weight-decay rules, BN folding and export treat them alike; their state dicts are
the same, so checkpoints load either way. :func:`set_bn_stats` switches a whole
model; :func:`convert_sync_batchnorm` synchronises statistics across processes,
per step for per-step layers.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .temporal import TimeAware

__all__ = [
    "BN_STATS",
    "PerStepBatchNorm",
    "PerStepBatchNorm1d",
    "PerStepBatchNorm2d",
    "PerStepBatchNorm3d",
    "PerStepSyncBatchNorm",
    "set_bn_stats",
    "convert_sync_batchnorm",
]

#: Values of ``bn_stats``: statistics over time and batch together, or over each step's batch.
BN_STATS = ("folded", "per_step")


class PerStepBatchNorm(TimeAware):
    """Mixin over a batch norm class: ``[T*B, C, ...] -> [T*B, C, ...]``, where step ``t``'s rows
    ``t*B .. (t+1)*B - 1`` go through one call of the plain layer (batch statistics of that step alone,
    one running-statistics update per step, in step order)."""

    def forward(self, x: Tensor) -> Tensor:
        steps, plain = self.timesteps, super().forward
        batch_stats = self.training or self.running_mean is None  # as nn.BatchNorm decides
        if steps is None or steps == 1 or not batch_stats:
            return plain(x)
        if x.shape[0] % steps:
            raise ValueError(f"{type(self).__name__}: folded input [T*B, ...] of shape {tuple(x.shape)} has "
                             f"{x.shape[0]} rows, not a multiple of T={steps}")
        return torch.cat([plain(step) for step in x.chunk(steps)])


class PerStepBatchNorm1d(PerStepBatchNorm, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with per-step statistics: ``[T*B, C]`` or ``[T*B, C, L]``."""


class PerStepBatchNorm2d(PerStepBatchNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with per-step statistics: ``[T*B, C, H, W]``."""


class PerStepBatchNorm3d(PerStepBatchNorm, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` with per-step statistics: ``[T*B, C, D, H, W]``."""


class PerStepSyncBatchNorm(PerStepBatchNorm, nn.SyncBatchNorm):
    """``nn.SyncBatchNorm`` with per-step statistics: each step's statistics are synchronised across
    processes (one collective per step; every process must run the same ``T``)."""


_PER_STEP: dict[type, type] = {nn.BatchNorm1d: PerStepBatchNorm1d, nn.BatchNorm2d: PerStepBatchNorm2d,
                               nn.BatchNorm3d: PerStepBatchNorm3d, nn.SyncBatchNorm: PerStepSyncBatchNorm}
_FOLDED: dict[type, type] = {per_step: folded for folded, per_step in _PER_STEP.items()}


def _rebuilt(bn: _BatchNorm, cls: type) -> _BatchNorm:
    """A ``cls`` batch norm sharing ``bn``'s parameters, buffers, mode and process group (nothing is copied)."""
    new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    new.weight, new.bias = bn.weight, bn.bias
    new.running_mean, new.running_var = bn.running_mean, bn.running_var
    new.num_batches_tracked = bn.num_batches_tracked
    if hasattr(bn, "process_group"):
        new.process_group = bn.process_group
    return new.train(bn.training)


def _replaced(module: nn.Module, convert: Callable[[nn.Module, str], nn.Module | None], name: str = "") -> nn.Module:
    """``module`` with every submodule ``m`` (named ``name``) for which ``convert(m, name)`` is a module
    replaced by it, outermost first; in place, except for the root itself."""
    new = convert(module, name)
    if new is not None:
        return new
    for child_name, child in module.named_children():
        module.add_module(child_name, _replaced(child, convert, f"{name}.{child_name}" if name else child_name))
    return module


def set_bn_stats(model: nn.Module, stats: str) -> nn.Module:
    """Give every batch norm of ``model`` folded or per-step statistics (module doc); returns ``model``.

    ``stats``: ``"folded"`` or ``"per_step"``. Modules are replaced in place by ones of the other
    kind holding the same parameters and buffers (a root batch norm is returned, not replaced);
    build optimisers after this call. ValueError for a batch norm class with no per-step form.
    """
    if stats not in BN_STATS:
        raise ValueError(f"bn_stats must be one of {', '.join(BN_STATS)}, got {stats!r}")
    table = _PER_STEP if stats == "per_step" else _FOLDED

    def convert(m: nn.Module, name: str) -> nn.Module | None:
        if type(m) in table:
            return _rebuilt(m, table[type(m)])
        if stats == "per_step" and isinstance(m, _BatchNorm) and not isinstance(m, PerStepBatchNorm):
            raise ValueError(f"bn_stats='per_step': batch norm {name or '<model>'} ({type(m).__name__}) has no "
                             "per-step form (supported: BatchNorm1d/2d/3d, SyncBatchNorm)")
        return None

    return _replaced(model, convert)


def convert_sync_batchnorm(model: nn.Module, process_group=None) -> nn.Module:
    """``nn.SyncBatchNorm.convert_sync_batchnorm`` that keeps per-step statistics: a per-step batch norm
    becomes a :class:`PerStepSyncBatchNorm`, any other batch norm an ``nn.SyncBatchNorm``."""

    def convert(m: nn.Module, name: str) -> nn.Module | None:
        if not isinstance(m, _BatchNorm) or isinstance(m, nn.SyncBatchNorm):
            return None
        sync = _rebuilt(m, PerStepSyncBatchNorm if isinstance(m, PerStepBatchNorm) else nn.SyncBatchNorm)
        sync.process_group = process_group
        return sync

    return _replaced(model, convert)
