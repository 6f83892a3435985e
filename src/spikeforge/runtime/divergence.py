"""Divergence: a NaN or infinite loss, gradient, parameter or batch-norm statistic stops a run.

One fused max-abs reduction per tensor and a single host sync per optimiser step
(:func:`check_step`); the error names the first non-finite tensor and the newest
checkpoint of the run folder, or says there is none.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["TrainingDiverged", "last_checkpoint", "watched", "all_finite", "first_nonfinite", "diverged", "check_step"]


class TrainingDiverged(RuntimeError):
    """A loss, gradient, parameter or buffer (batch-norm statistic) became NaN or infinite."""

    exit_code = 3  # of the command line


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """``run_dir/last.pt`` when it exists (a run ``--resume`` can continue), else None."""
    path = Path(run_dir) / "last.pt"
    return path if path.is_file() else None


def watched(model: nn.Module, loss: Tensor | None = None, grads: bool = False) -> list[tuple[str, Tensor]]:
    """What training keeps finite, named: the loss, the gradients (``grads``: not under loss scaling,
    where infinite gradients only skip a step), the parameters and the floating-point buffers."""
    named = [] if loss is None else [("loss", loss)]
    params = list(model.named_parameters())
    if grads:
        named += [(f"gradient of {name}", p.grad) for name, p in params if p.grad is not None]
    named += [(f"parameter {name}", p) for name, p in params]
    return named + [(f"buffer {name}", b) for name, b in model.named_buffers() if b.is_floating_point()]


@torch.no_grad()
def all_finite(tensors) -> Tensor:
    """Whether every value of ``tensors`` is finite, as one boolean on their device (no host sync):
    one fused max-abs reduction per tensor, then one check."""
    tensors = [t for t in tensors if t.numel()]
    return torch.stack(torch._foreach_norm(tensors, float("inf"))).isfinite().all()


def first_nonfinite(named: list[tuple[str, Tensor]]) -> str | None:
    """``"<name> is <value>"`` for the first of ``named`` holding a NaN or infinity; None if none does."""
    if all_finite(t for _, t in named):
        return None
    for name, tensor in named:
        bad = tensor.detach()[~tensor.detach().isfinite()]
        if bad.numel():
            return f"{name} is {bad[0].item()}"
    return None


def diverged(what: str, run_dir: str | Path) -> TrainingDiverged:
    """The one-line error for ``what`` went non-finite, naming the newest checkpoint of ``run_dir``."""
    saved = last_checkpoint(run_dir)
    return TrainingDiverged(f"{what}: stopped; " + (f"the last good checkpoint is {saved}" if saved
                                                    else "no checkpoint was written yet"))


def check_step(model: nn.Module, loss: Tensor, scaler, where: str, run_dir: str | Path,
               reduce=lambda flag: flag) -> None:
    """TrainingDiverged unless an optimiser step left ``loss`` and ``model``'s tensors finite (the
    gradients only without active loss scaling); ``reduce`` sums a flag over the ranks. One host sync."""
    named = watched(model, loss, grads=not scaler.is_enabled())
    if reduce((~all_finite(t for _, t in named)).int()).item():
        what = first_nonfinite(named) or "a value on another rank is not finite"
        raise diverged(f"{what} {where}", run_dir)
