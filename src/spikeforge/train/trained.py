"""Trained networks back from their checkpoints: the network of a training recipe, a checkpoint's
network with its recipe, and a checkpoint's test metrics evaluated as the trainer evaluates them."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import models
from ..runtime.checkpoint import load_checkpoint
from ..runtime.config import from_dict
from ..runtime.devices import input_format, place_model, resolve_device
from ..runtime.evaluation import evaluation_sums
from ..runtime.loaders import epoch_batches, evaluation_set
from ..runtime.tasks import build_task
from .config import TrainConfig

__all__ = ["build_model", "trained_timesteps", "load_trained", "PRECISIONS", "evaluate_checkpoint"]


def build_model(config: TrainConfig, num_classes: int, timesteps: int) -> nn.Module:
    kwargs = dict(config.model.kwargs)
    kwargs.setdefault("num_classes", num_classes)
    return models.create(
        config.model.name,
        neuron=config.model.neuron,
        timesteps=timesteps,
        neuron_kwargs=config.model.neuron_kwargs,
        **kwargs,
    )



def trained_timesteps(config: TrainConfig, timesteps: int | None = None) -> int:
    """``timesteps`` (an int >= 1, else a one-line ValueError), or the ``T`` of the recipe's last stage if None."""
    if timesteps is None:
        return config.stage_list()[-1].timesteps
    if not isinstance(timesteps, int) or timesteps < 1:
        raise ValueError(f"timesteps must be an integer >= 1, got {timesteps!r}")
    return timesteps



def load_trained(path: str | Path, timesteps: int | None = None) -> tuple[nn.Module, TrainConfig, dict]:
    """A training checkpoint's network (CPU, eval mode), its recipe and the raw checkpoint.

    ``timesteps`` overrides the ``T`` of the recipe's last stage. A file that is
    not a spikeforge training checkpoint gives a one-line ValueError naming it.
    """
    state = load_checkpoint(path)
    for key in ("model", "config", "num_classes"):
        if key not in state:
            raise ValueError(f"{path}: not a spikeforge training checkpoint (no {key!r} entry)")
    config = from_dict(TrainConfig, state["config"])
    model = build_model(config, int(state["num_classes"]), trained_timesteps(config, timesteps))
    model.load_state_dict(state["model"])
    return model.eval(), config, state



#: ``precision`` of :func:`evaluate_checkpoint`: as trained (the recipe's ``amp``), float32, or mixed.
PRECISIONS = ("trained", "float32", "mixed")



def evaluate_checkpoint(path: str | Path, data_root: str | None = None, timesteps: int | None = None,
                        device: str = "auto", precision: str = "trained") -> dict:
    """Load a checkpoint with its recipe and report the task's test metrics (``test_<name>`` keys).

    The batches, memory format and weight layout are the trainer's, and ``precision="trained"``
    evaluates with the mixed precision the run trained with (``amp``), so the result equals the
    trainer's evaluation of the same weights. ``"float32"`` runs without autocast, ``"mixed"`` with
    it (bfloat16 on a CPU that has it natively, float16 on CUDA). The result's ``precision`` says which.
    The test set is :func:`evaluation_set` (never downloaded).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    model, config, _ = load_trained(path, timesteps)
    config.device = device
    steps = trained_timesteps(config, timesteps)
    test_set = evaluation_set(config.data, data_root)
    dev = resolve_device(device)
    model = place_model(model, dev, config.channels_last).eval()
    task = build_task(config, model, test_set)
    use_amp = config.amp if precision == "trained" else precision == "mixed"
    d = config.data
    batches = epoch_batches(test_set, d.eval_batch_size or d.batch_size, train=False, seed=config.seed, epoch=0,
                            device=dev, workers=d.workers)
    with torch.no_grad():
        metrics = task.metrics(evaluation_sums(model, batches, dev, task, use_amp, input_format(config.channels_last)))
    return {"checkpoint": str(path), "timesteps": steps, "metric": task.metric, "samples": len(test_set),
            "precision": "mixed" if use_amp else "float32", **{f"test_{k}": v for k, v in metrics.items()}}
