"""``spikeforge convert``: convert a trained QCFS checkpoint into an IF SNN and report accuracy over time.

::

    spikeforge convert --checkpoint runs/qcfs-cpu-.../best.pt --timesteps 1,2,4,8,16,32,64 \\
        [--srp-tau 4] [--data-root DIR] [--out DIR] [--bn keep|fold] [--limit N]

Prints a table (the QCFS-ANN accuracy, then the SNN accuracy at each requested
T, and with ``--srp-tau`` the SRP accuracy at each T with its total latency
``tau + T``), and writes ``convert.json`` and ``convert.png`` (when matplotlib
is installed) to ``--out`` (default: ``<checkpoint folder>/convert``).
One causal simulation of ``max(T)`` steps per test batch yields every T.

Wiring (in ``spikeforge/cli.py``)::

    from .convert.cli import add_convert_parser
    add_convert_parser(sub)          # sub = parser.add_subparsers(...)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["add_convert_parser", "cmd_convert", "parse_timesteps"]


def parse_timesteps(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]`` (sorted, unique, each >= 1)."""
    try:
        values = sorted({int(v) for v in str(text).split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"--timesteps must be a comma-separated list of integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise ValueError(f"--timesteps needs integers >= 1, got {text!r}")
    return values


def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``convert`` command to ``subparsers`` (from ``parser.add_subparsers()``); returns its parser.

    The parser's default ``func`` is :func:`cmd_convert` (``args.func(args) -> exit code``).
    """
    p = subparsers.add_parser(
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
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N test images")
    p.add_argument("--batch-size", type=int, help="test batch size (default: the recipe's eval batch size)")
    p.add_argument("--chunk", type=int, default=16, help="time steps simulated per call (memory) (default: 16)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_convert)
    return p


def _plot(result: dict, path: Path) -> Path | None:
    from ..train.logging import pyplot, save_figure

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
    ax.set(xlabel="time steps T", ylabel="test accuracy (%)", title=Path(result["checkpoint"]).name)
    return save_figure(plt, fig, [ax], path)


def cmd_convert(args: argparse.Namespace) -> int:
    """Run ``spikeforge convert``; returns the exit code (raises ValueError & co. on bad input)."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from ..data import build_dataset
    from ..train.trainer import load_trained, resolve_device
    from . import QCFS, evaluate_over_time, to_snn

    steps = parse_timesteps(args.timesteps)
    if args.srp_tau < 0:
        raise ValueError(f"--srp-tau must be >= 0, got {args.srp_tau}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.chunk < 1:
        raise ValueError(f"--chunk must be >= 1, got {args.chunk}")
    ann, config, _ = load_trained(args.checkpoint, 1)
    if config.model.neuron.lower() != "qcfs":
        raise ValueError(f"{args.checkpoint}: model.neuron is {config.model.neuron!r}; conversion needs a QCFS "
                         "ANN (train a recipe with model.neuron: qcfs, e.g. qcfs-cpu)")
    if args.data_root:
        config.data.root = args.data_root
    device = resolve_device(args.device)

    ann.to(device)
    levels = sorted({m.levels for m in ann.modules() if isinstance(m, QCFS)})

    d = config.data
    options = dict(d.options)
    test_set = build_dataset(d.name, root=d.root, train=False, **options)
    if args.limit is not None:
        test_set = Subset(test_set, range(min(args.limit, len(test_set))))
    batch = args.batch_size or d.eval_batch_size or d.batch_size
    loader = DataLoader(test_set, batch_size=batch, num_workers=d.workers)

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
    elapsed = time.time() - t0

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
        "seconds": round(elapsed, 2),
    }
    if srp is not None:
        result["srp_acc"] = [srp.at(t) for t in steps]
        result["srp_total_steps"] = [args.srp_tau + t for t in steps]
        result["srp_acc_all_t"] = srp.accuracy

    print(f"{config.model.name} on {d.name} ({seen} test images), QCFS L={','.join(map(str, levels))}, bn={args.bn}")
    header = f"{'':<12}{'T':>6}{'steps':>7}{'acc %':>9}"
    print(header)
    print("-" * len(header))
    print(f"{'ANN (QCFS)':<12}{'-':>6}{'-':>7}{100 * ann_acc:>9.2f}")
    for t, acc in zip(steps, result["snn_acc"]):
        print(f"{'SNN':<12}{t:>6}{t:>7}{100 * acc:>9.2f}")
    if srp is not None:
        for t, acc in zip(steps, result["srp_acc"]):
            print(f"{'SRP tau=' + str(args.srp_tau):<12}{t:>6}{args.srp_tau + t:>7}{100 * acc:>9.2f}")

    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / "convert"
    out.mkdir(parents=True, exist_ok=True)
    (out / "convert.json").write_text(json.dumps(result, indent=2))
    png = _plot(result, out / "convert.png")
    print(f"wrote {out / 'convert.json'}" + (f" and {png}" if png else " (no plot: matplotlib not installed)"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m spikeforge.convert.cli ...``) until the main CLI wires the command in."""
    parser = argparse.ArgumentParser(prog="spikeforge")
    add_convert_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["convert", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as err:
        print(f"spikeforge convert: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
