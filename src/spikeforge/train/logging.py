"""Run-folder outputs: metrics as JSON lines, TensorBoard when installed, a plot when matplotlib is."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .runfolder import atomic_write, write_error

__all__ = ["MetricsLog", "pyplot", "save_figure", "history_figure", "plot_history", "window_fraction_figure",
           "plot_window_fractions"]


class MetricsLog:
    """Appends one JSON object per record to ``run_dir/metrics.jsonl``; with the ``tensorboard``
    package installed, also writes TensorBoard scalars to ``run_dir/tensorboard`` (grouped tags,
    see :func:`tensorboard_tag`); without it, TensorBoard is simply skipped."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.writer = _summary_writer(Path(run_dir) / "tensorboard") if tensorboard else None

    @property
    def tensorboard(self) -> bool:
        """Whether scalars go to TensorBoard."""
        return self.writer is not None

    def write(self, record: dict, step: int | None = None, skip: tuple[str, ...] = ()) -> None:
        """Append ``record``; to TensorBoard its numbers at ``step`` (default: the record's epoch),
        except the keys starting with one of ``skip``."""
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())  # on disk before the checkpoint that counts the epoch replaces last.pt
        except OSError as err:
            raise write_error(self.path, err) from None
        numbers = {k: v for k, v in record.items() if k != "epoch" and not k.startswith(skip)}
        self.scalars({tensorboard_tag(k): v for k, v in _flatten(numbers, "/").items()},
                     record.get("epoch", 0) if step is None else step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """TensorBoard scalars ``{tag: value}`` at ``step`` (nothing without TensorBoard)."""
        if self.writer is None:
            return
        for tag, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def hparams(self, params: dict, metrics: list[str]) -> None:
        """A nested recipe as TensorBoard hyperparameters (dotted keys), shown beside the scalar tags ``metrics``."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        flat = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in _flatten(params, ".").items()}
        for summary in hparams(flat, dict.fromkeys(metrics, 0.0)):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def read(self) -> list[dict]:
        """The records in order (a torn last line, from a write that was cut off, left out)."""
        return self._parse()[0]

    def _parse(self) -> tuple[list[dict], bool]:
        """``(records, whether the last line is torn)``; a line that is not JSON elsewhere is a one-line
        ValueError naming ``file:line``."""
        if not self.path.exists():
            return [], False
        lines = self.path.read_text().splitlines()
        last = max((n for n, line in enumerate(lines, 1) if line.strip()), default=0)
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                if number == last:
                    return records, True
                raise ValueError(f"{self.path}:{number}: not a JSON record ({err.msg})") from None
        return records, False

    def rewind(self, epoch: int, record: dict | None = None, warn=print) -> None:
        """Keep one record for each epoch up to ``epoch`` (what a resumed run's checkpoint has done; it
        redoes the later ones), adding ``record`` when it is that epoch's and the file lacks it (a stop
        between the two writes of an older version); a torn last line goes with a ``warn`` line.
        Rewritten atomically."""
        records, torn = self._parse()
        if torn:
            warn(f"warning: {self.path}: dropped its torn last line (a write that was cut off)")
        kept = {r.get("epoch", 0): r for r in records if r.get("epoch", 0) <= epoch}
        if record is not None and record.get("epoch") == epoch and epoch not in kept:
            kept[epoch] = record
        text = "".join(json.dumps(kept[e]) + "\n" for e in sorted(kept))
        atomic_write(self.path, lambda f: f.write(text.encode()))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


#: Record-key prefixes that become TensorBoard groups: ``test_acc`` -> ``test/acc``.
TAG_GROUPS = ("train_", "test_", "val_", "arch_")


def tensorboard_tag(key: str) -> str:
    """The TensorBoard tag of a record key: ``train_loss`` -> ``train/loss``, others unchanged."""
    for prefix in TAG_GROUPS:
        if key.startswith(prefix):
            return f"{prefix[:-1]}/{key[len(prefix):]}"
    return key


def _flatten(values: dict, sep: str, prefix: str = "") -> dict:
    """Nested mappings as one level: ``{"a": {"b": 1}}`` -> ``{"a<sep>b": 1}``."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= _flatten(value, sep, f"{prefix}{key}{sep}")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _summary_writer(log_dir: Path):
    """A TensorBoard ``SummaryWriter`` on ``log_dir``, or None when ``tensorboard`` is not installed."""
    from ..optional import MissingDependency, require

    try:
        tensorboard = require("torch.utils.tensorboard", "TensorBoard logging", "tensorboard")
    except MissingDependency:
        return None
    return tensorboard.SummaryWriter(str(log_dir))


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


def window_fraction_figure(plt, records: list[dict]):
    """The figure of :func:`plot_window_fractions` and its axes."""
    epochs = [r["epoch"] for r in records]
    layers = list(records[-1]["window_fraction"])
    fig, ax = plt.subplots(figsize=(7, 4))
    style = _epoch_axes([ax], epochs)
    for i, layer in enumerate(layers):
        ax.plot(epochs, [r["window_fraction"].get(layer) for r in records], label=f"{i + 1}: {layer}", **style)
    ax.set(xlabel="epoch", ylabel="fraction inside the surrogate window", title="gradient-available membranes")
    return fig, [ax]


def plot_window_fractions(records: list[dict], path: Path) -> Path | None:
    """LSG's gradient-blocking measure per spiking layer against epoch (one line per layer)."""
    plt = pyplot()
    if plt is None:
        return None
    return save_figure(plt, *window_fraction_figure(plt, records), path, fontsize=6, ncol=2)


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
