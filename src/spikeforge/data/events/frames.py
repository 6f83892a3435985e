"""Event streams to frame sequences: ``float32 [T, 2, H, W]`` event counts.

Channel 0 counts OFF events, channel 1 ON events. ``sensor_size`` is the
sensor's **(height, width)**: a :class:`SensorSize` or a plain pair in that
order; tonic's ``(width, height, polarities)`` goes through
:meth:`SensorSize.from_tonic`.

The stream (in time order) is split into frames by one of ``frames=T`` (with
``split_by="count"``: equal event counts, or ``"time"``: equal durations),
``duration`` (microseconds per frame) or ``event_count`` (events per frame).
Where the frame edges fall is the ``boundaries`` mode; the three modes differ
only there (count: by up to ``T - 1`` events per frame; time: by the frame
length rounded down to whole microseconds) and in what they drop:

``"spikeforge"`` (default)
    - count: frame ``i`` holds events ``i*N//T`` to ``(i+1)*N//T - 1`` (sizes differ by at most one);
    - time: frame ``i`` holds ``start + i*D/T <= t < start + (i+1)*D/T`` (exact rational edges) for
      the window ``[start, end)``, ``D = end - start``; the default window runs from the first event to
      one microsecond after the last, so no event is dropped;
    - duration ``d``: frame ``i`` holds ``start + i*d <= t < start + (i+1)*d``, ``ceil(D/d)`` frames;
    - event_count ``c``: frames of ``c`` events, the last one holds the rest (``ceil(N/c)`` frames).
``"spikingjelly"`` (SpikingJelly's ``integrate_events_by_fixed_frames_number`` and
``integrate_events_by_fixed_duration``, checked against SpikingJelly 2.0)
    - count (``split_by='number'``): frames of ``N//T`` events, the last one also takes the ``N mod T`` rest;
    - time: ``dt = (t_last - t_first) // T`` whole microseconds; frame ``i`` starts at the first event with
      ``t >= t_first + i*dt``, the last frame takes everything after its start;
    - duration ``d``: ``ceil((t_last - t_first) / d)`` frames (at least one; SpikingJelly fails on a
      zero-length recording) of ``t_first + i*d <= t < t_first + (i+1)*d``, the last takes the rest.
    Where a time frame is empty SpikingJelly raises an IndexError; here the frame is empty.
``"tonic"`` (tonic's ``ToFrame`` without overlap, ``include_incomplete=False``; checked against tonic 1.7)
    - count (``n_event_bins``): frames of ``N//T`` events; the ``N mod T`` last events are dropped;
    - time (``n_time_bins``): ``dt = (t_last - t_first) // T``; frame ``i`` holds
      ``t_first + i*dt <= t < t_first + (i+1)*dt``; later events (at least the last one) are dropped;
    - duration (``time_window``): ``max(1, (D - d) // d + 1)`` frames of
      ``t_first + i*d <= t < t_first + (i+1)*d``, ``D = t_last - t_first``;
    - event_count: ``max(1, (N - c) // c + 1)`` frames of ``c`` events (all ``N`` when ``N < c``).
    tonic's frames are int16 (a pixel above 32,767 events wraps); these are float32 counts.

``window`` applies to the ``"spikeforge"`` mode only (the others take their edges
from the events; select a window beforehand). Then, optionally, each frame is
divided by its maximum over both channels (``normalize="max"``, TET), and the
sequence is resized with antialiased bilinear interpolation (``resize_frames``;
PIL's bilinear resize, which TET uses, also antialiases when shrinking).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["SensorSize", "as_sensor_size", "event_frames", "normalize_frames", "resize_frames", "SPLIT_MODES",
           "NORMALIZE_MODES", "BOUNDARY_MODES"]

SPLIT_MODES = ("count", "time")
NORMALIZE_MODES = ("none", "max")
BOUNDARY_MODES = ("spikeforge", "spikingjelly", "tonic")


class SensorSize(NamedTuple):
    """A sensor's size in pixels, ``(height, width)`` by name: ``SensorSize(height=240, width=320)``.

    tonic writes sizes as ``(width, height, polarities)``: convert them with
    :meth:`from_tonic`, and back with :meth:`to_tonic`.
    """

    height: int
    width: int

    @classmethod
    def from_tonic(cls, size) -> SensorSize:
        """tonic's ``sensor_size`` ``(width, height[, polarities])``, e.g. ``tonic.datasets.NMNIST.sensor_size``;
        ``polarities`` must be 2 (frames here always have an OFF and an ON channel)."""
        size = tuple(size)
        if len(size) not in (2, 3) or (len(size) == 3 and size[2] != 2):
            raise ValueError(f"SensorSize.from_tonic expects tonic's (width, height) or (width, height, 2), "
                             f"got {size!r}")
        return as_sensor_size((size[1], size[0]))

    def to_tonic(self) -> tuple[int, int, int]:
        """tonic's ``sensor_size``: ``(width, height, 2)``."""
        return (self.width, self.height, 2)


def as_sensor_size(size) -> SensorSize:
    """A :class:`SensorSize` from a SensorSize or a ``(height, width)`` pair of positive ints; else ValueError."""
    size = tuple(size)
    if len(size) == 3:
        raise ValueError(f"sensor_size {size!r} has 3 entries; pass (height, width), or "
                         f"SensorSize.from_tonic({size!r}) for tonic's (width, height, polarities)")
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0
                                 for s in size):
        raise ValueError(f"sensor_size must be (height, width), two positive ints, got {size!r}")
    return SensorSize(int(size[0]), int(size[1]))


def _ranges(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Event indices and frame numbers of the contiguous index ranges ``[starts[i], ends[i])``."""
    lengths = np.maximum(np.asarray(ends, dtype=np.int64) - starts, 0)
    slot = np.repeat(np.arange(lengths.shape[0], dtype=np.int64), lengths)
    offsets = np.cumsum(lengths) - lengths
    return np.arange(slot.shape[0], dtype=np.int64) - offsets[slot] + np.asarray(starts, dtype=np.int64)[slot], slot


def _by_time(t: np.ndarray, start: int, step: int, count: int, last_takes_rest: bool):
    """Frames ``start + i*step <= t < start + (i+1)*step``, ``i < count`` (the last to the end if asked)."""
    edges = np.searchsorted(t, start + np.arange(count + 1, dtype=np.int64) * step, side="left")
    if last_takes_rest:
        edges[-1] = t.shape[0]
    return _ranges(edges[:-1], edges[1:])


def _spikeforge(events, n, frames, split_by, duration, event_count, window):
    if event_count is not None:
        slot = np.arange(n, dtype=np.int64) // event_count
        return np.arange(n, dtype=np.int64), slot, -(-n // event_count)
    if frames is not None and split_by == "count":
        edges = np.arange(frames + 1, dtype=np.int64) * n // frames
        return (*_ranges(edges[:-1], edges[1:]), frames)
    t = events["t"]
    if window is None and n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), frames or 0
    start, end = (int(t.min()), int(t.max()) + 1) if window is None else (int(window[0]), int(window[1]))
    if end <= start:
        raise ValueError(f"window must satisfy start < end, got {window!r}")
    keep = np.flatnonzero((t >= start) & (t < end))
    if frames is not None:
        return keep, (t[keep] - start) * frames // (end - start), frames
    return keep, (t[keep] - start) // duration, -(-(end - start) // duration)


def _spikingjelly(events, n, frames, split_by, duration):
    if frames is not None and split_by == "count":
        edges = np.append(np.arange(frames, dtype=np.int64) * (n // frames), n)
        return (*_ranges(edges[:-1], edges[1:]), frames)
    t = events["t"]
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), frames or 0
    if frames is not None:
        return (*_by_time(t, int(t[0]), (int(t[-1]) - int(t[0])) // frames, frames, True), frames)
    count = max(1, -(-(int(t[-1]) - int(t.min())) // duration))
    return (*_by_time(t, int(t.min()), duration, count, True), count)


def _tonic(events, n, frames, split_by, duration, event_count):
    if event_count is not None:
        size = min(event_count, n)
        count = max(1, (n - size) // event_count + 1)
        starts = np.arange(count, dtype=np.int64) * event_count
        return (*_ranges(starts, np.minimum(starts + size, n)), count)
    if frames is not None and split_by == "count":
        starts = np.arange(frames, dtype=np.int64) * (n // frames)
        return (*_ranges(starts, starts + n // frames), frames)
    t = events["t"]
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), frames or 0
    span = int(t[-1]) - int(t[0])
    if frames is not None:
        return (*_by_time(t, int(t[0]), span // frames, frames, False), frames)
    count = max(1, (span - duration) // duration + 1)
    return (*_by_time(t, int(t[0]), duration, count, False), count)


def _positive_int(name: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def event_frames(events: np.ndarray, sensor_size: SensorSize | tuple[int, int], frames: int | None = None,
                 split_by: str = "count", window: tuple[int, int] | None = None, *, boundaries: str = "spikeforge",
                 duration: int | None = None, event_count: int | None = None) -> np.ndarray:
    """Count events into ``float32 [T, 2, H, W]`` (see the module doc for where frames start and end).

    Args:
        events: an :data:`~spikeforge.data.events.EVENT_DTYPE` array in time order.
        sensor_size: ``(height, width)`` or a :class:`SensorSize` (tonic's ``(width, height, polarities)``:
            ``SensorSize.from_tonic(...)``); every event must lie inside it.
        frames: a fixed ``T >= 1``, split by ``split_by`` (``"count"`` or ``"time"``). Exactly one of
            ``frames``, ``duration`` and ``event_count`` is given.
        window: ``(start, end)`` in microseconds for ``split_by="time"`` or ``duration``, ``"spikeforge"``
            boundaries only; events outside it are left out.
        boundaries: ``"spikeforge"``, ``"spikingjelly"`` or ``"tonic"`` (the module doc).
        duration: microseconds per frame; ``T`` follows from the recording's length.
        event_count: events per frame (``"spikeforge"`` and ``"tonic"``); ``T`` follows from ``N``.
    """
    height, width = size = as_sensor_size(sensor_size)
    if sum(v is not None for v in (frames, duration, event_count)) != 1:
        raise ValueError(f"give exactly one of frames, duration, event_count; got frames={frames!r}, "
                         f"duration={duration!r}, event_count={event_count!r}")
    for name, value in (("frames", frames), ("duration", duration), ("event_count", event_count)):
        _positive_int(name, value)
    if split_by not in SPLIT_MODES:
        raise ValueError(f"split_by must be one of {SPLIT_MODES}, got {split_by!r}")
    if boundaries not in BOUNDARY_MODES:
        raise ValueError(f"boundaries must be one of {BOUNDARY_MODES}, got {boundaries!r}")
    if window is not None and (boundaries != "spikeforge" or (frames is not None and split_by != "time")
                               or event_count is not None):
        raise ValueError("window applies to boundaries='spikeforge' with split_by='time' or duration only")
    if event_count is not None and boundaries == "spikingjelly":
        raise ValueError("boundaries='spikingjelly' has no event_count mode (SpikingJelly integrates a fixed "
                         "number of frames or a fixed duration per frame)")
    n = events.shape[0]
    if n:
        _check_inside(events, size)
    if boundaries == "spikeforge":
        index, slot, count = _spikeforge(events, n, frames, split_by, duration, event_count, window)
    elif boundaries == "spikingjelly":
        index, slot, count = _spikingjelly(events, n, frames, split_by, duration)
    else:
        index, slot, count = _tonic(events, n, frames, split_by, duration, event_count)
    x, y, p = (events[k][index].astype(np.int64) for k in ("x", "y", "p"))
    flat = ((slot * 2 + p) * height + y) * width + x
    counts = np.bincount(flat, minlength=count * 2 * height * width)
    return counts.astype(np.float32).reshape(count, 2, height, width)


def _check_inside(events: np.ndarray, size: SensorSize) -> None:
    x_max, y_max, p_max = (int(events[k].max()) for k in ("x", "y", "p"))
    if x_max < size.width and y_max < size.height and p_max <= 1:
        return
    hint = ""
    if x_max < size.height and y_max < size.width:
        hint = (f"; they fit a sensor of height {size.width} and width {size.height}: sensor_size is "
                f"(height, width), for tonic's (width, height[, polarities]) use SensorSize.from_tonic(...)")
    raise ValueError(f"events outside the sensor of height {size.height} and width {size.width} (max x {x_max}, "
                     f"max y {y_max}) or polarity above 1 (max {p_max}){hint}")


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
