"""``spikeforge evaluate --checkpoint PATH``: the test metric of a checkpoint, as the trainer measured it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..train.trained import PRECISIONS, evaluate_checkpoint
from . import COMMANDS
from .common import add_checkpoint_arguments


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help=COMMANDS["evaluate"],
                       description="Re-test a checkpoint with its recipe's test set; by default with the "
                       "precision the run trained with, so it prints the trainer's number.")
    add_checkpoint_arguments(p, "a training checkpoint", timesteps="time steps T (default: the recipe's last stage)",
                             test_set=True)
    p.add_argument("--precision", choices=PRECISIONS, default="trained",
                   help="trained: the run's own autocast setting (default); float32: no autocast; "
                        "mixed: bfloat16 (CPU) / float16 (CUDA) autocast")
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = evaluate_checkpoint(args.checkpoint, data_root=args.data_root, timesteps=args.timesteps,
                                 device=args.device, precision=args.precision)
    metric = result["metric"]
    value = result[f"test_{metric}"]
    shown = f"test accuracy {100 * value:.2f}%" if metric == "acc" else f"test {metric.replace('_', ' ')} {value:.4g}"
    print(f"{shown} (loss {result['test_loss']:.4f}, {result['samples']} samples, T={result['timesteps']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
