"""Time one training step of a zoo network: spiking (ours), the same network as an ANN,
and the same network with SpikingJelly's multi-step LIF neurons (when installed).

Default: ResNet-19 (TET), T=4, batch 32, 32x32 input, SGD step with cross-entropy on
the time-averaged output. Runs are interleaved (round-robin, median of repeats) in one
process. Prints a table and writes JSON to ``benchmarks/results/train_step.json``.

    python benchmarks/train_step.py [--model resnet19] [--timesteps 4] [--batch 32] [--repeats 5] [--amp] \
        [--channels-last] [--threads N] [--device cpu|cuda] [--backends fused,triton] [--system-malloc]

``ours`` is our LIF with ``backend="auto"`` (Triton loops on CUDA, compiled C loops on CPU);
``--backends`` adds ours with other backends as ``ours-<backend>``. ``--amp`` adds ours and the
ANN under the trainer's mixed precision (bfloat16 autocast on a CPU with native bfloat16, float16
on CUDA; no loss scaling: a timing, not a training) as ``ours-amp`` / ``ann-amp``. On CUDA every
timed step is bracketed by ``torch.cuda.synchronize()``, and the peak memory of one more step of
each network is measured afterwards (``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats``, minus the memory allocated before the step with that network's
gradients freed: activations, temporaries and gradients).

On the CPU the process keeps freed memory for the next step as the trainer does
(:func:`spikeforge.runtime.allocator.reuse_freed_memory`, ``memory.reuse_freed``); ``--system-malloc``
times with glibc's default instead (large tensors mapped afresh, a page fault per 4 KiB).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from spikeforge import models
from spikeforge.core.fused_norm import norm_fusion
from spikeforge.runtime.allocator import reuse_freed_memory
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
    kind = kind.removesuffix("-amp").replace("-unfused", "")
    if kind.startswith("ours"):  # "ours" (backend auto) or "ours-<backend>"
        backend = kind.removeprefix("ours").removeprefix("-")
        return models.create(name, num_classes=num_classes, neuron="lif", timesteps=timesteps,
                             neuron_kwargs={"backend": backend} if backend else None)  # fmt: skip
    if kind == "ann":
        return models.create(name, num_classes=num_classes, neuron="relu")
    if kind == "spikingjelly":
        return models.create(name, num_classes=num_classes, neuron=lambda: SpikingJellyLIF(timesteps))
    raise ValueError(kind)


def step_fn(kind: str, model: nn.Module, opt, x, y, timesteps: int):
    """One optimiser step; returns the loss (forces the step to finish)."""
    with autocast(x.device, kind.endswith("-amp")), norm_fusion("-unfused" not in kind):
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


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a wall-clock interval covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(kind: str, model, opt, x, y, timesteps: int) -> float:
    """Wall time of one optimiser step in seconds, the device synchronised before and after."""
    synchronize(x.device)
    tic = time.perf_counter()
    step_fn(kind, model, opt, x, y, timesteps)
    synchronize(x.device)
    return time.perf_counter() - tic


def peak_step_memory(kind: str, model, opt, x, y, timesteps: int) -> int:
    """CUDA: peak memory allocated during one more step, above what was allocated before it (weights,
    optimiser state and inputs of every network; this network's gradients freed first)."""
    opt.zero_grad(set_to_none=True)
    gc.collect()
    torch.cuda.empty_cache()
    synchronize(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    base = torch.cuda.memory_allocated(x.device)
    step_fn(kind, model, opt, x, y, timesteps)
    synchronize(x.device)
    return torch.cuda.max_memory_allocated(x.device) - base


def check_device(device: torch.device) -> None:
    """Exit with one line when ``--device cuda`` has no GPU to run on."""
    if device.type != "cuda":
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a driver warning would add lines to the one-line message
        usable = torch.cuda.is_available()
    if not usable:
        sys.exit(f"--device cuda: no CUDA device is available (torch {torch.__version__}, built for CUDA "
                 f"{torch.version.cuda or 'none'}); run on a machine with a GPU or use --device cpu")


def device_facts(device: torch.device) -> dict:
    """What ran where: the GPU, and the neuron implementations ours (auto) and SpikingJelly use there."""
    from spikeforge.core.kernels import triton_loops

    if device.type != "cuda":
        return {"ours_auto_loops": "compiled C where a C compiler is available, else fused torch operations"}
    props = torch.cuda.get_device_properties(device)
    facts = {
        "gpu": {"name": props.name, "capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda},
        "ours_auto_loops": "triton" if triton_loops.available() else "fused (triton not installed)",
    }  # fmt: skip
    try:
        from spikingjelly.activation_based.functional import neuron_implementation

        facts["spikingjelly_lif"] = neuron_implementation("lif", device)["implementation"]
    except Exception as err:  # not installed, or another version's API
        facts["spikingjelly_lif"] = f"unknown ({type(err).__name__})"
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet19")
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--backends", type=lambda v: [b for b in v.split(",") if b and b != "auto"], default=[],
                        help="more backends for ours besides auto, comma-separated (fused, triton, cpu, reference): "
                        "timed as ours-<backend>")  # fmt: skip
    parser.add_argument("--amp", action="store_true", help="also time ours and the ANN under mixed precision")
    parser.add_argument("--unfused", action="store_true",
                        help="also time ours with batch norm and neuron apart (ours-unfused, ours-unfused-amp)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory format (as the cpu recipe)")
    parser.add_argument("--only", type=lambda v: [k for k in v.split(",") if k],
                        help="time only these networks, comma-separated (e.g. ours-amp,ann-amp): the others' steps "
                        "in between evict caches and reused memory a real training run keeps")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: torch's)")
    parser.add_argument("--system-malloc", action="store_true",
                        help="CPU: glibc's default allocation (the trainer's memory.reuse_freed: false)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_step.json"))
    args = parser.parse_args()

    device = torch.device(args.device)
    check_device(device)
    reused = device.type == "cpu" and not args.system_malloc and reuse_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(args.batch, 3, args.size, args.size).to(device=device, memory_format=memory_format)
    y = torch.randint(0, 10, (args.batch,)).to(device)
    kinds = ["ours", *(f"ours-{b}" for b in args.backends), "ann"] + (["ours-amp", "ann-amp"] if args.amp else [])
    if args.unfused:
        kinds += ["ours-unfused"] + (["ours-unfused-amp"] if args.amp else [])
    try:
        import spikingjelly  # noqa: F401

        kinds.append("spikingjelly")
    except ImportError:
        print("note: spikingjelly not installed; skipping it")
    if args.only:
        unknown = sorted(set(args.only) - set(kinds))
        if unknown:
            sys.exit(f"--only: unknown or not enabled network(s) {', '.join(unknown)} (available: {', '.join(kinds)})")
        kinds = [k for k in kinds if k in args.only]
    nets = {k: build(k, args.model, args.timesteps, 10).to(device=device, memory_format=memory_format)
            for k in kinds}  # fmt: skip
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in nets.items()}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for k in kinds:  # warm-up (first-call allocations, kernel compilation)
        step_fn(k, nets[k], opts[k], x, y, args.timesteps)
    for _ in range(args.repeats):
        for k in kinds:
            times[k].append(timed_step(k, nets[k], opts[k], x, y, args.timesteps))
    peak = {}
    if device.type == "cuda":
        peak = {k: peak_step_memory(k, nets[k], opts[k], x, y, args.timesteps) / 2**20 for k in kinds}
    med = {k: statistics.median(v) for k, v in times.items()}
    facts = device_facts(device)
    result = {
        "settings": vars(args) | {"torch": torch.__version__, "threads": torch.get_num_threads(),
                                  "machine": platform.machine(), "reuse_freed_memory": reused},
        "device": facts,
        "timing": "time.perf_counter around each step (forward, loss, backward, SGD update); "
        "torch.cuda.synchronize() before and after on CUDA",
        "median_s": med,
        "all_s": times,
        "peak_extra_mb": peak or None,
    }
    # (key, numerator network, denominator network, denominator factor, note), where both networks ran
    target = "   (#22 target <= 0.9)"
    ratios = [("ours_over_T_ann", "ours", "ann", args.timesteps, target),
              ("ours_amp_over_T_ann_amp", "ours-amp", "ann-amp", args.timesteps, target),
              ("spikingjelly_over_ours", "spikingjelly", "ours", 1, "   (> 1: ours faster)"),
              ("ours_over_ours_amp", "ours", "ours-amp", 1, "   (mixed-precision speed-up)"),
              ("ours_over_ours_unfused", "ours", "ours-unfused", 1, "   (batch norm fused into the neuron)"),
              ("ours_amp_over_ours_unfused_amp", "ours-amp", "ours-unfused-amp", 1, ""),
              *((f"ours_{b}_over_ours", f"ours-{b}", "ours", 1, "") for b in args.backends)]
    ratios = [(key, a, b, factor, note, med[a] / (factor * med[b]))
              for key, a, b, factor, note in ratios if a in med and b in med]
    result |= {key: value for key, *_, value in ratios}
    where = f"{device} ({facts['gpu']['name']})" if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"{args.model}, T={args.timesteps}, batch {args.batch}, {args.size}x{args.size}, {where}, "
          f"median of {args.repeats}" + (", freed memory reused" if reused else ""))
    print("  ours: backend auto, here " + facts["ours_auto_loops"]
          + (f"; SpikingJelly LIF: {facts['spikingjelly_lif']}" if "spikingjelly_lif" in facts else ""))
    for k in kinds:
        memory = f"   peak {peak[k]:8.1f} MB" if peak else ""
        print(f"  {k:<13} {1000 * med[k]:9.1f} ms/step{memory}")
    for _, a, b, factor, note, value in ratios:
        print(f"  {a} / ({factor} x {b}) = {value:.2f}{note}" if factor != 1 else f"  {a} / {b} = {value:.2f}{note}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
