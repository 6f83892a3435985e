"""Reading run folders back: per-run summaries, a comparison table of several runs (an ablation),
and the run plots redrawn from ``metrics.jsonl`` (e.g. on a machine that has matplotlib when the
training machine had not).

A run folder is what :class:`~spikeforge.train.Trainer` writes: ``config.yaml`` (the resolved recipe)
and ``metrics.jsonl`` (one record per epoch with ``test_<metric>``, ``elapsed`` seconds, and
optionally ``window_fraction`` per spiking layer and ``dgs_b`` per searched layer).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..runtime.plots import plot_history, plot_layer_values, pyplot, save_figure
from ..runtime.tasks import task_class

__all__ = ["Run", "load_run", "redraw_plots", "comparison_table", "plot_comparison"]

#: Per-layer records a run may hold, plotted by :func:`redraw_plots`: key -> (file, y label, title, staircase).
LAYER_PLOTS = {
    "window_fraction": ("window_fraction.png", "fraction inside the surrogate window", "gradient-available membranes",
                        False),
    "dgs_b": ("dgs_b.png", "surrogate temperature b", "DGS: b per layer (value trained with)", True),
}


@dataclass
class Run:
    """One run folder: its resolved recipe and its per-epoch records."""

    path: Path
    config: dict
    records: list[dict]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def task(self):
        return task_class(self.config.get("task", "classification"))

    @property
    def metric(self) -> str:
        return self.task.metric

    def best_record(self) -> dict:
        """The epoch record with the best test metric (NaN values never win)."""
        key = f"test_{self.metric}"
        scored = [r for r in self.records if not math.isnan(r[key])] or self.records
        pick = max if self.task.higher_is_better else min
        return pick(scored, key=lambda r: r[key])

    def summary(self) -> dict:
        """``run, model, neuron, loss, T, epochs, best, best_epoch, final, minutes`` of the run
        (accuracy metrics as fractions; ``minutes`` = training wall clock up to the last record)."""
        model, loss = self.config.get("model", {}), self.config.get("loss", {})
        last, best = self.records[-1], self.best_record()
        key = f"test_{self.metric}"
        return {
            "run": self.name, "model": model.get("name"), "neuron": model.get("neuron"),
            "loss": loss.get("name") or "default", "T": last.get("timesteps"), "epochs": last["epoch"],
            "metric": self.metric, "best": best[key], "best_epoch": best["epoch"], "final": last[key],
            "minutes": last.get("elapsed", math.nan) / 60,
        }


def load_run(path: str | Path) -> Run:
    """Read the run folder ``path``; one-line errors for a missing folder or metrics file."""
    path = Path(path)
    metrics, config = path / "metrics.jsonl", path / "config.yaml"
    if not metrics.is_file():
        raise FileNotFoundError(f"{path}: no metrics.jsonl there (not a spikeforge training run folder)")
    records = []
    for number, line in enumerate(metrics.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{metrics}:{number}: not a JSON record ({error.msg})") from None
    if not records:
        raise ValueError(f"{metrics}: no epoch records yet")
    recipe = (yaml.safe_load(config.read_text()) or {}) if config.is_file() else {}
    run = Run(path, recipe, records)
    try:
        _ = run.task  # validates the recipe's task name
    except ValueError as error:
        raise ValueError(f"{config}: {error}") from None
    if f"test_{run.metric}" not in records[-1]:
        raise ValueError(f"{metrics}: records have no test_{run.metric} (a search run? use its genotype.json)")
    return run


def redraw_plots(records: list[dict], folder: str | Path, metric: str = "acc") -> list[Path]:
    """Write a run's ``history.png`` and, for every per-layer entry of :data:`LAYER_PLOTS` its records
    hold, that plot into ``folder`` from its epoch ``records``; returns the written paths (none without
    matplotlib)."""
    folder = Path(folder)
    written = [plot_history(records, folder / "history.png", metric)]
    for key, (name, ylabel, title, steps) in LAYER_PLOTS.items():
        if key in records[-1]:
            written.append(plot_layer_values(records, key, folder / name, ylabel, title, steps))
    return [p for p in written if p is not None]


def _value(value: float, metric: str) -> str:
    return f"{100 * value:.2f}" if metric == "acc" else f"{value:.4g}"


def comparison_table(runs: list[Run], window_fraction: bool = False) -> str:
    """A Markdown table, one row per run: best (and its epoch) and final test metric, minutes; with
    ``window_fraction``, the final epoch's fraction of membranes inside the surrogate window per
    spiking layer (LSG's gradient-blocking measure; layers numbered in the network's order)."""
    metrics = {run.metric for run in runs}
    if len(metrics) > 1:
        raise ValueError(f"runs measure different metrics ({', '.join(sorted(metrics))}): compare like with like")
    metric = metrics.pop()
    unit = " %" if metric == "acc" else ""
    header = ["run", "model", "neuron", "loss", "T", "epochs", f"best {metric}{unit} (epoch)",
              f"final {metric}{unit}", "minutes"]
    layers = max((len(r.records[-1].get("window_fraction", {})) for r in runs), default=0) if window_fraction else 0
    header += [f"window L{i + 1}" for i in range(layers)]
    rows = []
    for run in runs:
        s = run.summary()
        row = [s["run"], s["model"], s["neuron"], s["loss"], s["T"], s["epochs"],
               f"{_value(s['best'], metric)} ({s['best_epoch']})", _value(s["final"], metric), f"{s['minutes']:.1f}"]
        fractions = list(run.records[-1].get("window_fraction", {}).values())
        row += [f"{f:.3f}" for f in fractions] + ["-"] * (layers - len(fractions))
        rows.append(row)
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def plot_comparison(runs: list[Run], path: str | Path) -> Path | None:
    """Test metric against epoch for every run on one axis, and (when every run recorded it) the
    final window fraction per layer beside it; None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    with_fractions = all("window_fraction" in run.records[-1] for run in runs)
    fig, axes = plt.subplots(1, 2 if with_fractions else 1, figsize=(11 if with_fractions else 6, 4), squeeze=False)
    ax = axes[0][0]
    metric = runs[0].metric
    scale = 100 if metric == "acc" else 1
    for run in runs:
        ax.plot([r["epoch"] for r in run.records], [scale * r[f"test_{metric}"] for r in run.records], label=run.name)
    ax.set(xlabel="epoch", ylabel=f"test {metric}" + (" (%)" if metric == "acc" else ""), title="test metric")
    if with_fractions:
        side = axes[0][1]
        for run in runs:
            fractions = list(run.records[-1]["window_fraction"].values())
            side.plot(range(1, len(fractions) + 1), fractions, marker="o", label=run.name)
        side.set(xlabel="spiking layer", ylabel="fraction inside the surrogate window", title="final epoch")
    return save_figure(plt, fig, [a for row in axes for a in row], Path(path), fontsize=7)
