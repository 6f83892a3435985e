"""Training augmentation: of frame sequences (TET's CIFAR10-DVS flip and roll) and of event streams."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["FlipRoll", "DropEvents"]


class FlipRoll:
    """Random horizontal flip and cyclic shift of a frame sequence ``[T, C, H, W]``.

    With probability 1/2 (if ``flip``) the width axis is reversed; then the
    sequence is rolled (``torch.roll``: pixels leaving one border re-enter at
    the other) by offsets drawn independently and uniformly from
    ``{-max_shift, ..., max_shift}`` along the height and the width. Every
    frame of a sample gets the same flip and shift. Random numbers come from
    torch (``generator`` if given), which DataLoader workers seed independently.
    """

    def __init__(self, max_shift: int = 5, flip: bool = True, generator: torch.Generator | None = None) -> None:
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
            raise ValueError(f"max_shift must be a non-negative int, got {max_shift!r}")
        self.max_shift = max_shift
        self.flip = flip
        self.generator = generator

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if self.flip and bool(torch.rand((), generator=self.generator) < 0.5):
            frames = frames.flip(-1)
        if self.max_shift:
            dy, dx = torch.randint(-self.max_shift, self.max_shift + 1, (2,), generator=self.generator).tolist()
            frames = torch.roll(frames, shifts=(dy, dx), dims=(-2, -1))
        return frames

    def __repr__(self) -> str:
        return f"FlipRoll(max_shift={self.max_shift}, flip={self.flip})"


class DropEvents:
    """Drop each event of a stream independently with probability ``p`` (an event transform).

    Takes and returns an :data:`~spikeforge.data.events.EVENT_DTYPE` array (any
    structured array of events); the kept events stay in order. Random numbers
    come from torch (``generator`` if given), which DataLoader workers seed
    independently.
    """

    def __init__(self, p: float = 0.1, generator: torch.Generator | None = None) -> None:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ValueError(f"p must be a number in [0, 1), got {p!r}")
        self.p = float(p)
        self.generator = generator

    def __call__(self, events: np.ndarray) -> np.ndarray:
        keep = torch.rand(events.shape[0], generator=self.generator, dtype=torch.float64) >= self.p
        return events[keep.numpy()]

    def __repr__(self) -> str:
        return f"DropEvents(p={self.p})"
