"""Run-folder outputs: metrics as JSON lines, TensorBoard when installed, a plot when matplotlib is."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["MetricsLog", "pyplot", "save_figure", "plot_history", "plot_window_fractions"]


class MetricsLog:
    """Appends one JSON object per record to ``run_dir/metrics.jsonl`` (and TensorBoard if available)."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            step = record.get("epoch", 0)
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, epoch: int) -> None:
        """Drop records of epochs after ``epoch`` (a resumed run redoes them)."""
        kept = [r for r in self.read() if r.get("epoch", 0) <= epoch]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


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


def plot_window_fractions(records: list[dict], path: Path) -> Path | None:
    """LSG's gradient-blocking measure per spiking layer against epoch (one line per layer)."""
    plt = pyplot()
    if plt is None:
        return None
    epochs = [r["epoch"] for r in records]
    layers = list(records[-1]["window_fraction"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, layer in enumerate(layers):
        ax.plot(epochs, [r["window_fraction"].get(layer) for r in records], label=f"{i + 1}: {layer}")
    ax.set(xlabel="epoch", ylabel="fraction inside the surrogate window", title="gradient-available membranes")
    return save_figure(plt, fig, [ax], path, fontsize=6, ncol=2)


def plot_history(records: list[dict], path: Path, metric: str = "acc") -> Path | None:
    """``metric`` (accuracy in percent for ``"acc"``) and loss against epoch as a PNG; None when
    matplotlib is not installed."""
    plt = pyplot()
    if plt is None:
        return None
    epochs = [r["epoch"] for r in records]
    scale, label = (100, "accuracy (%)") if metric == "acc" else (1, metric.replace("_", " "))
    fig, (ax_metric, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "test"):
        ax_metric.plot(epochs, [scale * r[f"{split}_{metric}"] for r in records], label=split)
        ax_loss.plot(epochs, [r[f"{split}_loss"] for r in records], label=split)
    ax_metric.set(xlabel="epoch", ylabel=label, title=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    return save_figure(plt, fig, [ax_metric, ax_loss], path)
