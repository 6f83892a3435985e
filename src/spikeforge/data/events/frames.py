"""Event streams to frame sequences: ``float32 [T, 2, H, W]`` event counts.

Channel 0 counts OFF events, channel 1 ON events. The stream is split into
``T`` slices:

- ``split_by="count"``: slice ``i`` holds events ``i*N//T`` to ``(i+1)*N//T - 1``
  in file order (equal event counts within one; TET's CIFAR10-DVS frames);
- ``split_by="time"``: slice ``i`` holds the events with
  ``start + i*D/T <= t < start + (i+1)*D/T`` for the window ``[start, end)``,
  ``D = end - start`` (microseconds); the default window runs from the first
  event to one microsecond after the last.

Then, optionally, each frame is divided by its maximum over both channels
(``normalize="max"``, TET), and the sequence is resized with antialiased
bilinear interpolation (``resize_frames``; PIL's bilinear resize, which TET
uses, also antialiases when shrinking).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["event_frames", "normalize_frames", "resize_frames", "SPLIT_MODES", "NORMALIZE_MODES"]

SPLIT_MODES = ("count", "time")
NORMALIZE_MODES = ("none", "max")


def _slice_index(events: np.ndarray, frames: int, split_by: str, window) -> tuple[np.ndarray, np.ndarray]:
    """Slice index of each kept event, and the mask of kept events."""
    n = events.shape[0]
    if split_by == "count":
        bounds = np.arange(frames + 1, dtype=np.int64) * n // frames
        return np.repeat(np.arange(frames, dtype=np.int64), np.diff(bounds)), np.ones(n, dtype=bool)
    t = events["t"]
    start, end = (int(t.min()), int(t.max()) + 1) if window is None else (int(window[0]), int(window[1]))
    if end <= start:
        raise ValueError(f"window must satisfy start < end, got {window!r}")
    keep = (t >= start) & (t < end)
    return (t[keep] - start) * frames // (end - start), keep


def event_frames(events: np.ndarray, sensor_size: tuple[int, int], frames: int, split_by: str = "count",
                 window: tuple[int, int] | None = None) -> np.ndarray:
    """Count events into ``float32 [frames, 2, H, W]`` (see the module doc).

    Args:
        events: an :data:`~spikeforge.data.events.EVENT_DTYPE` array in time order.
        sensor_size: ``(height, width)``; every event must lie inside it.
        frames: ``T >= 1``.
        split_by: ``"count"`` or ``"time"``.
        window: ``(start, end)`` in microseconds for ``split_by="time"``;
            events outside it are left out.
    """
    height, width = sensor_size
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a positive int, got {frames!r}")
    if split_by not in SPLIT_MODES:
        raise ValueError(f"split_by must be one of {SPLIT_MODES}, got {split_by!r}")
    if window is not None and split_by != "time":
        raise ValueError("window applies to split_by='time' only")
    out = np.zeros(frames * 2 * height * width, dtype=np.float32)
    if events.shape[0] == 0:
        return out.reshape(frames, 2, height, width)
    x, y, p = events["x"].astype(np.int64), events["y"].astype(np.int64), events["p"].astype(np.int64)
    if x.max() >= width or y.max() >= height or p.max() > 1:
        raise ValueError(f"events outside the sensor {height}x{width} (max x {x.max()}, max y {y.max()}) "
                         f"or polarity above 1 (max {p.max()})")
    slot, keep = _slice_index(events, frames, split_by, window)
    flat = ((slot * 2 + p[keep]) * height + y[keep]) * width + x[keep]
    counts = np.bincount(flat, minlength=out.shape[0])
    return counts.astype(np.float32).reshape(frames, 2, height, width)


def normalize_frames(frames: np.ndarray, mode: str) -> np.ndarray:
    """``"max"``: divide each frame ``[2, H, W]`` of ``[T, 2, H, W]`` by its maximum (empty frames stay 0);
    ``"none"``: as is."""
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {mode!r}")
    if mode == "none":
        return frames
    peak = frames.reshape(frames.shape[0], -1).max(axis=1)
    return frames / np.where(peak > 0, peak, 1.0).astype(frames.dtype)[:, None, None, None]


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``[T, C, H, W]`` to ``[T, C, *size]`` (antialiased bilinear, ``align_corners=False``)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    resized = F.interpolate(torch.from_numpy(np.ascontiguousarray(frames)), size=tuple(size), mode="bilinear",
                            align_corners=False, antialias=True)
    return resized.numpy()
