"""``spikeforge export``: write a trained checkpoint as a NIR graph for hardware and other simulators.

::

    spikeforge export --checkpoint runs/digits-.../best.pt --format nir digits.nir \\
        [--dt 1e-4] [--input-shape C,H,W] [--timesteps T]

A spiking checkpoint is exported as it is; a QCFS ANN checkpoint is first converted to its IF SNN (batch
norm folded). The input shape defaults to the recipe's data set (digits 1x16x16, CIFAR 3x32x32, ImageNet
3x224x224). Prints one line naming the file, the nodes and the input and output shapes. Needs the
``nir`` package (``pip install "spikeforge[nir]"``).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import torch

from ..data import dataset_info
from ..export import DEFAULT_DT, to_nir
from ..optional import require
from . import COMMANDS
from .common import add_checkpoint_arguments, load_network

__all__ = ["add_parser", "run", "parse_shape"]

#: Image side of the data sets whose size the recipe does not state.
_SIDES = {"digits": 16, "cifar10": 32, "cifar100": 32, "imagenet": 224}


def parse_shape(text: str) -> tuple[int, ...]:
    """``"3,32,32"`` -> ``(3, 32, 32)`` (positive integers)."""
    try:
        shape = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"--input-shape must be comma-separated integers such as 3,32,32, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"--input-shape needs positive integers, got {text!r}")
    return shape


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help=COMMANDS["export"],
        description="Export a trained spiking (or QCFS, converted to IF) checkpoint to the Neuromorphic "
        "Intermediate Representation. Needs the 'nir' package (pip install \"spikeforge[nir]\").",
    )
    p.add_argument("out", metavar="OUT.nir", help="file to write")
    add_checkpoint_arguments(p, "a checkpoint of a training run",
                             timesteps="T recorded in the graph's metadata (default: the recipe's)")
    p.add_argument("--format", required=True, choices=("nir",), help="output format (only 'nir')")
    p.add_argument("--dt", type=float, default=None, help="time step in seconds the NIR time constants refer to "
                   "(default: 1e-4, the step snnTorch assumes)")
    p.add_argument("--input-shape", help="one input sample C,H,W (default: from the recipe's data set)")
    p.set_defaults(func=run)


def _input_shape(config) -> tuple[int, ...]:
    name = config.data.name.lower().replace("-", "").replace("_", "")
    if name not in _SIDES:
        raise ValueError(f"no default input shape for data set {config.data.name!r}: pass --input-shape C,H,W")
    side = int(config.data.options.get("size", _SIDES[name]))
    return dataset_info(name).in_channels, side, side


def run(args: argparse.Namespace) -> int:
    """Run ``spikeforge export``; returns the exit code (raises ValueError & co. on bad input)."""
    nir = require("nir", "spikeforge export")
    model, config, _ = load_network(args.checkpoint, args.timesteps, bn="fold")
    shape = parse_shape(args.input_shape) if args.input_shape else _input_shape(config)
    graph = to_nir(model, torch.zeros(1, *shape), dt=DEFAULT_DT if args.dt is None else args.dt)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    nir.write(str(out), graph)
    kinds = Counter(type(node).__name__ for node in graph.nodes.values())
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    output_shape = [int(n) for n in graph.nodes["output"].output_type["output"]]
    print(f"wrote {out}: {config.model.name} ({config.model.neuron}) as {len(graph.nodes)} NIR nodes ({summary}); "
          f"input {list(shape)} -> output {output_shape} per step, dt={graph.metadata['spikeforge.dt']:g} s")
    return 0
