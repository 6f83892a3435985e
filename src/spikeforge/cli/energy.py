"""``spikeforge energy``: operation counts, firing rates and energy of a trained checkpoint.

::

    spikeforge energy --checkpoint runs/cpu-.../best.pt [--data-root DIR] [--samples 256] \\
        [--timesteps T] [--out DIR] [--e-mac 4.6] [--e-ac 0.9]

A spiking checkpoint is analysed as trained (``T`` from the recipe unless ``--timesteps`` is given); a
network that runs its time steps itself before an analog read-out (the stereo network) is analysed
through its ``spiking`` part. A QCFS checkpoint (``model.neuron: qcfs``) is first converted into an IF
SNN at the required ``--timesteps``. Prints the per-layer table and writes ``energy.json``,
``energy.csv`` and ``energy.png`` (with matplotlib) to ``--out`` (default: ``<checkpoint folder>/energy``).
"""

from __future__ import annotations

import argparse

from torch.utils.data import DataLoader

from ..analysis.energy import EnergyModel, energy_report
from ..analysis.report import format_table, save_report
from ..core.time import SpikingNetwork, neurons
from ..runtime.devices import resolve_device
from ..runtime.tasks import build_task
from . import COMMANDS
from .common import (
    add_checkpoint_arguments,
    build_test_set,
    first_samples,
    is_qcfs,
    load_network,
    output_folder,
    positive_int,
)

__all__ = ["add_parser", "run"]


class TaskInputs:
    """The model inputs of a loader's batches (as the task splits them), with the loader's length so
    that progress reports can count them."""

    def __init__(self, loader, task, device):
        self.loader, self.task, self.device = loader, task, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return (self.task.split(batch, self.device)[0] for batch in self.loader)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "energy",
        help=COMMANDS["energy"],
        description="Count per-layer MACs (ANN) and synaptic operations (SNN) on test images, estimate the "
        "energy of both, and report firing rates per neuron layer.",
    )
    add_checkpoint_arguments(p, "a training checkpoint",
                             timesteps="time steps (default: the recipe's; required for a QCFS checkpoint)",
                             test_set=True, out="energy", batch_size=64)
    p.add_argument("--samples", type=positive_int, default=256, metavar="N",
                   help="test images to run (default: %(default)s)")
    p.add_argument("--e-mac", type=float, default=4.6, help="energy per MAC in pJ (default: %(default)s)")
    p.add_argument("--e-ac", type=float, default=0.9, help="energy per accumulate in pJ (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``spikeforge energy``; returns the exit code (raises ValueError & co. on bad input)."""
    energy = EnergyModel(args.e_mac, args.e_ac)
    device = resolve_device(args.device)
    model, config, steps = load_network(args.checkpoint, args.timesteps)
    qcfs = is_qcfs(config)
    if qcfs and args.timesteps is None:
        raise ValueError("a QCFS checkpoint is analysed after conversion: give --timesteps T (e.g. 4)")
    model.to(device)
    test_set = build_test_set(config, args.data_root)
    task = build_task(config, model, test_set)
    loader = DataLoader(first_samples(test_set, args.samples), batch_size=args.batch_size)
    inputs = TaskInputs(loader, task, device)
    spiking = getattr(model, "spiking", None)
    report = energy_report(spiking if isinstance(spiking, SpikingNetwork) else model, inputs, energy)

    kind = "QCFS converted to IF" if qcfs else config.model.neuron
    print(f"{config.model.name} ({kind}, T={steps}) on {config.data.name}")
    if not neurons(model):
        print("note: this network has no spiking neurons; its SNN columns are those of the ANN itself")
    print(format_table(report))
    meta = {"checkpoint": str(args.checkpoint), "model": config.model.name, "neuron": config.model.neuron,
            "dataset": config.data.name}
    paths = save_report(report, output_folder(args, "energy"), meta)
    print("wrote " + ", ".join(str(p) for p in paths)
          + ("" if len(paths) == 3 else " (no plot: matplotlib not installed)"))
    return 0
