"""MVSEC stereo on small synthetic HDF5 files written in the MVSEC layout."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from spikeforge.data import DatasetCorruptError, DatasetNotFoundError
from spikeforge.data.events import (
    FOCAL_BASELINE,
    MVSEC_SIZE,
    MVSECStereo,
    count_frames,
    depth_to_disparity,
    disparity_to_depth,
    load_rectify_maps,
    make_events,
    rectify_events,
)

h5py = pytest.importorskip("h5py")

H, W = MVSEC_SIZE
DEPTH_FRAMES = 10
T0 = 1_504_645_177.0  # seconds, like MVSEC's ROS clock
PERIOD = 0.05  # depth at 20 Hz


def depth_map(k: int) -> np.ndarray:
    """A depth that encodes the pixel column (to locate crops) and frame; NaN in the top row."""
    depth = 1.0 + np.tile(np.arange(W, dtype=np.float32) / 100, (H, 1)) + k
    depth[0] = np.nan
    return depth


def write_recording(folder, number: int, split_files: bool = True) -> None:
    """indoor_flying<number>: per depth interval k, left events at pixel (y=k, x=2k+number), right at x-1."""
    ts = T0 + PERIOD * np.arange(DEPTH_FRAMES)
    rows = {"left": [], "right": []}
    for k in range(1, DEPTH_FRAMES):
        for j in range(k + 1):  # k+1 events spread inside [ts[k-1], ts[k])
            t = ts[k - 1] + PERIOD * (j + 0.5) / (k + 1)
            rows["left"].append([2 * k + number, k, t, 1.0 if j % 2 else -1.0])
            rows["right"].append([2 * k + number - 1, k, t, 1.0])
    data = folder / f"indoor_flying{number}_data.hdf5"
    gt = folder / f"indoor_flying{number}_gt.hdf5" if split_files else data
    with h5py.File(data, "w") as f:
        for side in ("left", "right"):
            f[f"davis/{side}/events"] = np.array(rows[side], dtype=np.float64)
            f[f"davis/{side}/image_raw"] = np.zeros((2, H, W), dtype=np.uint8)
            f[f"davis/{side}/image_raw_ts"] = ts[:2]
    with h5py.File(gt, "a") as f:
        f["davis/left/depth_image_rect"] = np.stack([depth_map(k) for k in range(DEPTH_FRAMES)])
        f["davis/left/depth_image_rect_ts"] = ts


@pytest.fixture
def mvsec_root(tmp_path):
    for number in (1, 2, 3):
        write_recording(tmp_path, number, split_files=number != 3)
    return tmp_path


def test_disparity_from_depth_with_the_indoor_flying_constant():
    depth = np.array([2.0, 0.5, np.nan, 0.0, -1.0, np.inf])
    disparity = depth_to_disparity(depth, FOCAL_BASELINE["indoor_flying"])
    np.testing.assert_allclose(disparity[:2], [19.941772 / 2, 19.941772 / 0.5], rtol=1e-6)
    assert np.isnan(disparity[2:]).all() and disparity.dtype == np.float32
    np.testing.assert_allclose(disparity_to_depth(disparity[:2], 19.941772), [2.0, 0.5], rtol=1e-6)


def test_count_frames_matches_a_reference_loop():
    rng = np.random.default_rng(0)
    n = 500
    events = make_events(rng.integers(0, 7, n), rng.integers(0, 5, n), np.sort(rng.integers(0, 1000, n)),
                         rng.integers(0, 2, n))
    bounds = np.array([100, 250, 251, 900])
    got = count_frames(events, bounds, (5, 7))
    expected = np.zeros((3, 5, 7), dtype=np.float32)
    for e in events:
        for i in range(3):
            if bounds[i] <= e["t"] < bounds[i + 1]:
                expected[i, e["y"], e["x"]] += 1
    np.testing.assert_array_equal(got, expected)


def test_test_split_items_hold_the_preceding_intervals_standardised(mvsec_root):
    test = MVSECStereo(mvsec_root, split=1, train=False, frames=5, frame_ranges={1: range(0, 100)})
    assert len(test) == DEPTH_FRAMES - 5 and test.samples == [(1, k) for k in range(5, 10)]
    item = test[2]  # depth frame 7: intervals 3..7, oldest first
    assert item["frame"] == 7 and item["recording"] == 1
    left, right, disparity = item["left"], item["right"], item["disparity"]
    assert left.shape == right.shape == (5, H, W) and disparity.shape == (H, W)
    for channel, k in enumerate(range(3, 8)):
        assert left[channel].argmax() == k * W + 2 * k + 1  # the interval's pixel (y=k, x=2k+1)
        assert right[channel].argmax() == k * W + 2 * k
    assert abs(float(left.mean())) < 1e-5 and abs(float(left.std(unbiased=False)) - 1) < 1e-4
    expected = 19.941772 / depth_map(7)
    np.testing.assert_allclose(disparity[1:].numpy(), expected[1:], rtol=1e-6)
    assert torch.isnan(disparity[0]).all()


def test_train_split_crops_views_and_disparity_together(mvsec_root):
    train = MVSECStereo(mvsec_root, split=1, train=True, frames=2, frame_ranges={2: range(2, 10), 3: range(9, 10)})
    assert [n for n, _ in train.samples] == [2] * 8 + [3]  # recording 3 keeps its depth in the data file
    torch.manual_seed(0)
    seen = set()
    for _ in range(10):
        item = train[8]
        assert item["left"].shape == item["right"].shape == (2, 200, 280) and item["disparity"].shape == (200, 280)
        # the disparity's columns reveal the crop's x0 (depth = 1 + x/100 + k)
        row = item["disparity"][-1].numpy().astype(np.float64)
        x0 = int(round((19.941772 / row[0] - 1 - 9) * 100))
        seen.add(x0)
        np.testing.assert_allclose(row, 19.941772 / (1 + (x0 + np.arange(280)) / 100 + 9), rtol=1e-5)
    assert len(seen) > 1
    split3 = MVSECStereo(mvsec_root, split=3, train=False, frames=3, frame_ranges={3: range(0, 10)}, crop=None)
    assert len(split3) == 7 and split3[0]["left"].shape == (3, H, W)
    clone = pickle.loads(pickle.dumps(split3))
    assert torch.equal(clone[1]["right"], split3[1]["right"])


def test_default_literature_ranges_and_errors(mvsec_root, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no depth frames of recordings"):
        MVSECStereo(mvsec_root, split=1, train=False)  # frames 140-1200 do not exist in the small files
    with pytest.raises(ValueError, match="split must be one of"):
        MVSECStereo(mvsec_root, split=2)
    with pytest.raises(ValueError, match="crop must be"):
        MVSECStereo(mvsec_root, split=1, train=True, crop=(300, 280), frame_ranges={2: range(9), 3: range(9)})
    with pytest.raises(ValueError, match="cannot be downloaded"):
        MVSECStereo(mvsec_root, download=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match="indoor_flying1_data.hdf5"):
        MVSECStereo(empty, split=1, train=False)
    bad = empty / "indoor_flying1_data.hdf5"
    with h5py.File(bad, "w") as f:
        f["davis/left/events"] = np.zeros((1, 4))
    with pytest.raises(DatasetCorruptError, match=rf"{bad}: no dataset davis/left/depth_image_rect"):
        MVSECStereo(empty, split=1, train=False)
    bad.write_bytes(b"not hdf5")
    with pytest.raises(DatasetCorruptError, match="cannot be opened as HDF5"):
        MVSECStereo(empty, split=1, train=False)


def test_rectification_maps_move_events_and_drop_those_outside(tmp_path):
    x_map = np.tile(np.arange(4, dtype=np.float64) + 1.2, (3, 1))  # x -> round(x + 1.2)
    y_map = np.tile(np.arange(3, dtype=np.float64)[:, None] - 0.4, (1, 4))  # y -> round(y - 0.4)
    events = make_events([0, 3, 1], [2, 0, 1], [5, 6, 7], [1, 0, 1])
    out = rectify_events(events, x_map, y_map)
    assert out[["x", "y", "t"]].tolist() == [(1, 2, 5), (2, 1, 7)]  # x 3 -> 4 is outside a 4-wide grid
    for side in ("left", "right"):
        np.savetxt(tmp_path / f"indoor_flying_{side}_x_map.txt", x_map)
        np.savetxt(tmp_path / f"indoor_flying_{side}_y_map.txt", y_map)
    maps = load_rectify_maps(tmp_path)
    np.testing.assert_array_equal(maps["right"][1], y_map)
    (tmp_path / "indoor_flying_right_y_map.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="indoor_flying_right_y_map.txt"):
        load_rectify_maps(tmp_path)
