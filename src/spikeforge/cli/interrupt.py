"""Ctrl-C during a run: :class:`Interrupted`, whose message says how to continue (or that nothing was saved).

Standard library only: the entry point catches :class:`Interrupted` before any command module is imported.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["Interrupted", "run_interruptibly"]


class Interrupted(Exception):
    """Ctrl-C during a run; the message says how to continue (or that nothing was saved)."""


def run_interruptibly(command: str, run_dir: Path, fit):
    """``fit()``, turning Ctrl-C into :class:`Interrupted` with a resume hint only when a checkpoint exists."""
    try:
        return fit()
    except KeyboardInterrupt as stop:
        where = str(stop).split(";")[0] + "; " if str(stop) else ""  # "stopped at epoch 2, step 3/6; "
        if (Path(run_dir) / "last.pt").is_file():
            message = f"{where}continue with `spikeforge {command} --resume {run_dir}`"
        else:
            message = f"no checkpoint had been written to {run_dir} yet: nothing was saved"
        raise Interrupted(message) from None
