"""Peak memory of one training step of zoo networks: ours with and without spike packing, SpikingJelly
neurons and the ANN; the step time with and without packing; the largest batch under a memory budget.

    python benchmarks/train_memory.py [--models resnet19,vggsnn] [--timesteps 2,4,6] [--batch 32] \
        [--budget-gb 2] [--repeats 3] [--threads N] [--device cpu|cuda]

The networks and the step are those of ``train_step.py`` (SGD, cross-entropy on the time-averaged
output); ``ours-packed`` is ``ours`` with the step's forward and backward inside
:class:`spikeforge.core.packing.pack_spikes` (what the trainer does by default). Inputs: 3x32x32,
VGGSNN 2x48x48 (its DVS size), static (the same frame at every step).

Memory, per (model, T, network): one fresh subprocess, one warm-up step on a batch of 2 (kernel
compilation, optimiser state), the gradients freed, then one step at ``--batch``. CPU: the RSS high
water mark above the RSS before the step (``/proc/self/clear_refs``, ``VmHWM``), the subprocess run
with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors go back to the OS. CUDA:
``torch.cuda.max_memory_allocated`` above the memory allocated before the step (after a full-size
warm-up step). The ANN does not depend on T: measured once.

Largest batch: the networks are measured again at half the batch at ``--budget-timesteps``; peak
memory is linear in the batch (activations), so the line through the two points gives the largest
batch whose step stays under ``--budget-gb`` (an estimate: not measured at that batch).

Step time: ``ours`` and ``ours-packed`` on one network (the same weights) in alternating rounds
(ABBA), ``--repeats`` rounds of each at ``--budget-timesteps``, medians. Results are printed and
written to ``benchmarks/results/train_memory.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import statistics
import sys
from contextlib import nullcontext
from pathlib import Path

import torch
from neuron import peak_rss, proc_status_bytes, reset_peak_rss, run_probe  # the neuron benchmark's probes
from train_step import build, check_device, step_fn, synchronize, timed_step

from spikeforge.core.packing import pack_spikes

KINDS = ("ours-packed", "ours", "spikingjelly", "ann")
INPUTS = {"vggsnn": (2, 48)}  # (channels, side) where not 3x32x32


def setup(model: str, kind: str, timesteps: int, batch: int, device: torch.device):
    """``(network, optimiser, run)`` where ``run(x, y)`` is one training step of ``kind``, and
    ``batch`` inputs and labels ``(x, y)``."""
    torch.manual_seed(0)
    base_kind = kind.removesuffix("-packed")
    net = build(base_kind, model, timesteps, 10).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def run(x, y):
        with pack_spikes() if kind.endswith("-packed") else nullcontext():
            return step_fn(base_kind, net, opt, x, y, timesteps)

    return net, opt, run


def inputs(model: str, batch: int, device: torch.device):
    channels, side = INPUTS.get(model, (3, 32))
    return torch.randn(batch, channels, side, side, device=device), torch.randint(0, 10, (batch,), device=device)


def memory_probe(model: str, kind: str, timesteps: int, batch: int, device: torch.device) -> dict[str, int]:
    """Bytes of one training step (run in a fresh process: see the module doc): ``extra``, the peak above
    the memory in use before the step, and ``peak``, the whole peak (process RSS; CUDA: all allocated)."""
    net, opt, run = setup(model, kind, timesteps, batch, device)
    run(*inputs(model, 2, device))  # warm-up: compiled kernels, momentum buffers
    x, y = inputs(model, batch, device)
    if device.type == "cuda":  # the caching allocator keeps blocks: warm up at full size too
        run(x, y)
    opt.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run(x, y)
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"extra": peak - base, "peak": peak}
    base = proc_status_bytes("VmRSS")
    if base is None or not reset_peak_rss():
        sys.exit("the CPU memory probe needs Linux /proc (VmRSS, clear_refs)")
    run(x, y)
    peak = peak_rss()
    return {"extra": peak - base, "peak": peak}


def measure(model: str, kind: str, timesteps: int, batch: int, args) -> dict[str, float] | None:
    """MB of one step (``extra`` and ``peak``, see :func:`memory_probe`) from a fresh subprocess; None if
    it failed."""
    command = [sys.executable, __file__, "--probe", f"{model}:{kind}:{timesteps}:{batch}", "--device", args.device]
    if args.threads:
        command += ["--threads", str(args.threads)]
    probe = run_probe(command, f"{model} {kind} T={timesteps} batch {batch}", timeout=3600)
    if probe is None:
        return None
    mb = {key: value / 2**20 for key, value in probe.items()}
    print(f"  {model:<9} {kind:<13} T={timesteps:<2} batch {batch:<4} extra {mb['extra']:8.1f} MB, "
          f"peak {mb['peak']:8.1f} MB", flush=True)
    return mb


def step_times(model: str, timesteps: int, batch: int, repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step of ``ours`` without and with packing, in ABBA rounds on one network."""
    net, opt, _ = setup(model, "ours", timesteps, batch, device)
    x, y = inputs(model, batch, device)
    times: dict[str, list[float]] = {"ours": [], "ours-packed": []}

    def timed(kind):
        with pack_spikes() if kind == "ours-packed" else nullcontext():
            times[kind].append(timed_step("ours", net, opt, x, y, timesteps))

    timed("ours")  # warm-up
    times["ours"].clear()
    for r in range(repeats):
        for kind in ("ours", "ours-packed") if r % 2 == 0 else ("ours-packed", "ours"):
            timed(kind)
    return times


def largest_batch(small: float, full: float, batch: int, budget_mb: float) -> int | None:
    """The largest batch under ``budget_mb`` on the line through (batch / 2, small) and (batch, full)."""
    slope = (full - small) / (batch - batch // 2)
    if slope <= 0:
        return None
    return max(0, int((budget_mb - (full - slope * batch)) // slope))


def print_table(memory: dict, key: str, title: str) -> None:
    """One row per T: ``memory[kind][T][key]`` of every network, then ours-packed over ours and SpikingJelly."""
    kinds = list(memory)
    print(f"  {title}\n  T " + "".join(f"{k:>14}" for k in kinds) + "   packed/ours  packed/SJ")
    for steps in memory["ours"]:
        row = {k: (memory[k][steps] or {}).get(key, math.nan) for k in kinds}
        ratios = [row["ours-packed"] / row.get(k, math.nan) for k in ("ours", "spikingjelly")]
        print(f"  {steps:<2}" + "".join(f"{v:14.1f}" for v in row.values()) + "".join(f"{r:12.2f}" for r in ratios))


def print_times(model: str, timesteps: int, batch: int, medians: dict[str, float], repeats: int) -> None:
    print(f"  {model} step time at T={timesteps}, batch {batch}, {torch.get_num_threads()} threads, median of "
          f"{repeats}: ours {medians['ours']:.2f} s, ours-packed {medians['ours-packed']:.2f} s, packed/ours "
          f"{medians['ours-packed'] / medians['ours']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=lambda v: v.split(","), default=["resnet19", "vggsnn"])
    parser.add_argument("--timesteps", type=lambda v: [int(t) for t in v.split(",")], default=[2, 4, 6])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--budget-gb", type=float, default=2.0, help="memory budget of the largest-batch estimate")
    parser.add_argument("--budget-timesteps", type=int, default=4, help="T of the largest batch and the step times")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of each (0: no timing)")
    parser.add_argument("--no-memory", action="store_true", help="only the step times")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: torch's)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: "MODEL:KIND:T:BATCH"
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_memory.json"))
    args = parser.parse_args()

    device = torch.device(args.device)
    check_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        model, kind, steps, batch = args.probe.split(":")
        print(json.dumps(memory_probe(model, kind, int(steps), int(batch), device)))
        return
    try:
        import spikingjelly  # noqa: F401

        kinds = KINDS
    except ImportError:
        print("note: spikingjelly not installed; skipping it")
        kinds = tuple(k for k in KINDS if k != "spikingjelly")
    budget_mb = args.budget_gb * 1024
    result = {"settings": vars(args) | {"torch": torch.__version__, "threads": torch.get_num_threads(),
                                        "machine": platform.machine()}, "models": {}}  # fmt: skip
    for model in args.models:
        at, half = args.budget_timesteps, args.batch // 2
        if args.no_memory:
            times = step_times(model, at, args.batch, args.repeats, device)
            medians = {k: statistics.median(v) for k, v in times.items()}
            result["models"][model] = {"step_s": times, "median_step_s": medians}
            print_times(model, at, args.batch, medians, args.repeats)
            continue
        memory: dict[str, dict[int, dict | None]] = {k: {} for k in kinds}
        for steps in args.timesteps:
            for kind in kinds:
                ann = kind == "ann" and memory["ann"]
                memory[kind][steps] = next(iter(memory["ann"].values())) if ann else measure(
                    model, kind, steps, args.batch, args)
        halves = {k: measure(model, k, at, half, args) for k in kinds}
        fulls = {k: memory[k].get(at) or measure(model, k, at, args.batch, args) for k in kinds}
        fits = {k: largest_batch(halves[k]["peak"], fulls[k]["peak"], args.batch, budget_mb)
                if halves[k] and fulls[k] else None for k in kinds}  # fmt: skip
        times = step_times(model, at, args.batch, args.repeats, device) if args.repeats else {}
        medians = {k: statistics.median(v) for k, v in times.items()}
        result["models"][model] = {"memory_mb": memory, f"memory_mb_batch_{half}": halves, "largest_batch": fits,
                                   "step_s": times, "median_step_s": medians}  # fmt: skip
        print(f"\n{model}, batch {args.batch}, one training step, {device}")
        print_table(memory, "extra", "peak memory above the memory before the step (MB)")
        print_table(memory, "peak", "peak memory of the process (MB)" if device.type == "cpu" else
                    "peak memory allocated (MB)")
        print(f"  largest batch with a peak under {args.budget_gb:g} GB at T={at} (linear from batches {half} and "
              f"{args.batch}): " + ", ".join(f"{k} {v}" for k, v in fits.items()))
        if medians:
            print_times(model, at, args.batch, medians, args.repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
