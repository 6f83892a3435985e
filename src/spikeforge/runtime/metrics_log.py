"""A run's metrics: one JSON line per epoch in ``metrics.jsonl``, and TensorBoard scalars when installed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..optional import MissingDependency, require
from .runfolder import atomic_write, write_error

__all__ = ["MetricsLog", "tensorboard_tag"]


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


    try:
        tensorboard = require("torch.utils.tensorboard", "TensorBoard logging", "tensorboard")
    except MissingDependency:
        return None
    return tensorboard.SummaryWriter(str(log_dir))
