"""Synthetic MVSEC recordings for the stereo tests: random dots on a fronto-parallel plane."""

from __future__ import annotations

from pathlib import Path

import pytest

SHIFT = 4  # pixels: the true disparity of the random-dot scene
FOCAL_BASELINE = 19.941772  # indoor_flying f*B (pixel-metres)


def write_random_dot_recording(folder: Path, number: int, frames: int = 10, events_per_frame: int = 20000) -> None:
    """An indoor_flying<number> recording in the MVSEC HDF5 layout: random dots seen by the left
    camera at x and by the right one at x - SHIFT, depth f*B / SHIFT everywhere (a fronto-parallel plane)."""
    import h5py
    import numpy as np

    from spikeforge.data.events import MVSEC_SIZE

    height, width = MVSEC_SIZE
    rng = np.random.default_rng(number)
    ts = 100.0 + 0.05 * np.arange(frames)
    t = np.sort(rng.uniform(ts[0], ts[-1], events_per_frame * (frames - 1)))
    x = rng.integers(SHIFT, width, t.size).astype(np.float64)
    y = rng.integers(0, height, t.size).astype(np.float64)
    p = np.where(rng.random(t.size) < 0.5, -1.0, 1.0)
    with h5py.File(folder / f"indoor_flying{number}_data.hdf5", "w") as f:
        f["davis/left/events"] = np.stack([x, y, t, p], 1)
        f["davis/right/events"] = np.stack([x - SHIFT, y, t, p], 1)
        f["davis/left/depth_image_rect"] = np.full((frames, height, width), FOCAL_BASELINE / SHIFT, np.float32)
        f["davis/left/depth_image_rect_ts"] = ts


@pytest.fixture
def mvsec_root(tmp_path):
    """A folder with random-dot recordings indoor_flying1..3 of 10 depth frames each."""
    pytest.importorskip("h5py")
    for number in (1, 2, 3):
        write_random_dot_recording(tmp_path, number)
    return tmp_path


@pytest.fixture
def mvsec_pair(mvsec_root):
    from spikeforge.data.events import MVSECStereo

    ranges = {k: range(5, 10) for k in (1, 2, 3)}
    train = MVSECStereo(mvsec_root, split=1, train=True, frames=5, crop=(30, 36), frame_ranges=ranges)
    test = MVSECStereo(mvsec_root, split=3, train=True, frames=5, crop=(30, 36), frame_ranges=ranges)  # cropped: fast
    return train, test


@pytest.fixture
def dot_shift() -> int:
    """The true disparity (pixels) of the random-dot recordings."""
    return SHIFT
