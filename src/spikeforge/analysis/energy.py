"""Energy estimate of a spiking network and of the same network as an ANN.

Energy is operations times a cost per operation: ``E_SNN = snn_macs * e_mac +
snn_sops * e_ac`` (the analog-input layers multiply, everything else only
accumulates) against ``E_ANN = ann_macs * e_mac + ann_acs * e_ac``. The
defaults are the 45 nm CMOS figures most SNN papers use (Horowitz, ISSCC
2014): 4.6 pJ for a 32-bit float multiply-accumulate (3.7 pJ multiply + 0.9 pJ
add) and 0.9 pJ for a 32-bit float add. Memory traffic and the neurons' own
membrane updates are not included, as in those papers.

::

    report = energy_report(snn, test_loader, max_samples=512)
    print(report.totals()["ann_over_snn"])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable

import torch
from torch import Tensor, nn

from ..core.time import SpikingNetwork
from ..runtime.progress import Progress
from .ops import LayerOps, OperationCounter, OperationCounts
from .rates import FiringRateMonitor, NeuronRate

__all__ = ["EnergyModel", "EnergyReport", "energy_report"]


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation in picojoules: ``e_mac`` per multiply-accumulate, ``e_ac`` per accumulate."""

    e_mac: float = 4.6
    e_ac: float = 0.9

    def __post_init__(self):
        for name in ("e_mac", "e_ac"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite energy >= 0 in pJ, got {value!r}")

    def ann(self, layer: LayerOps) -> float:
        """Energy (pJ) of ``layer`` in the ANN-equivalent, per sample."""
        return layer.ann_macs * self.e_mac + layer.ann_acs * self.e_ac

    def snn(self, layer: LayerOps) -> float:
        """Energy (pJ) of ``layer`` in the SNN, per sample (all steps)."""
        return layer.snn_macs * self.e_mac + layer.snn_sops * self.e_ac


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


@dataclass(frozen=True)
class EnergyReport:
    """Operation counts, firing rates and energy of one network over an evaluation set (per sample)."""

    ops: OperationCounts
    rates: list[NeuronRate]
    energy: EnergyModel

    def totals(self) -> dict:
        """Whole-network sums (operations, energies in pJ) and the ANN/SNN energy ratio.

        ``*_static_once`` entries count the analog-input layers once per sample
        instead of at every step (possible for direct encoding, where their
        input is the same at each step); None for other inputs.
        """
        ops = self.ops
        totals = {key: ops.total(key) for key in ("ann_macs", "ann_acs", "snn_macs", "snn_sops")}
        ann = totals["ann_energy_pj"] = sum(self.energy.ann(layer) for layer in ops.layers)
        snn = totals["snn_energy_pj"] = sum(self.energy.snn(layer) for layer in ops.layers)
        totals["ann_over_snn"] = _ratio(ann, snn)
        static = ops.static_input
        macs_once = totals["snn_macs"] / ops.timesteps if static else None
        snn_once = snn - (totals["snn_macs"] - macs_once) * self.energy.e_mac if static else None
        totals["snn_macs_static_once"] = macs_once
        totals["snn_energy_static_once_pj"] = snn_once
        totals["ann_over_snn_static_once"] = _ratio(ann, snn_once) if static else None
        steps = sum(rate.neuron_steps for rate in self.rates)
        totals["mean_firing_rate"] = (
            sum(rate.rate * rate.neuron_steps for rate in self.rates) / steps if steps else None
        )
        return totals

    def to_dict(self) -> dict:
        """Everything as plain JSON-ready values; per-layer energies included."""
        layers = [
            asdict(layer) | {"ann_energy_pj": self.energy.ann(layer), "snn_energy_pj": self.energy.snn(layer)}
            for layer in self.ops.layers
        ]
        return {
            "samples": self.ops.samples,
            "timesteps": self.ops.timesteps,
            "static_input": self.ops.static_input,
            "energy_model_pj": asdict(self.energy),
            "layers": layers,
            "neurons": [asdict(rate) for rate in self.rates],
            "totals": self.totals(),
            "uncounted": self.ops.uncounted,
        }


def _inputs_of(batch) -> Tensor:
    """The input tensor of a batch: the batch itself, or the first item of a tuple/list ``(inputs, labels, ...)``."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(x, Tensor):
        raise TypeError(f"batches must yield tensors or (inputs, ...) tuples, got {type(x).__name__}")
    return x


def _batch_dim(model: nn.Module, x: Tensor) -> int:
    """1 for a time-first sequence ``[T, B, ...]`` fed to a SpikingNetwork, else 0."""
    return 1 if isinstance(model, SpikingNetwork) and x.dim() == model.static_ndim + 1 else 0


@torch.no_grad()
def energy_report(
    model: nn.Module,
    batches: Iterable,
    energy: EnergyModel | None = None,
    *,
    max_samples: int | None = None,
    input_is_spikes: bool | None = None,
    progress: bool = True,
) -> EnergyReport:
    """Run ``model`` in evaluation mode over ``batches`` once, counting operations and firing rates.

    Args:
        model: a spiking network returning ``[T, B, ...]`` (e.g. from
            :func:`spikeforge.models.create` or :func:`spikeforge.convert.to_snn`),
            or an ANN (its SNN columns then equal its ANN columns).
        batches: iterable of input tensors or ``(inputs, labels)`` pairs (a DataLoader);
            inputs are moved to the model's device.
        energy: per-operation energies (default: :class:`EnergyModel`, 4.6 / 0.9 pJ).
        max_samples: stop after this many samples (the last batch is cut).
        input_is_spikes: see :class:`~spikeforge.analysis.OperationCounter`.
        progress: report on stderr (:class:`~spikeforge.runtime.progress.Progress`: a live bar on a
            terminal, a plain line every minute, and each tenth of ``batches`` when it has a length, in a log).

    Returns:
        :class:`EnergyReport` of per-sample counts averaged over the samples seen.
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    energy = energy or EnergyModel()
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with FiringRateMonitor(model) as monitor, OperationCounter(model, input_is_spikes) as counter:
            for batch in Progress(batches, "energy", enabled=progress, per_step=getattr(batches, "batch_size", None)):
                x = _inputs_of(batch)
                if max_samples is not None:
                    dim = _batch_dim(model, x)
                    x = x.narrow(dim, 0, min(x.shape[dim], max_samples - seen))
                    seen += x.shape[dim]
                model(x.to(device))
                if max_samples is not None and seen >= max_samples:
                    break
    finally:
        model.train(was_training)
    return EnergyReport(counter.result(), monitor.rates(), energy)
