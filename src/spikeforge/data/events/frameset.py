"""A data set of labelled event recordings served as frame sequences ``float32 [T, 2, H, W]``.

The recordings are integrated once (read, counted into T frames, optionally
normalised and resized; see :mod:`.frames`) and kept in the disk cache
(:mod:`.cache`); items are read from the memory-mapped cache. Transforms:
``event_transform`` (events -> events, before integration) makes the set
integrate each item on every access instead (nothing is cached: a random event
augmentation must not be frozen); ``transform`` (on the frames tensor) and
``target_transform`` (on the label) run on every access, after the cache. Models take
time-first batches ``[T, B, 2, H, W]``: batch with the set's :meth:`EventFrames.loader`
(or ``collate_fn=`` :func:`time_first_collate`). A plain DataLoader stacks
``[B, T, 2, H, W]``, which a model would read with batch and time swapped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ..errors import DatasetCorruptError
from .cache import cached_frames, default_cache_dir
from .frames import (
    BOUNDARY_MODES,
    NORMALIZE_MODES,
    SPLIT_MODES,
    SensorSize,
    as_sensor_size,
    event_frames,
    normalize_frames,
    resize_frames,
)

__all__ = ["FrameSettings", "Recording", "EventFrames", "time_first_collate"]


def time_first_collate(batch):
    """Collate ``(frames [T, ...], label, ...)`` items into ``(frames [T, B, ...], labels [B], ...)``.

    The DataLoader ``collate_fn`` for frame-sequence sets: the default one stacks
    ``[B, T, ...]``. Bare ``[T, ...]`` tensor items give a bare ``[T, B, ...]``.
    """
    collated = default_collate(batch)
    frames = collated[0] if isinstance(collated, (list, tuple)) else collated
    if not isinstance(frames, torch.Tensor) or frames.dim() < 3:
        raise ValueError("time_first_collate expects items (frames [T, ...], label) or [T, ...] tensors, "
                         f"got a batch of {type(frames).__name__} {tuple(getattr(frames, 'shape', ()))}")
    frames = frames.transpose(0, 1).contiguous()
    return (frames, *collated[1:]) if isinstance(collated, (list, tuple)) else frames


@dataclass(frozen=True)
class FrameSettings:
    """How recordings become frames: ``frames`` (T) slices split by ``"count"`` or ``"time"``,
    ``normalize`` (``"max"``: each frame divided by its maximum, or ``"none"``), an output
    ``size`` ``(H, W)`` (``None``: the sensor size) and where slices start and end
    (``boundaries``: ``"spikeforge"``, ``"spikingjelly"`` or ``"tonic"``, see :mod:`.frames`)."""

    frames: int
    split_by: str = "count"
    size: tuple[int, int] | None = None
    normalize: str = "max"
    boundaries: str = "spikeforge"

    def __post_init__(self) -> None:
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or self.frames < 1:
            raise ValueError(f"frames must be a positive int, got {self.frames!r}")
        if self.split_by not in SPLIT_MODES:
            raise ValueError(f"split_by must be one of {SPLIT_MODES}, got {self.split_by!r}")
        if self.normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {self.normalize!r}")
        if self.boundaries not in BOUNDARY_MODES:
            raise ValueError(f"boundaries must be one of {BOUNDARY_MODES}, got {self.boundaries!r}")
        if self.size is not None:
            object.__setattr__(self, "size", frame_size(self.size))


def frame_size(size) -> tuple[int, int]:
    """``48`` or ``(48, 48)`` / ``[48, 48]`` -> ``(48, 48)``; anything else is a ValueError."""
    pair = (size, size) if isinstance(size, int) and not isinstance(size, bool) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair):
        raise ValueError(f"size must be a positive int or a pair (height, width), got {size!r}")
    return pair


@dataclass(frozen=True)
class Recording:
    """One sample: the events of ``path`` (within ``window = (start, end)`` microseconds if given) and its label."""

    path: Path
    label: int
    window: tuple[int, int] | None = None


class EventFrames(Dataset):
    """Labelled recordings as ``(float32 [T, 2, H, W], label)`` items, integrated once and cached.

    Args:
        name: cache entry prefix, e.g. ``"nmnist-train"``.
        recordings: the samples, in item order.
        classes: class names (``len(classes)`` is the number of classes).
        sensor_size: ``(height, width)`` (or a :class:`~.frames.SensorSize`) of the sensor the events come from.
        settings: the integration (:class:`FrameSettings`).
        reader: ``path -> events`` (an :data:`EVENT_DTYPE` array).
        root: the data folder; cache keys use paths relative to it.
        cache_dir: cache folder (default :func:`~.cache.default_cache_dir`).
        transform: applied to each item's frames tensor ``float32 [T, 2, H, W]`` (e.g. augmentation).
        event_transform: applied to each recording's events (an EVENT_DTYPE-like structured array with
            fields ``x, y, t, p``, t in microseconds, e.g. a tonic event transform) before integration;
            then nothing is cached and every access reads and integrates the recording.
        target_transform: applied to each item's label.

    Batches for a model are time-first: ``for frames, labels in dataset.loader(32, shuffle=True)``
    gives ``frames [T, B, 2, H, W]`` (:attr:`collate_fn` for a DataLoader of your own).
    """

    #: DataLoader ``collate_fn`` giving time-first batches ``([T, B, 2, H, W], labels [B])``.
    collate_fn = staticmethod(time_first_collate)

    def __init__(self, name: str, recordings: Sequence[Recording], classes: Sequence[str],
                 sensor_size: tuple[int, int], settings: FrameSettings, reader: Callable[[Path], np.ndarray],
                 root: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None, *,
                 event_transform: Callable[[np.ndarray], np.ndarray] | None = None,
                 target_transform: Callable[[int], object] | None = None) -> None:
        self.recordings = list(recordings)
        self.classes = list(classes)
        self.targets = [r.label for r in self.recordings]
        self.sensor_size: SensorSize = as_sensor_size(sensor_size)
        self.settings = settings
        self.transform = transform
        self.event_transform = event_transform
        self.target_transform = target_transform
        self._reader = reader
        self._last_read: tuple[Path, np.ndarray] | None = None
        self._frames: np.ndarray | None = None
        self.frames_path: Path | None = None
        if event_transform is not None:
            return  # integrated on every access (see the module doc)
        height, width = settings.size or self.sensor_size
        shape = (len(self.recordings), settings.frames, 2, height, width)
        key = {
            "dataset": name,
            "reader": f"{reader.__module__}.{getattr(reader, '__qualname__', type(reader).__qualname__)}",
            "sensor_size": list(self.sensor_size),
            "frames": settings.frames,
            "split_by": settings.split_by,
            "boundaries": settings.boundaries,
            "size": [height, width],
            "normalize": settings.normalize,
            "recordings": _recordings_digest(self.recordings, Path(root)),
        }
        self.frames_path = cached_frames(cache_dir or default_cache_dir(), name, key, shape, self._integrate)
        self._reader = self._last_read = None  # only needed while building the cache

    def _integrate(self, index: int) -> np.ndarray:
        """``float32 [T, 2, H, W]`` of recording ``index`` (re-uses the file read for the previous one)."""
        rec = self.recordings[index]
        if self._last_read is None or self._last_read[0] != rec.path:
            self._last_read = (rec.path, self._reader(rec.path))
        events = self._last_read[1]
        s = self.settings
        if rec.window is not None:
            events = events[(events["t"] >= rec.window[0]) & (events["t"] < rec.window[1])]
        if self.event_transform is not None:
            events = self.event_transform(events)
            if not isinstance(events, np.ndarray) or not {"x", "y", "t", "p"} <= set(events.dtype.names or ()):
                raise TypeError(f"event_transform must return a structured array with fields x, y, t, p, got "
                                f"{type(events).__name__} {getattr(events, 'dtype', '')}")
        window = rec.window if s.split_by == "time" and s.boundaries == "spikeforge" else None
        try:
            frames = event_frames(events, self.sensor_size, s.frames, s.split_by, window, boundaries=s.boundaries)
        except ValueError as err:
            raise DatasetCorruptError(f"{rec.path}: {err}", path=rec.path) from None
        frames = normalize_frames(frames, s.normalize)
        return resize_frames(frames, s.size) if s.size else frames

    def __len__(self) -> int:
        return len(self.recordings)

    def loader(self, batch_size: int, shuffle: bool = False, **kwargs) -> DataLoader:
        """A DataLoader of time-first batches ``(frames [T, B, 2, H, W], labels [B])``;
        ``kwargs`` go to :class:`~torch.utils.data.DataLoader` (``num_workers``, ``drop_last``...)."""
        return DataLoader(self, batch_size=batch_size, shuffle=shuffle, collate_fn=time_first_collate, **kwargs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.frames_path is None:
            frames = torch.from_numpy(np.ascontiguousarray(self._integrate(index), dtype=np.float32))
        else:
            if self._frames is None:  # opened lazily, once per (worker) process
                self._frames = np.load(self.frames_path, mmap_mode="r")
            frames = torch.from_numpy(np.array(self._frames[index]))
        if self.transform is not None:
            frames = self.transform(frames)
        target = self.targets[index]
        return frames, target if self.target_transform is None else self.target_transform(target)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_frames": None}  # workers re-open the memory map

    def __repr__(self) -> str:
        t, c, h, w = self.settings.frames, 2, *(self.settings.size or self.sensor_size)
        return (f"{type(self).__name__}(samples={len(self)}, frames=[{t}, {c}, {h}, {w}], "
                f"split_by={self.settings.split_by!r}, normalize={self.settings.normalize!r}, "
                f"boundaries={self.settings.boundaries!r}, transform={self.transform!r}, "
                f"event_transform={self.event_transform!r}, target_transform={self.target_transform!r})")


def _recordings_digest(recordings: Sequence[Recording], root: Path) -> str:
    """SHA-256 over each recording's path (relative to ``root``), identity (byte size, modification
    time in ns, inode), window and label."""
    digest = hashlib.sha256()
    for rec in recordings:
        try:
            name = rec.path.relative_to(root).as_posix()
        except ValueError:
            name = rec.path.as_posix()
        st = rec.path.stat()
        digest.update(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ino}\t{rec.window}\t{rec.label}\n".encode())
    return digest.hexdigest()
