"""Time one training step of a zoo network: spiking (ours), the same network as an ANN,
and the same network with SpikingJelly's multi-step LIF neurons (when installed).

Default: ResNet-19 (TET), T=4, batch 32, 32x32 input, SGD step with cross-entropy on
the time-averaged output. Runs are interleaved (round-robin, median of repeats) in one
process. Prints a table and writes JSON to ``benchmarks/results/train_step.json``.

    python benchmarks/train_step.py [--model resnet19] [--timesteps 4] [--batch 32] [--repeats 5] [--amp] \
        [--channels-last] [--threads N]

``--amp`` adds ours and the ANN under the trainer's mixed precision (bfloat16 autocast
on a CPU with native bfloat16, float16 on CUDA) as ``ours-amp`` / ``ann-amp``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from spikeforge import models
from spikeforge.runtime.devices import autocast


class SpikingJellyLIF(nn.Module):
    """SpikingJelly ``LIFNode`` (multi-step) on time-folded input, with our LIF's dynamics.

    TET's LIF (decay 0.5, input scale 1, v_th 1, hard reset to 0, strict, triangle
    surrogate) has no exact SpikingJelly equivalent (``decay_input`` couples the input
    scale to the decay); we use ``LIFNode(tau=2, decay_input=False)``, which is
    ``h = 0.5 u + x`` with the same threshold and reset, and its sigmoid surrogate.
    """

    def __init__(self, timesteps: int):
        super().__init__()
        from spikingjelly.activation_based import neuron

        self.timesteps = timesteps
        self.node = neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0, step_mode="m")

    def forward(self, x):
        from spikingjelly.activation_based import functional

        out = self.node(x.reshape(self.timesteps, -1, *x.shape[1:])).reshape(x.shape)
        functional.reset_net(self.node)
        return out


def build(kind: str, name: str, timesteps: int, num_classes: int) -> nn.Module:
    kind = kind.removesuffix("-amp")
    if kind == "ours":
        return models.create(name, num_classes=num_classes, neuron="lif", timesteps=timesteps)
    if kind == "ann":
        return models.create(name, num_classes=num_classes, neuron="relu")
    if kind == "spikingjelly":
        return models.create(name, num_classes=num_classes, neuron=lambda: SpikingJellyLIF(timesteps))
    raise ValueError(kind)


def step_fn(kind: str, model: nn.Module, opt, x, y, timesteps: int):
    """One optimiser step; returns the loss (forces the step to finish)."""
    with autocast(x.device, kind.endswith("-amp")):
        if kind.startswith("ours"):
            logits = model(x).mean(0)
        elif kind == "spikingjelly":
            folded = x.unsqueeze(0).expand(timesteps, *x.shape).reshape(-1, *x.shape[1:])
            logits = model(folded).reshape(timesteps, x.shape[0], -1).mean(0)
        else:
            logits = model(x)
    loss = nn.functional.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet19")
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--amp", action="store_true", help="also time ours and the ANN under mixed precision")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory format (as the cpu recipe)")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: torch's)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_step.json"))
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(args.batch, 3, args.size, args.size).to(memory_format=memory_format)
    y = torch.randint(0, 10, (args.batch,))
    kinds = ["ours", "ann"] + (["ours-amp", "ann-amp"] if args.amp else [])
    try:
        import spikingjelly  # noqa: F401

        kinds.append("spikingjelly")
    except ImportError:
        print("note: spikingjelly not installed; skipping it")
    nets = {k: build(k, args.model, args.timesteps, 10).to(memory_format=memory_format) for k in kinds}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in nets.items()}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for k in kinds:  # warm-up (first-call allocations, kernel compilation)
        step_fn(k, nets[k], opts[k], x, y, args.timesteps)
    for _ in range(args.repeats):
        for k in kinds:
            tic = time.perf_counter()
            step_fn(k, nets[k], opts[k], x, y, args.timesteps)
            times[k].append(time.perf_counter() - tic)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "settings": vars(args) | {"torch": torch.__version__, "threads": torch.get_num_threads(),
                                  "machine": platform.machine()},
        "median_s": med,
        "all_s": times,
        "ours_over_T_ann": med["ours"] / (args.timesteps * med["ann"]),
    }
    if "spikingjelly" in med:
        result["spikingjelly_over_ours"] = med["spikingjelly"] / med["ours"]
    if args.amp:
        result["ours_over_ours_amp"] = med["ours"] / med["ours-amp"]
    print(f"{args.model}, T={args.timesteps}, batch {args.batch}, {args.size}x{args.size}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    for k in kinds:
        print(f"  {k:<13} {1000 * med[k]:9.1f} ms/step")
    print(f"  ours / (T x ANN) = {result['ours_over_T_ann']:.2f}   (target <= 1.2)")
    if "spikingjelly_over_ours" in result:
        print(f"  SpikingJelly / ours = {result['spikingjelly_over_ours']:.2f}   (target > 1)")
    if args.amp:
        print(f"  ours / ours-amp = {result['ours_over_ours_amp']:.2f}   (mixed-precision speed-up)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
