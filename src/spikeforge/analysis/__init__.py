"""Analysis: firing rates, operation counts and an energy estimate, as tables, JSON, CSV and plots.

::

    from spikeforge.analysis import FiringRateMonitor, energy_report, format_table, save_report

    with torch.no_grad(), FiringRateMonitor(snn) as monitor:   # per neuron layer and per step, no extra pass
        for images, _ in loader:
            snn(images)
    monitor.rates()

    report = energy_report(snn, loader, max_samples=512)   # one evaluation pass, counting as it goes
    print(format_table(report))
    save_report(report, "runs/energy")               # energy.json, energy.csv, energy.png

The counting conventions are in :mod:`spikeforge.analysis.ops`, the energy
model in :mod:`spikeforge.analysis.energy`. ``spikeforge energy --checkpoint
PATH`` does the same for a training checkpoint.
"""

from .energy import EnergyModel, EnergyReport, energy_report
from .ops import LayerOps, OperationCounter, OperationCounts
from .rates import FiringRateMonitor, NeuronRate
from .report import format_table, plot_energy, save_report, write_csv, write_json

__all__ = [
    "FiringRateMonitor",
    "NeuronRate",
    "OperationCounter",
    "OperationCounts",
    "LayerOps",
    "EnergyModel",
    "EnergyReport",
    "energy_report",
    "format_table",
    "write_json",
    "write_csv",
    "plot_energy",
    "save_report",
]
