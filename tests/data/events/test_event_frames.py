"""Frame integration against a slow per-event reference; normalisation, resize, augmentation, cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from spikeforge.data.events import FlipRoll, cached_frames, event_frames, make_events, normalize_frames, resize_frames


def random_events(n: int, height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 50_000, n))
    return make_events(rng.integers(0, width, n), rng.integers(0, height, n), t, rng.integers(0, 2, n))


def reference_frames(events, sensor_size, frames, split_by, window=None) -> np.ndarray:
    """The definition, one event at a time."""
    height, width = sensor_size
    out = np.zeros((frames, 2, height, width), dtype=np.float32)
    n = len(events)
    if n == 0:
        return out
    if split_by == "time":
        start, end = window or (int(events["t"].min()), int(events["t"].max()) + 1)
    for i, e in enumerate(events):
        if split_by == "count":
            slot = next(j for j in range(frames) if j * n // frames <= i < (j + 1) * n // frames)
        else:
            if not start <= e["t"] < end:
                continue
            slot = next(j for j in range(frames)
                        if start + j * (end - start) / frames <= e["t"] < start + (j + 1) * (end - start) / frames)
        out[slot, e["p"], e["y"], e["x"]] += 1
    return out


@pytest.mark.parametrize("n, frames", [(0, 3), (2, 5), (10, 3), (997, 7), (1000, 1)])
@pytest.mark.parametrize("split_by", ["count", "time"])
def test_vectorised_integration_equals_the_reference_loop(n, frames, split_by):
    events = random_events(n, 6, 9, seed=n + frames)
    got = event_frames(events, (6, 9), frames, split_by)
    assert got.shape == (frames, 2, 6, 9) and got.dtype == np.float32
    np.testing.assert_array_equal(got, reference_frames(events, (6, 9), frames, split_by))
    assert got.sum() == n
    if split_by == "count" and n:
        per_slice = got.sum(axis=(1, 2, 3))
        assert per_slice.max() - per_slice.min() <= 1  # equal counts within one


def test_time_window_leaves_out_events_outside_it():
    events = random_events(500, 4, 4, seed=3)
    window = (10_000, 30_001)
    got = event_frames(events, (4, 4), 4, "time", window=window)
    np.testing.assert_array_equal(got, reference_frames(events, (4, 4), 4, "time", window))
    inside = ((events["t"] >= window[0]) & (events["t"] < window[1])).sum()
    assert got.sum() == inside < 500


def test_polarity_channels_and_bad_arguments():
    events = make_events([1, 1, 2], [0, 0, 3], [0, 1, 2], [0, 1, 1])
    got = event_frames(events, (4, 3), 1)
    assert got[0, 0, 0, 1] == 1 and got[0, 1, 0, 1] == 1 and got[0, 1, 3, 2] == 1 and got.sum() == 3
    with pytest.raises(ValueError, match="outside the sensor 4x2"):
        event_frames(events, (4, 2), 1)
    with pytest.raises(ValueError, match="split_by"):
        event_frames(events, (4, 3), 1, "space")
    with pytest.raises(ValueError, match="frames must be a positive int"):
        event_frames(events, (4, 3), 0)
    with pytest.raises(ValueError, match="window applies to split_by='time'"):
        event_frames(events, (4, 3), 2, "count", window=(0, 3))


def test_max_normalisation_is_per_frame():
    frames = np.zeros((3, 2, 2, 2), dtype=np.float32)
    frames[0, 0, 0, 0], frames[0, 1, 1, 1] = 4, 2
    frames[2, 1, 0, 1] = 5
    out = normalize_frames(frames, "max")
    assert out[0, 0, 0, 0] == 1 and out[0, 1, 1, 1] == 0.5 and out[2, 1, 0, 1] == 1
    assert not out[1].any()  # an empty frame stays empty
    assert normalize_frames(frames, "none") is frames
    with pytest.raises(ValueError, match="normalize"):
        normalize_frames(frames, "std")


def test_resize_matches_pil_bilinear_downscaling():
    """TET resizes with PIL's bilinear filter, which antialiases when shrinking."""
    rng = np.random.default_rng(0)
    frames = rng.random((2, 2, 128, 128)).astype(np.float32)
    got = resize_frames(frames, (48, 48))
    assert got.shape == (2, 2, 48, 48)
    expected = np.stack([np.stack([np.asarray(Image.fromarray(ch, mode="F").resize((48, 48), Image.BILINEAR))
                                   for ch in frame]) for frame in frames])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert resize_frames(frames, (128, 128)) is frames


def test_flip_roll_is_one_flip_and_one_cyclic_shift_for_all_frames():
    frames = torch.zeros(3, 2, 20, 20)
    frames[:, 0, 2, 3] = 1  # near the corner: shifts of up to 5 wrap around
    shift = FlipRoll(max_shift=5, flip=False, generator=torch.Generator().manual_seed(0))
    offsets = set()
    for _ in range(400):
        t, c, y, x = (v.tolist() for v in shift(frames).nonzero(as_tuple=True))
        assert t == [0, 1, 2] and c == [0, 0, 0] and len(set(y)) == len(set(x)) == 1  # same shift for all frames
        offsets.add(((y[0] - 2 + 10) % 20 - 10, (x[0] - 3 + 10) % 20 - 10))
    assert {dy for dy, _ in offsets} == {dx for _, dx in offsets} == set(range(-5, 6))
    flip = FlipRoll(max_shift=0, generator=torch.Generator().manual_seed(1))
    assert {flip(frames)[0, 0, 2].argmax().item() for _ in range(50)} == {3, 16}  # column 3 or its mirror
    assert torch.equal(FlipRoll(max_shift=0, flip=False)(frames), frames)
    with pytest.raises(ValueError, match="max_shift"):
        FlipRoll(max_shift=-1)


def test_frame_cache_builds_once_per_settings_and_repairs_damage(tmp_path):
    calls = []

    def make(i):
        calls.append(i)
        return np.full((2, 3), i, dtype=np.float32)

    settings = {"frames": 2, "size": [3]}
    path = cached_frames(tmp_path, "toy", settings, (4, 2, 3), make)
    assert calls == [0, 1, 2, 3]
    np.testing.assert_array_equal(np.load(path)[:, 0, 0], [0, 1, 2, 3])
    assert cached_frames(tmp_path, "toy", settings, (4, 2, 3), make) == path and len(calls) == 4
    other = cached_frames(tmp_path, "toy", {"frames": 3, "size": [3]}, (4, 2, 3), make)
    assert other != path and len(calls) == 8
    path.write_bytes(path.read_bytes()[:-8])  # a damaged entry is rebuilt
    with pytest.warns(UserWarning, match="missing, truncated"):
        assert cached_frames(tmp_path, "toy", settings, (4, 2, 3), make) == path and len(calls) == 12
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary folders left
    assert (path.parent / "settings.json").is_file()


def test_frame_cache_refuses_a_planted_file_of_the_right_shape(tmp_path):
    def make(i):
        return np.full((2, 3), i, dtype=np.float32)

    path = cached_frames(tmp_path, "toy", {"frames": 2}, (4, 2, 3), make)
    np.save(path, np.full((4, 2, 3), 7, dtype=np.float32))  # same shape and dtype, other values
    with pytest.warns(UserWarning, match="do not match the digest"):
        again = cached_frames(tmp_path, "toy", {"frames": 2}, (4, 2, 3), make)
    np.testing.assert_array_equal(np.load(again)[:, 0, 0], [0, 1, 2, 3])
    (again.parent / "digest.json").unlink()  # an entry without its digest is not trusted either
    with pytest.warns(UserWarning, match="without its digest"):
        cached_frames(tmp_path, "toy", {"frames": 2}, (4, 2, 3), make)
