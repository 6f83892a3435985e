"""``spikeforge evaluate --checkpoint PATH``: the test metric of a checkpoint, as the trainer measured it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="test accuracy of a checkpoint",
                       description="Re-test a checkpoint with its recipe's test set; by default with the "
                       "precision the run trained with, so it prints the trainer's number.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-root")
    p.add_argument("--timesteps", type=positive_int, help="time steps T (default: the recipe's last stage)")
    p.add_argument("--precision", choices=("trained", "float32", "mixed"), default="trained",
                   help="trained: the run's own autocast setting (default); float32: no autocast; "
                        "mixed: bfloat16 (CPU) / float16 (CUDA) autocast")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, data_root=args.data_root, timesteps=args.timesteps,
                                 device=args.device, precision=args.precision)
    metric = result["metric"]
    value = result[f"test_{metric}"]
    shown = f"test accuracy {100 * value:.2f}%" if metric == "acc" else f"test {metric.replace('_', ' ')} {value:.4g}"
    print(f"{shown} (loss {result['test_loss']:.4f}, {result['samples']} samples, T={result['timesteps']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
