"""What a run optimises and measures: the task the fit loop is parameterised by, and the registry of tasks.

A task turns a collated batch into ``(inputs, targets)`` on the device, gives the training
loss and the evaluation loss of a model output, and per-batch *sums* (a float64 tensor,
float32 on MPS, that adds over batches and ranks) from which an epoch's metrics follow;
``metric`` names the metric that selects the best checkpoint and ``higher_is_better`` its
direction. The rooms that define tasks register them by the name a recipe's ``task`` gives:
``classification`` (:mod:`spikeforge.train.tasks`), ``stereo`` (:mod:`spikeforge.stereo.task`).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import torch
from torch import Tensor

__all__ = ["Task", "register_task", "task_class", "build_task", "list_tasks"]


class Task(Protocol):
    metric: str
    higher_is_better: bool

    def split(self, batch, device: torch.device, memory_format=...) -> tuple[Any, Any]: ...
    def loss(self, outputs, targets) -> Tensor: ...
    def eval_loss(self, outputs, targets) -> Tensor: ...
    def sums(self, outputs, targets, loss: Tensor) -> Tensor: ...
    def metrics(self, sums: Tensor) -> dict[str, float]: ...
    def describe(self, metrics: dict) -> str: ...


#: name -> (task class, builder ``(config, model, dataset) -> task``), and the module that registers it.
_TASKS: dict[str, tuple[type, Callable[..., Task]]] = {}
_HOMES = {"classification": "spikeforge.train", "stereo": "spikeforge.stereo"}


def register_task(name: str, cls: type, builder: Callable[..., Task]) -> None:
    """Make ``task: name`` available to recipes: ``builder(config, model, dataset)`` builds the task of a run
    (``config``: a training or search config; ``dataset``: one of the run's sets); ``cls`` carries the
    task's ``metric`` and ``higher_is_better`` (what reading a finished run back needs)."""
    _TASKS[name] = (cls, builder)


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def _entry(name: str) -> tuple[type, Callable[..., Task]]:
    if name not in _TASKS:
        home = _HOMES.get(name)
        hint = f": import {home} first, it registers it" if home else f"; registered: {', '.join(list_tasks())}"
        raise ValueError(f"unknown task {name!r}{hint}")
    return _TASKS[name]


def task_class(name: str) -> type:
    """The class of task ``name`` (its ``metric`` and ``higher_is_better``)."""
    return _entry(name)[0]


def build_task(config, model, dataset) -> Task:
    """The task of ``config.task`` for ``model`` on one of the run's sets ``dataset``."""
    return _entry(config.task)[1](config, model, dataset)
