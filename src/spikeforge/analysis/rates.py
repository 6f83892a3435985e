"""Firing rates per neuron layer and per time step, gathered while a model evaluates.

::

    with FiringRateMonitor(model) as monitor:
        for images, _ in loader:
            model(images)
    for layer in monitor.rates():
        print(layer.name, layer.rate, layer.rate_per_step)

Every :class:`~spikeforge.SpikingNeuron` already counts its spikes per step
while it runs (``spike_counts``, from the kernel: no second forward pass).
The monitor only collects those counts: its hooks exist inside the ``with``
block and are removed on exit, so a model that is not monitored pays nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.neuron import SpikingNeuron

__all__ = ["NeuronRate", "FiringRateMonitor"]


@dataclass(frozen=True)
class NeuronRate:
    """Firing rate of one neuron layer over the monitored calls.

    Attributes:
        name: the layer's path in the model (``model.get_submodule(name)``).
        rate_per_step: ``rate_per_step[t]`` = mean spikes per neuron at step ``t`` (0-based).
        rate: mean spikes per neuron per step over all steps.
        neuron_steps: neurons times steps seen (over all samples), the weight of ``rate``.
    """

    name: str
    rate_per_step: list[float]
    rate: float
    neuron_steps: int


class FiringRateMonitor:
    """Context manager collecting per-step spike counts of every neuron layer of ``model``.

    Steps are numbered within each forward call; calls with different ``T`` are
    averaged step by step (step ``t`` over the calls that have it). A chunked
    simulation (several calls carrying membranes) therefore restarts the step
    index at each chunk: monitor it with one call of ``T`` steps instead.
    """

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.layers = {name: m for name, m in model.named_modules() if isinstance(m, SpikingNeuron)}
        # per layer: one (spikes per step [T], neurons per step) pair per call, reduced by rates()
        self._calls: dict[str, list[tuple[Tensor, int]]] = {name: [] for name in self.layers}
        self._handles: list = []
        self._record_rate: dict[str, bool] = {}

    def __enter__(self) -> "FiringRateMonitor":
        for name, neuron in self.layers.items():
            self._record_rate[name] = neuron.record_rate
            neuron.record_rate = True
            self._handles.append(neuron.register_forward_hook(self._collector(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for name, neuron in self.layers.items():
            neuron.record_rate = self._record_rate[name]

    def _collector(self, name: str):
        calls = self._calls[name]

        def hook(neuron: SpikingNeuron, inputs, output) -> None:
            # no tensor arithmetic here: the counts are kept and reduced later (no device sync per call)
            calls.append((neuron.spike_counts, neuron.neurons_per_step))

        return hook

    def rates(self) -> list[NeuronRate]:
        """Per neuron layer (in registration order), the rates over every call so far.

        Layers that never ran are left out.
        """
        result = []
        for name, calls in self._calls.items():
            if not calls:
                continue
            steps = max(len(counts) for counts, _ in calls)
            spikes = torch.zeros(steps, dtype=torch.float64)
            neurons = torch.zeros(steps, dtype=torch.float64)
            for counts, per_step in calls:
                spikes[: len(counts)] += counts.detach().cpu().double()
                neurons[: len(counts)] += per_step
            per_step = (spikes / neurons).tolist()
            result.append(NeuronRate(name, per_step, float(spikes.sum() / neurons.sum()), int(neurons.sum())))
        return result

    def reset(self) -> None:
        """Forget every call recorded so far."""
        for calls in self._calls.values():
            calls.clear()
