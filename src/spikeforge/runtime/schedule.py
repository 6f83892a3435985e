"""Learning-rate schedules as pure functions of training progress (exactly resumable)."""

from __future__ import annotations

import math

__all__ = ["SCHEDULES", "lr_at"]

#: Schedule names :func:`lr_at` knows.
SCHEDULES = ("cosine", "multistep", "constant")


def lr_at(name: str, base_lr: float, progress: float, total: float, warmup: float = 0.0, min_lr: float = 0.0,
          milestones=(), gamma: float = 0.1) -> float:
    """Learning rate after ``progress`` of ``total`` epochs (fractions allowed).

    ``cosine``: linear warm-up from 0 over ``warmup`` epochs, then cosine from
    ``base_lr`` down to ``min_lr`` at ``total``. ``constant``: warm-up, then flat.
    ``multistep``: warm-up, then ``base_lr * gamma**k`` once ``k`` of the
    ``milestones`` (epochs) are reached (``torch.optim.lr_scheduler.MultiStepLR``).
    """
    if warmup > 0 and progress < warmup:
        return base_lr * progress / warmup
    if name == "constant":
        return base_lr
    if name == "multistep":
        return base_lr * gamma ** sum(progress >= m for m in milestones)
    if name == "cosine":
        span = max(total - warmup, 1e-12)
        frac = min(max((progress - warmup) / span, 0.0), 1.0)
        return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * frac))
    raise ValueError(f"unknown schedule {name!r}: expected 'cosine', 'multistep' or 'constant'")
