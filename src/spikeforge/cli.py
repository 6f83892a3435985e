"""The ``spikeforge`` command line.

Subcommands so far: ``smoke`` (train a tiny spiking CNN for a few steps on
synthetic data and report that the loss fell). Every command exits non-zero
with a one-line reason on bad input.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

import spikeforge as sf


def smoke(args: argparse.Namespace) -> int:
    """Train a small spiking CNN end to end on a synthetic two-class task."""
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    # Two classes: a bright square in the left or the right half of an 8x8 image.
    labels = torch.randint(0, 2, (256,), generator=gen)
    images = torch.rand(256, 1, 8, 8, generator=gen) * 0.2
    for i, y in enumerate(labels.tolist()):
        images[i, 0, 2:6, (1 if y == 0 else 5) : (3 if y == 0 else 7)] += 1.0
    backbone = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), sf.LIF(decay=0.5),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 2),
    )
    net = sf.SpikingNetwork(backbone, timesteps=args.timesteps)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    start = time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(0, 256, (32,), generator=gen)
        loss = nn.functional.cross_entropy(net(images[idx]).mean(0), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(images).mean(0).argmax(1) == labels).float().mean().item()
    print(f"smoke: {args.steps} steps at T={args.timesteps} in {time.perf_counter() - start:.1f}s, "
          f"final loss {loss.item():.3f}, accuracy {acc:.1%}, firing rate {backbone[2].firing_rate:.3f}")
    return 0 if acc > 0.9 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikeforge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"spikeforge {sf.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("smoke", help="train a tiny spiking CNN end to end on synthetic data")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--timesteps", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=smoke)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as err:
        print(f"spikeforge {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
