"""An :class:`~spikeforge.analysis.EnergyReport` as a printed table, JSON, CSV and a bar plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..runtime.plots import pyplot, save_figure
from .energy import EnergyReport

__all__ = ["format_table", "write_json", "write_csv", "energy_figure", "plot_energy", "save_report"]

_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_LAYER_COLUMNS = ("name", "kind", "analog_input", "input_rate", "ann_macs", "ann_acs", "snn_macs", "snn_sops",
                  "ann_energy_pj", "snn_energy_pj")


def _count(value: float) -> str:
    """``1234567 -> "1.23M"``; ``0 -> "-"``."""
    if value == 0:
        return "-"
    for scale, prefix in _SI:
        if abs(value) >= scale:
            return f"{value / scale:.3g}{prefix}"
    return f"{value:.3g}"


def _joules(picojoules: float) -> str:
    """Energy with a readable unit: ``2.5e6 -> "2.5 uJ"``."""
    for scale, unit in ((1e9, "mJ"), (1e6, "uJ"), (1e3, "nJ")):
        if abs(picojoules) >= scale:
            return f"{picojoules / scale:.3g} {unit}"
    return f"{picojoules:.3g} pJ"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def format_table(report: EnergyReport) -> str:
    """Per-layer operations and energy per sample, totals, the ANN/SNN ratio, and the neurons' firing rates."""
    data = report.to_dict()
    totals = data["totals"]
    width = max([len("layer"), len("total")] + [len(layer["name"]) for layer in data["layers"]])
    header = (f"{'layer':<{width}}  {'kind':<6} {'in rate':>8} {'ANN MACs':>9} {'ANN ACs':>9} "
              f"{'SNN MACs':>9} {'SNN SOPs':>9} {'ANN energy':>11} {'SNN energy':>11}")
    lines = [f"per sample; SNN over T={data['timesteps']} steps; {data['samples']} samples; "
             f"E_MAC={report.energy.e_mac:g} pJ, E_AC={report.energy.e_ac:g} pJ", header, "-" * len(header)]
    for layer in data["layers"]:
        rate = "analog" if layer["input_rate"] is None else f"{layer['input_rate']:.4f}"
        lines.append(
            f"{layer['name']:<{width}}  {layer['kind']:<6} {rate:>8} {_count(layer['ann_macs']):>9} "
            f"{_count(layer['ann_acs']):>9} {_count(layer['snn_macs']):>9} {_count(layer['snn_sops']):>9} "
            f"{_joules(layer['ann_energy_pj']):>11} {_joules(layer['snn_energy_pj']):>11}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"{'total':<{width}}  {'':<6} {'':>8} {_count(totals['ann_macs']):>9} {_count(totals['ann_acs']):>9} "
        f"{_count(totals['snn_macs']):>9} {_count(totals['snn_sops']):>9} "
        f"{_joules(totals['ann_energy_pj']):>11} {_joules(totals['snn_energy_pj']):>11}"
    )
    lines.append(f"ANN / SNN energy: {_ratio(totals['ann_over_snn'])}")
    if totals["snn_macs_static_once"] is not None and data["timesteps"] > 1:
        lines.append(
            f"with the analog-input layers computed once (static input): SNN MACs "
            f"{_count(totals['snn_macs_static_once'])}, SNN energy {_joules(totals['snn_energy_static_once_pj'])}, "
            f"ANN / SNN {_ratio(totals['ann_over_snn_static_once'])}"
        )
    if data["uncounted"]:
        lines.append(f"not counted (unsupported layers): {', '.join(data['uncounted'])}")
    if data["neurons"]:
        name_width = max(len("neuron layer"), *(len(rate["name"]) for rate in data["neurons"]))
        lines.append("")
        lines.append(f"{'neuron layer':<{name_width}}  {'rate':>7}  per step")
        for rate in data["neurons"]:
            steps = " ".join(f"{r:.4f}" for r in rate["rate_per_step"])
            lines.append(f"{rate['name']:<{name_width}}  {rate['rate']:>7.4f}  {steps}")
        lines.append(f"{'mean (all neurons)':<{name_width}}  {totals['mean_firing_rate']:>7.4f}")
    return "\n".join(lines)


def write_json(report: EnergyReport, path: str | Path, meta: dict | None = None) -> Path:
    """``report.to_dict()`` (after the entries of ``meta``, e.g. the checkpoint) as JSON."""
    path = Path(path)
    path.write_text(json.dumps({**(meta or {}), **report.to_dict()}, indent=2))
    return path


def write_csv(report: EnergyReport, path: str | Path) -> Path:
    """One row per layer and a ``total`` row; operations and energies (pJ) per sample."""
    path = Path(path)
    data = report.to_dict()
    totals = data["totals"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_LAYER_COLUMNS)
        writer.writeheader()
        for layer in data["layers"]:
            writer.writerow({key: layer[key] for key in _LAYER_COLUMNS})
        writer.writerow({"name": "total", **{key: totals[key] for key in _LAYER_COLUMNS[4:]}})
    return path


#: Height of one bar row of the energy plot, in inches (room for an 8 pt label).
_ROW_INCHES = 0.2


def _shared_prefix(names: list[str]) -> str:
    """The leading dotted components every name shares, each name keeping its last one: ``"backbone."``."""
    shared = []
    for parts in zip(*(name.split(".")[:-1] for name in names)):
        if len(set(parts)) > 1:
            break
        shared.append(parts[0] + ".")
    return "".join(shared)


def _bar_labels(ax, names: list[str], prefix: str) -> None:
    """``names`` (without ``prefix``) as horizontal row labels of ``ax``, first at the top."""
    ax.set_yticks(range(len(names)), [name.removeprefix(prefix) for name in names], fontsize=8)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_ylabel(f"layer in {prefix.rstrip('.')}" if prefix else "layer")


def _layer_label(layer: dict) -> str:
    """A layer's name, with its kind when the name does not end with it: ``fc.0 (linear)``, ``stem.0.conv``."""
    return layer["name"] if layer["name"].split(".")[-1] == layer["kind"] else f"{layer['name']} ({layer['kind']})"


def energy_figure(plt, report: EnergyReport, title: str = ""):
    """The figure of :func:`plot_energy` and its two axes: one horizontal bar row per layer, the
    figure as tall as its rows."""
    data = report.to_dict()
    layers, rates = data["layers"], data["neurons"]
    prefix = _shared_prefix([layer["name"] for layer in layers] + [rate["name"] for rate in rates])
    rows = (max(len(layers), 3), max(len(rates), 3))  # a panel of few rows still has room for its labels
    fig, (ax_energy, ax_rate) = plt.subplots(2, 1, figsize=(9, 2.5 + _ROW_INCHES * sum(rows)), height_ratios=rows)
    y = range(len(layers))
    ax_energy.barh([i - 0.2 for i in y], [layer["ann_energy_pj"] for layer in layers], 0.4, label="ANN")
    ax_energy.barh([i + 0.2 for i in y], [layer["snn_energy_pj"] for layer in layers], 0.4,
                   label=f"SNN (T={data['timesteps']})")
    ax_energy.set_xscale("log")
    _bar_labels(ax_energy, [_layer_label(layer) for layer in layers], prefix)
    ax_energy.set(xlabel="energy per sample (pJ)", title=title or "energy per layer")
    ax_rate.barh(range(len(rates)), [rate["rate"] for rate in rates], 0.6, label="mean over steps")
    _bar_labels(ax_rate, [rate["name"] for rate in rates], prefix)
    ax_rate.set(xlabel="spikes per neuron per step", title="firing rate per neuron layer")
    return fig, [ax_energy, ax_rate]


def plot_energy(report: EnergyReport, path: str | Path, title: str = "") -> Path | None:
    """Bar plot per layer: ANN and SNN energy (log scale) and, below, the firing rate of each
    neuron layer. Returns None when matplotlib is not installed."""
    plt = pyplot()
    if plt is None:
        return None
    return save_figure(plt, *energy_figure(plt, report, title), Path(path), fontsize=7)


def save_report(report: EnergyReport, out_dir: str | Path, meta: dict | None = None,
                stem: str = "energy") -> list[Path]:
    """Write ``<stem>.json``, ``<stem>.csv`` and, with matplotlib, ``<stem>.png`` to ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_json(report, out / f"{stem}.json", meta), write_csv(report, out / f"{stem}.csv")]
    png = plot_energy(report, out / f"{stem}.png", title=(meta or {}).get("model", ""))
    return paths + ([png] if png is not None else [])
