"""MVSEC stereo (Zhu et al. 2018): left/right DAVIS346 events, depth ground truth, disparity.

HDF5 layout read here (one recording, e.g. ``indoor_flying1``): ``<name>_data.hdf5``
holds ``davis/{left,right}/events``, an ``N x 4`` float64 array of rows
``[x, y, t, p]`` (t in seconds, p = -1/+1); ``<name>_gt.hdf5`` holds
``davis/left/depth_image_rect`` (``[K, 260, 346]`` metres, NaN where unknown)
and ``davis/left/depth_image_rect_ts`` (seconds). If there is no ``_gt`` file
the depth is looked up in the data file. Events are in raw sensor
coordinates while the depth is rectified: pass ``rectify_maps`` (see
:func:`load_rectify_maps`) to move events onto the rectified grid.

Ground truth: disparity ``d = f*B / depth`` with the rectified focal length
times the baseline ``f*B`` of the scene (:data:`FOCAL_BASELINE`, pixel-metres,
the constants of the event-stereo literature); NaN where the depth is unknown.

Input representation (SpikeDHS, Che et al., NeurIPS 2022: ``N = 5`` frames; as the group's DTC
stereo code, Zhang et al., CVPR 2022, built on Tulyakov et al.'s DDES): for depth
frame ``k``, the events of each view are counted (both polarities) into one
image per interval between consecutive depth timestamps,
``[ts[k-N], ts[k-N+1]), ..., [ts[k-1], ts[k])`` (oldest first), giving
``[N, 260, 346]`` with ``N = frames = 5``, standardised to zero mean and unit
standard deviation per view. Training samples are cropped at one random
200x280 window (the same for both views and the disparity).

Splits (indoor_flying; Zhu et al.'s test frames, DDES's training frames):
split 1 trains on recordings 2 and 3 and tests on 1, split 3 trains on 1 and 2
and tests on 3. h5py is imported when a recording is opened
(``pip install spikeforge[events]``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ...optional import require
from ..errors import DatasetCorruptError, DatasetNotFoundError
from .arrays import EVENT_DTYPE

__all__ = [
    "MVSEC_SIZE", "FOCAL_BASELINE", "MVSEC_SPLITS", "TEST_FRAMES", "TRAIN_FRAMES",
    "depth_to_disparity", "disparity_to_depth", "count_frames", "standardize", "rectify_events",
    "load_rectify_maps", "MVSECRecording", "MVSECStereo", "mvsec",
]

MVSEC_SIZE = (260, 346)  # (height, width) of the DAVIS346
#: Rectified focal length x stereo baseline per scene, in pixel-metres.
FOCAL_BASELINE = {"indoor_flying": 19.941772, "outdoor_day": 19.635287, "outdoor_night": 19.651191}
#: Split -> recordings (indoor_flying numbers) for training and testing.
MVSEC_SPLITS = {1: {"train": (2, 3), "test": (1,)}, 3: {"train": (1, 2), "test": (3,)}}
#: Depth-frame indices used for testing (Zhu et al.) and training (DDES), per indoor_flying recording.
TEST_FRAMES = {1: range(140, 1201), 2: range(120, 1421), 3: range(73, 1616)}
TRAIN_FRAMES = {1: range(80, 1260), 2: range(160, 1580), 3: range(125, 1815)}


def depth_to_disparity(depth: np.ndarray, focal_baseline: float) -> np.ndarray:
    """Disparity in pixels ``f*B / depth`` (float32); NaN where the depth is NaN, infinite or <= 0."""
    depth = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    return np.where(valid, focal_baseline / np.where(valid, depth, 1.0), np.nan).astype(np.float32)


def disparity_to_depth(disparity: np.ndarray, focal_baseline: float) -> np.ndarray:
    """Depth in metres ``f*B / disparity`` (float32); NaN where the disparity is NaN, infinite or <= 0."""
    return depth_to_disparity(disparity, focal_baseline)  # the same reciprocal relation


def count_frames(events: np.ndarray, boundaries: np.ndarray, sensor_size: tuple[int, int]) -> np.ndarray:
    """``float32 [len(boundaries) - 1, H, W]``: events (both polarities) with ``b[i] <= t < b[i+1]`` (microseconds)."""
    height, width = sensor_size
    slot = np.searchsorted(boundaries, events["t"], side="right") - 1
    keep = (slot >= 0) & (slot < len(boundaries) - 1)
    flat = (slot[keep] * height + events["y"][keep].astype(np.int64)) * width + events["x"][keep]
    counts = np.bincount(flat, minlength=(len(boundaries) - 1) * height * width)
    return counts.astype(np.float32).reshape(len(boundaries) - 1, height, width)


def standardize(frames: np.ndarray) -> np.ndarray:
    """``(frames - mean) / std`` over the whole array (only the mean is removed if the std is 0)."""
    std = frames.std()
    return (frames - frames.mean()) / (std if std > 0 else 1.0)


def rectify_events(events: np.ndarray, x_map: np.ndarray, y_map: np.ndarray) -> np.ndarray:
    """Move events to the rectified grid: pixel ``(y, x)`` goes to ``(round(y_map[y, x]), round(x_map[y, x]))``.

    ``x_map``, ``y_map``: ``[H, W]`` rectified coordinates of every raw pixel.
    Events that land outside the ``[H, W]`` grid are dropped.
    """
    height, width = x_map.shape
    xr = np.rint(x_map[events["y"], events["x"]])
    yr = np.rint(y_map[events["y"], events["x"]])
    keep = (xr >= 0) & (xr < width) & (yr >= 0) & (yr < height)
    out = events[keep]
    out["x"], out["y"] = xr[keep], yr[keep]
    return out


def load_rectify_maps(folder: str | os.PathLike,
                      scene: str = "indoor_flying") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"left": (x_map, y_map), "right": ...}`` from MVSEC's ``<scene>_<side>_{x,y}_map.txt`` calibration files."""
    folder = Path(folder)
    maps = {}
    for side in ("left", "right"):
        paths = [folder / f"{scene}_{side}_{axis}_map.txt" for axis in ("x", "y")]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DatasetNotFoundError(f"MVSEC rectification maps missing: {', '.join(missing)}", path=folder)
        maps[side] = tuple(np.loadtxt(p, dtype=np.float64) for p in paths)
    return maps


class MVSECRecording:
    """One MVSEC recording: events of either view by time, depth frames and their timestamps.

    Files are opened on first use in each process (HDF5 handles do not
    survive a fork), so the object can go to DataLoader workers.
    """

    def __init__(self, data_path: str | os.PathLike, gt_path: str | os.PathLike | None = None) -> None:
        self.data_path = Path(data_path)
        self.gt_path = Path(gt_path) if gt_path is not None else None
        self._files: dict[Path, object] = {}
        depth = self._dataset(self._gt, "davis/left/depth_image_rect")
        ts = self._dataset(self._gt, "davis/left/depth_image_rect_ts")[()]
        if depth.ndim != 3 or ts.shape != (depth.shape[0],):
            raise DatasetCorruptError(f"{self._gt}: davis/left/depth_image_rect {depth.shape} and its _ts "
                                      f"{ts.shape} do not match ([K, H, W] and [K])", path=self._gt)
        #: Depth-frame timestamps in microseconds, ``int64 [K]``.
        self.depth_timestamps = np.rint(np.asarray(ts, dtype=np.float64) * 1e6).astype(np.int64)
        self.close()  # re-opened on use, so a forked DataLoader worker gets its own handles

    def close(self) -> None:
        """Close the HDF5 files (they are opened again when needed)."""
        for handle in self._files.values():
            handle.close()
        self._files = {}

    @property
    def _gt(self) -> Path:
        return self.gt_path or self.data_path

    def _dataset(self, path: Path, name: str):
        handle = self._files.get(path)
        if handle is None:
            try:
                handle = self._files[path] = require("h5py", "MVSEC (HDF5 files)").File(path, "r")
            except OSError as err:
                raise DatasetCorruptError(f"{path}: cannot be opened as HDF5 ({err})", path=path) from None
        if name not in handle:
            raise DatasetCorruptError(f"{path}: no dataset {name} (expected the MVSEC layout)", path=path)
        return handle[name]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": {}}

    def __len__(self) -> int:
        return len(self.depth_timestamps)

    def depth(self, index: int) -> np.ndarray:
        """Depth frame ``index``: ``float32 [260, 346]`` metres, NaN where unknown."""
        return np.asarray(self._dataset(self._gt, "davis/left/depth_image_rect")[index], dtype=np.float32)

    def events(self, side: str, start: int, end: int) -> np.ndarray:
        """Events of ``side`` (``"left"``/``"right"``) with ``start <= t < end`` (microseconds)
        as :data:`EVENT_DTYPE`."""
        if side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        rows = self._dataset(self.data_path, f"davis/{side}/events")
        if rows.ndim != 2 or rows.shape[1] != 4:
            raise DatasetCorruptError(f"{self.data_path}: davis/{side}/events has shape {rows.shape}, "
                                      "expected [N, 4] rows [x, y, t, p]", path=self.data_path)
        lo, hi = _first_at_or_after(rows, start / 1e6), _first_at_or_after(rows, end / 1e6)
        block = np.asarray(rows[lo:hi], dtype=np.float64)
        events = np.empty(block.shape[0], dtype=EVENT_DTYPE)
        events["x"], events["y"] = block[:, 0], block[:, 1]
        events["t"] = np.rint(block[:, 2] * 1e6)
        events["p"] = block[:, 3] > 0
        return events[(events["t"] >= start) & (events["t"] < end)]  # exact bounds after rounding to microseconds


def _first_at_or_after(rows, seconds: float) -> int:
    """Binary search on the time column of an HDF5 event array: first row with ``t >= seconds`` (minus one
    microsecond of slack, trimmed by the caller)."""
    target = seconds - 1e-6
    lo, hi = 0, rows.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if rows[mid, 2] < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


class MVSECStereo(Dataset):
    """MVSEC indoor_flying stereo pairs as dict items (see the module doc for the representation).

    Items: ``{"left": float32 [N, H, W], "right": float32 [N, H, W],
    "disparity": float32 [H, W] (pixels, NaN where unknown), "recording": int,
    "frame": int}``; ``H, W`` = 260, 346, or the crop for training.

    Args:
        root: folder holding ``indoor_flying<k>_data.hdf5`` (and ``_gt.hdf5``),
            directly or in ``root/indoor_flying/``.
        split: 1 or 3 (:data:`MVSEC_SPLITS`).
        train: the training or the test recordings of the split.
        frames: ``N``, event-count images per view.
        crop: ``(height, width)`` of the random training crop; ``None`` for none.
        frame_ranges: depth-frame indices per recording number (default
            :data:`TRAIN_FRAMES` / :data:`TEST_FRAMES`).
        rectify_maps: ``{"left": (x_map, y_map), "right": ...}``, see :func:`load_rectify_maps`.
    """

    def __init__(self, root, split: int = 1, train: bool = True, frames: int = 5, crop=(200, 280),
                 frame_ranges: dict[int, range] | None = None,
                 rectify_maps: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                 download: bool = False) -> None:
        if download:
            raise ValueError("MVSEC cannot be downloaded automatically; put the indoor_flying HDF5 files in root")
        if split not in MVSEC_SPLITS:
            raise ValueError(f"split must be one of {sorted(MVSEC_SPLITS)}, got {split!r}")
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise ValueError(f"frames must be a positive int, got {frames!r}")
        root = Path(root).expanduser()
        numbers = MVSEC_SPLITS[split]["train" if train else "test"]
        ranges = frame_ranges or (TRAIN_FRAMES if train else TEST_FRAMES)
        self.recordings = {k: _open_recording(root, f"indoor_flying{k}") for k in numbers}
        self.samples = [(k, i) for k in numbers for i in ranges[k] if frames <= i < len(self.recordings[k])]
        if not self.samples:
            raise DatasetNotFoundError(f"MVSEC split {split}: no depth frames of recordings {numbers} in the "
                                       f"requested ranges (need index >= frames={frames})", path=root)
        self.frames = frames
        self.crop = tuple(crop) if (train and crop) else None
        if self.crop is not None and not all(0 < c <= s for c, s in zip(self.crop, MVSEC_SIZE)):
            raise ValueError(f"crop must be (height, width) within {MVSEC_SIZE}, got {crop!r}")
        self.rectify_maps = rectify_maps
        self.focal_baseline = FOCAL_BASELINE["indoor_flying"]

    def __len__(self) -> int:
        return len(self.samples)

    def _view(self, recording: MVSECRecording, side: str, index: int) -> np.ndarray:
        bounds = recording.depth_timestamps[index - self.frames : index + 1]
        events = recording.events(side, int(bounds[0]), int(bounds[-1]))
        if self.rectify_maps is not None:
            events = rectify_events(events, *self.rectify_maps[side])
        return standardize(count_frames(events, bounds, MVSEC_SIZE))

    def __getitem__(self, item: int) -> dict:
        number, index = self.samples[item]
        recording = self.recordings[number]
        left, right = self._view(recording, "left", index), self._view(recording, "right", index)
        disparity = depth_to_disparity(recording.depth(index), self.focal_baseline)
        if self.crop is not None:
            (h, w), (full_h, full_w) = self.crop, MVSEC_SIZE
            y0 = int(torch.randint(0, full_h - h + 1, ()))
            x0 = int(torch.randint(0, full_w - w + 1, ()))
            left, right = left[:, y0 : y0 + h, x0 : x0 + w], right[:, y0 : y0 + h, x0 : x0 + w]
            disparity = disparity[y0 : y0 + h, x0 : x0 + w]
        return {"left": torch.from_numpy(np.ascontiguousarray(left)),
                "right": torch.from_numpy(np.ascontiguousarray(right)),
                "disparity": torch.from_numpy(np.ascontiguousarray(disparity)),
                "recording": number, "frame": index}


def _open_recording(root: Path, name: str) -> MVSECRecording:
    for folder in (root, root / "indoor_flying"):
        data = folder / f"{name}_data.hdf5"
        if data.is_file():
            gt = folder / f"{name}_gt.hdf5"
            return MVSECRecording(data, gt if gt.is_file() else None)
    raise DatasetNotFoundError(f"MVSEC {name} not found: expected {root}/{name}_data.hdf5 and {name}_gt.hdf5 "
                               f"(or in {root}/indoor_flying/)", path=root)


def parse_frame_ranges(spec, train: bool) -> dict[int, range]:
    """Depth-frame ranges from a recipe mapping ``{recording: [first, stop]}`` laid over the default
    ranges of the training (:data:`TRAIN_FRAMES`) or test (:data:`TEST_FRAMES`) recordings."""
    ranges = dict(TRAIN_FRAMES if train else TEST_FRAMES)
    if not isinstance(spec, dict):
        raise ValueError(f"data.options.frame_ranges must map recording numbers to [first, stop], got {spec!r}")
    for number, bounds in spec.items():
        if number not in ranges or not (isinstance(bounds, (list, tuple)) and len(bounds) == 2
                                        and all(type(b) is int and b >= 0 for b in bounds)):
            raise ValueError(f"data.options.frame_ranges: {number!r}: {bounds!r}: expected an indoor_flying "
                             f"number in {sorted(ranges)} mapped to [first, stop] (non-negative ints)")
        ranges[number] = range(*bounds)
    return ranges


def mvsec(root, train: bool = True, split: int = 1, frames: int = 5, crop=(200, 280),
          calibration: str | None = None, frame_ranges: dict | None = None, download: bool = False) -> MVSECStereo:
    """Registry builder (``data: {name: mvsec, options: {...}}``): :class:`MVSECStereo` with the
    rectification maps read from the ``calibration`` folder when given (:func:`load_rectify_maps`)
    and ``frame_ranges`` (``{recording: [first, stop]}``, see :func:`parse_frame_ranges`) replacing
    the default frames of the recordings it names."""
    if root is None:
        raise ValueError("MVSEC needs data.root (or --data-root): the folder with indoor_flying<k>_data.hdf5")
    maps = load_rectify_maps(calibration) if calibration else None
    ranges = parse_frame_ranges(frame_ranges, train) if frame_ranges is not None else None
    return MVSECStereo(root, split=split, train=train, frames=frames, crop=crop, frame_ranges=ranges,
                       rectify_maps=maps, download=download)
