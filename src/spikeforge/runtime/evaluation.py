"""The evaluation loop: a task's loss and metric sums over a model's outputs on a stream of batches."""

from __future__ import annotations

import torch
from torch import nn

from .devices import autocast

__all__ = ["evaluation_sums"]


def evaluation_sums(model: nn.Module, batches, device, task, use_amp: bool = False,
                    memory_format=lambda x: torch.preserve_format) -> torch.Tensor:
    """The task's sums (:mod:`~spikeforge.runtime.tasks`) of the evaluation loss and metrics over ``batches``."""
    total = None
    for batch in batches:
        inputs, targets = task.split(batch, device, memory_format)
        with autocast(device, use_amp):
            outputs = model(inputs)
        sums = task.sums(outputs, targets, task.eval_loss(outputs, targets))
        total = sums if total is None else total + sums
    if total is None:
        raise ValueError("evaluation got no batches (is the test set empty?)")
    return total
