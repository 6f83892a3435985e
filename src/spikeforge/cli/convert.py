"""``spikeforge convert``: convert a trained QCFS checkpoint into an IF SNN and report accuracy over time.

::

    spikeforge convert --checkpoint runs/qcfs-cpu-.../best.pt --timesteps 1,2,4,8,16,32,64 \\
        [--srp-tau 4] [--data-root DIR] [--out DIR] [--bn keep|fold] [--limit N]

Prints a table (the QCFS-ANN accuracy, then the SNN accuracy at each requested T, and with
``--srp-tau`` the SRP accuracy at each T with its total latency ``tau + T``), and writes
``convert.json`` and ``convert.png`` (when matplotlib is installed) to ``--out`` (default:
``<checkpoint folder>/convert``). One causal simulation of ``max(T)`` steps per test batch yields every T.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .common import positive_int

__all__ = ["add_parser", "run", "parse_timesteps", "run_label"]


def parse_timesteps(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]`` (sorted, unique, each >= 1)."""
    try:
        values = sorted({int(v) for v in str(text).split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"--timesteps must be a comma-separated list of integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise ValueError(f"--timesteps needs integers >= 1, got {text!r}")
    return values


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a QCFS checkpoint to an IF SNN and test it over time (QCFS, SRP)",
        description="Convert a trained QCFS ANN (neuron: qcfs) into an IF spiking network and report "
        "test accuracy after T steps, optionally with the SRP pre-run correction.",
    )
    p.add_argument("--checkpoint", required=True, help="a checkpoint (best.pt / last.pt) of a QCFS ANN")
    p.add_argument("--timesteps", default="1,2,4,8,16,32,64", help="comma-separated T values (default: %(default)s)")
    p.add_argument("--srp-tau", type=int, default=0, metavar="TAU",
                   help="also evaluate SRP with a pre-run of TAU steps (latency TAU + T); 0 = off")
    p.add_argument("--data-root", help="data folder (default: the recipe's data.root)")
    p.add_argument("--out", help="output folder for convert.json / convert.png (default: <checkpoint dir>/convert)")
    p.add_argument("--bn", choices=("keep", "fold"), default="keep", help="keep BN layers or fold them into convs")
    p.add_argument("--limit", type=positive_int, metavar="N", help="use only the first N test images")
    p.add_argument("--batch-size", type=positive_int, help="test batch size (default: the recipe's eval batch size)")
    p.add_argument("--chunk", type=positive_int, default=16, help="time steps simulated per call (memory) (default: 16)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)


def run_label(checkpoint: str | Path) -> str:
    """``<run folder>/<file>`` of a checkpoint: names the run, not just ``best.pt``."""
    path = Path(checkpoint).resolve()
    return f"{path.parent.name}/{path.name}"


def _plot(result: dict, path: Path) -> Path | None:
    from ..runtime.plots import pyplot, save_figure

    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ts = result["timesteps"]
    ax.plot(ts, [100 * a for a in result["snn_acc"]], marker="o", label=f"QCFS SNN (bn={result['bn']})")
    if result.get("srp_acc"):
        tau = result["srp_tau"]
        ax.plot(ts, [100 * a for a in result["srp_acc"]], marker="s", label=f"SRP tau={tau} (x = main-run T)")
    ax.axhline(100 * result["ann_acc"], color="gray", linestyle="--", label="QCFS ANN")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="time steps T", ylabel="test accuracy (%)",
           title=f"{run_label(result['checkpoint'])}: {result['model']} on {result['dataset']}")
    return save_figure(plt, fig, [ax], path)


def _print_table(result: dict) -> None:
    print(f"{result['model']} on {result['dataset']} ({result['samples']} test images), "
          f"QCFS L={','.join(map(str, result['levels']))}, bn={result['bn']}")
    header = f"{'':<12}{'T':>6}{'steps':>7}{'acc %':>9}"
    print(header)
    print("-" * len(header))
    print(f"{'ANN (QCFS)':<12}{'-':>6}{'-':>7}{100 * result['ann_acc']:>9.2f}")
    for t, acc in zip(result["timesteps"], result["snn_acc"]):
        print(f"{'SNN':<12}{t:>6}{t:>7}{100 * acc:>9.2f}")
    tau = result["srp_tau"]
    for t, acc in zip(result["timesteps"], result.get("srp_acc", [])):
        print(f"{'SRP tau=' + str(tau):<12}{t:>6}{tau + t:>7}{100 * acc:>9.2f}")


def run(args: argparse.Namespace) -> int:
    """Run ``spikeforge convert``; returns the exit code (raises ValueError & co. on bad input)."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from ..convert import QCFS, evaluate_over_time, to_snn
    from ..runtime.devices import resolve_device
    from ..runtime.loaders import evaluation_set
    from ..train.trained import load_trained

    steps = parse_timesteps(args.timesteps)
    if args.srp_tau < 0:
        raise ValueError(f"--srp-tau must be >= 0, got {args.srp_tau}")
    ann, config, _ = load_trained(args.checkpoint, 1)
    if config.model.neuron.lower() != "qcfs":
        raise ValueError(f"{args.checkpoint}: model.neuron is {config.model.neuron!r}; conversion needs a QCFS "
                         "ANN (train a recipe with model.neuron: qcfs, e.g. qcfs-cpu)")
    device = resolve_device(args.device)
    ann.to(device)
    levels = sorted({m.levels for m in ann.modules() if isinstance(m, QCFS)})

    test_set = evaluation_set(config.data, args.data_root)
    if args.limit is not None:
        test_set = Subset(test_set, range(min(args.limit, len(test_set))))
    d = config.data
    loader = DataLoader(test_set, batch_size=args.batch_size or d.eval_batch_size or d.batch_size, num_workers=d.workers)

    t0 = time.time()
    correct = seen = 0
    with torch.no_grad():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            correct += (ann(images).argmax(-1) == labels).sum().item()
            seen += labels.numel()
    ann_acc = correct / max(seen, 1)

    snn = to_snn(ann, timesteps=max(steps), bn=args.bn).to(device)
    plain = evaluate_over_time(snn, loader, timesteps=max(steps), chunk=args.chunk, device=device)
    srp = None
    if args.srp_tau > 0:
        srp = evaluate_over_time(snn, loader, timesteps=max(steps), chunk=args.chunk, srp_tau=args.srp_tau,
                                 device=device)
    result = {
        "checkpoint": str(args.checkpoint),
        "model": config.model.name,
        "dataset": d.name,
        "levels": levels,
        "bn": args.bn,
        "samples": seen,
        "ann_acc": ann_acc,
        "timesteps": steps,
        "snn_acc": [plain.at(t) for t in steps],
        "snn_acc_all_t": plain.accuracy,
        "srp_tau": args.srp_tau,
        "seconds": round(time.time() - t0, 2),
    }
    if srp is not None:
        result["srp_acc"] = [srp.at(t) for t in steps]
        result["srp_total_steps"] = [args.srp_tau + t for t in steps]
        result["srp_acc_all_t"] = srp.accuracy
    _print_table(result)

    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / "convert"
    out.mkdir(parents=True, exist_ok=True)
    (out / "convert.json").write_text(json.dumps(result, indent=2))
    png = _plot(result, out / "convert.png")
    print(f"wrote {out / 'convert.json'}" + (f" and {png}" if png else " (no plot: matplotlib not installed)"))
    return 0
