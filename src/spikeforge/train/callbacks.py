"""Trainer callbacks: what adds to the training epochs beyond steps and evaluation.

- :class:`TimeInheritance`: TIT (Deng et al., ICLR 2022): each stage runs at its own ``T``, the
  weights carried on from the stage before;
- :class:`WindowFractions`: LSG's gradient-blocking measure (Lian et al., IJCAI 2023) per spiking layer
  after every epoch (``log_window_fraction``);
- callbacks other rooms provide for a recipe section, registered with :func:`register_section_callback`
  (the ``dgs`` section: :mod:`spikeforge.search.dgs`).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..core.neuron import SpikingNeuron
from ..runtime.config import StageConfig
from ..runtime.fit import Callback, FitLoop
from ..runtime.loaders import epoch_batches
from .config import TrainConfig

__all__ = ["TimeInheritance", "WindowFractions", "register_section_callback", "callbacks_for"]


class TimeInheritance(Callback):
    """Sets the model's ``T`` to the stage's at every epoch (the model keeps its weights across stages)."""

    def setup_epoch(self, loop: FitLoop, epoch: int, stage: StageConfig) -> None:
        if hasattr(loop.model, "timesteps"):
            loop.model.timesteps = stage.timesteps


class WindowFractions(Callback):
    """``window_fraction`` per spiking layer in every epoch record: the fraction of membrane values inside
    the surrogate's non-zero window, on the first ``samples`` training samples (with the training set's
    own augmentation, if it has any) in evaluation mode."""

    def __init__(self, samples: int = 256):
        self.samples = samples

    @torch.no_grad()
    def on_epoch_end(self, loop: FitLoop, epoch: int) -> dict:
        neurons = {name: m for name, m in loop.model.named_modules() if isinstance(m, SpikingNeuron)}
        first = next(iter(epoch_batches(loop.train_set, self.samples, train=False, seed=0, epoch=0,
                                        device=loop.device)))
        inputs, _ = loop.task.split(first, loop.device, loop.format_for)
        loop.model.eval()
        for neuron in neurons.values():
            neuron.record_window = True
        try:
            loop.model(inputs)
        finally:
            for neuron in neurons.values():
                neuron.record_window = False
        return {"window_fraction": {name: neuron.window_fraction for name, neuron in neurons.items()}}


#: recipe section -> callback factory ``(trainer) -> Callback``; and the module that registers each.
_SECTION_CALLBACKS: dict[str, Callable[..., Callback]] = {}
_SECTION_HOMES = {"dgs": "spikeforge.search"}


def register_section_callback(section: str, factory: Callable[..., Callback]) -> None:
    """Run ``factory(trainer)``'s callback in every training whose recipe section ``section`` is enabled."""
    _SECTION_CALLBACKS[section] = factory


def callbacks_for(config: TrainConfig) -> list[Callable[..., Callback]]:
    """The TIT stages, the window fractions when logged, and the factories of the recipe's enabled sections
    (a one-line error when the room providing an enabled section was not imported)."""
    factories: list[Callable[..., Callback]] = [lambda trainer: TimeInheritance()]
    if config.log_window_fraction:
        factories.append(lambda trainer: WindowFractions())
    for section in ("dgs",):
        if getattr(config, section).enabled:
            if section not in _SECTION_CALLBACKS:
                raise ValueError(f"{section}.enabled needs the {section} callback: import "
                                 f"{_SECTION_HOMES[section]} first, it registers it")
            factories.append(_SECTION_CALLBACKS[section])
    return factories
