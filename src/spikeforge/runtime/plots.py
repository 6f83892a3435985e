"""Run plots as PNG files, drawn when matplotlib is installed (None otherwise): the metric and loss
history of a run, and LSG's window fractions per spiking layer."""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["pyplot", "save_figure", "history_figure", "plot_history", "layer_values_figure", "plot_layer_values"]


def pyplot():
    """matplotlib's pyplot on a file backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(plt, fig, axes, path: Path, **legend) -> Path:
    """Grid and legend on every axis, then write ``fig`` to ``path`` (PNG) and close it."""
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(**legend)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


#: Histories up to this many epochs mark each epoch's point (one epoch is then visible at all).
_MARKED_EPOCHS = 30


def _epoch_axes(axes: list, epochs: list) -> dict:
    """Whole-number epoch ticks on ``axes``, half an epoch of margin; the line style for ``epochs``:
    markers when they are few."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    return {"marker": "o", "markersize": 4} if len(epochs) <= _MARKED_EPOCHS else {}


def layer_values_figure(plt, records: list[dict], key: str, ylabel: str, title: str, steps: bool = False):
    """One line per layer of the records' ``key`` mapping (layer -> value) against epoch; ``steps``:
    a value holds until the next record (a staircase). Returns the figure and its axes."""
    rows = [r for r in records if key in r]
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    style = _epoch_axes([ax], epochs)
    for i, layer in enumerate(rows[-1][key]):
        values = [r[key].get(layer, math.nan) for r in rows]
        if steps:
            ax.step(epochs, values, where="post", label=f"{i + 1}: {layer}")
        else:
            ax.plot(epochs, values, label=f"{i + 1}: {layer}", **style)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    return fig, [ax]


def plot_layer_values(records: list[dict], key: str, path: Path, ylabel: str, title: str,
                      steps: bool = False) -> Path | None:
    """:func:`layer_values_figure` as a PNG at ``path``; None without matplotlib or without a record
    that has ``key``."""
    plt = pyplot()
    if plt is None or not any(key in r for r in records):
        return None
    return save_figure(plt, *layer_values_figure(plt, records, key, ylabel, title, steps), Path(path),
                       fontsize=6, ncol=2)


def history_figure(plt, records: list[dict], metric: str = "acc"):
    """The figure of :func:`plot_history` and its two axes (metric, loss)."""
    epochs = [r["epoch"] for r in records]
    scale, label = (100, "accuracy (%)") if metric == "acc" else (1, metric.replace("_", " "))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax_metric, ax_loss = axes
    style = _epoch_axes(axes, epochs)
    for split in ("train", "test"):
        ax_metric.plot(epochs, [scale * r[f"{split}_{metric}"] for r in records], label=split, **style)
        ax_loss.plot(epochs, [r[f"{split}_loss"] for r in records], label=split, **style)
    ax_metric.set(xlabel="epoch", ylabel=label, title=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    return fig, list(axes)


def plot_history(records: list[dict], path: Path, metric: str = "acc") -> Path | None:
    """``metric`` (accuracy in percent for ``"acc"``) and loss against epoch as a PNG; None when
    matplotlib is not installed."""
    plt = pyplot()
    if plt is None:
        return None
    return save_figure(plt, *history_figure(plt, records, metric), path)
