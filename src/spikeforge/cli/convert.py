"""``spikeforge convert``: convert a trained QCFS checkpoint into an IF SNN and report accuracy over time.

::

    spikeforge convert --checkpoint runs/qcfs-cpu-.../best.pt [--recipe convert-qcfs-srp] [key=value ...] \\
        [--timesteps 1,2,4,8,16,32,64] [--srp-tau 4] [--bn keep|fold] [--limit N] [--batch-size N] [--chunk N] \\
        [--data-root DIR] [--out DIR] [--device auto]

The conversion options are a recipe (:class:`~spikeforge.convert.config.ConversionConfig`: ``--recipe``, else
its defaults), then ``key=value`` overrides, then the flags, each the override of its key (``--srp-tau 4`` is
``srp_tau=4``, ``--timesteps 1,2,4`` is ``timesteps=[1, 2, 4]``). Prints a table (the QCFS-ANN accuracy, then
the SNN accuracy at each requested T, and with ``srp_tau > 0`` the SRP accuracy at each T with its total
latency ``tau + T``), and writes ``convert.json`` and ``convert.png`` (when matplotlib is installed) to
``--out`` (default: ``<checkpoint folder>/convert``). One causal simulation of ``max(T)`` steps per test batch
yields every T.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..convert import QCFS, evaluate_over_time
from ..convert.config import ConversionConfig, build_conversion_config, timestep_sweep
from ..runtime.devices import resolve_device
from ..runtime.plots import pyplot, save_figure
from . import COMMANDS
from .common import (
    add_checkpoint_arguments,
    add_recipe_arguments,
    build_test_set,
    first_samples,
    is_qcfs,
    load_networks,
    option_overrides,
    output_folder,
    positive_int,
)

__all__ = ["add_parser", "run", "parse_timesteps", "conversion_config", "run_label"]

#: The flags that stand for a conversion key (each the key of its own name).
FLAG_KEYS = {name: name for name in ("timesteps", "srp_tau", "bn", "limit", "batch_size", "chunk")}

_DEFAULTS = ConversionConfig()


def parse_timesteps(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]`` (sorted, unique, each >= 1)."""
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--timesteps must be a comma-separated list of integers, got {text!r}") from None
    return timestep_sweep("timesteps", values)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help=COMMANDS["convert"],
        description="Convert a trained QCFS ANN (neuron: qcfs) into an IF spiking network and report "
        "test accuracy after T steps, optionally with the SRP pre-run correction. The options are a "
        "conversion recipe's keys; each flag below is the override of its key.",
    )
    add_checkpoint_arguments(p, "a checkpoint of a QCFS ANN", test_set=True, out="convert")
    add_recipe_arguments(p, None, "srp_tau=4 bn=fold")
    p.add_argument("--timesteps", help="comma-separated T values (default: "
                   f"{','.join(map(str, _DEFAULTS.timesteps))})")
    p.add_argument("--srp-tau", type=int, metavar="TAU", help="also evaluate SRP with a pre-run of TAU steps "
                   f"(latency TAU + T); 0 = off (default: {_DEFAULTS.srp_tau})")
    p.add_argument("--bn", help=f"keep BN layers or fold them into convs: keep | fold (default: {_DEFAULTS.bn})")
    p.add_argument("--limit", type=positive_int, metavar="N", help="use only the first N test images")
    p.add_argument("--chunk", type=positive_int,
                   help=f"time steps simulated per call (memory) (default: {_DEFAULTS.chunk})")
    p.set_defaults(func=run, config_class=ConversionConfig)


def conversion_config(args: argparse.Namespace) -> ConversionConfig:
    """The conversion options of the command line: ``--recipe``, ``key=value`` overrides, then the flags given."""
    options = vars(args) | {"timesteps": None if args.timesteps is None else parse_timesteps(args.timesteps)}
    return build_conversion_config(args.recipe, list(args.overrides) + option_overrides(options, FLAG_KEYS))


def run_label(checkpoint: str | Path) -> str:
    """``<run folder>/<file>`` of a checkpoint: names the run, not just ``best.pt``."""
    path = Path(checkpoint).resolve()
    return f"{path.parent.name}/{path.name}"


def _plot(result: dict, path: Path) -> Path | None:
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
    conversion = conversion_config(args)
    steps = conversion.timesteps
    ann, snn, config, _ = load_networks(args.checkpoint, max(steps), conversion.bn)
    if not is_qcfs(config):
        raise ValueError(f"{args.checkpoint}: model.neuron is {config.model.neuron!r}; conversion needs a QCFS "
                         "ANN (train a recipe with model.neuron: qcfs, e.g. qcfs-cpu)")
    device = resolve_device(args.device)
    ann.to(device)
    snn.to(device)
    levels = sorted({m.levels for m in ann.modules() if isinstance(m, QCFS)})

    test_set = first_samples(build_test_set(config, args.data_root), conversion.limit)
    d = config.data
    loader = DataLoader(test_set, batch_size=conversion.batch_size or d.eval_batch_size or d.batch_size,
                        num_workers=d.workers)

    t0 = time.time()
    correct = seen = 0
    with torch.no_grad():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            correct += (ann(images).argmax(-1) == labels).sum().item()
            seen += labels.numel()
    ann_acc = correct / max(seen, 1)

    tau = conversion.srp_tau
    plain = evaluate_over_time(snn, loader, timesteps=max(steps), chunk=conversion.chunk, device=device)
    srp = None
    if tau > 0:
        srp = evaluate_over_time(snn, loader, timesteps=max(steps), chunk=conversion.chunk, srp_tau=tau, device=device)
    result = {
        "checkpoint": str(args.checkpoint),
        "model": config.model.name,
        "dataset": d.name,
        "levels": levels,
        "bn": conversion.bn,
        "samples": seen,
        "ann_acc": ann_acc,
        "timesteps": steps,
        "snn_acc": [plain.at(t) for t in steps],
        "snn_acc_all_t": plain.accuracy,
        "srp_tau": tau,
        "seconds": round(time.time() - t0, 2),
    }
    if srp is not None:
        result["srp_acc"] = [srp.at(t) for t in steps]
        result["srp_total_steps"] = [tau + t for t in steps]
        result["srp_acc_all_t"] = srp.accuracy
    _print_table(result)

    out = output_folder(args, "convert")
    out.mkdir(parents=True, exist_ok=True)
    (out / "convert.json").write_text(json.dumps(result, indent=2))
    png = _plot(result, out / "convert.png")
    print(f"wrote {out / 'convert.json'}" + (f" and {png}" if png else " (no plot: matplotlib not installed)"))
    return 0
