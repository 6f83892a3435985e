"""Frame integration against a slow per-event reference and hand-computed frames, the SpikingJelly and tonic
boundary modes against the peers on real recordings, sensor sizes; normalisation, resize, augmentation, cache."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from event_files import shared_file
from PIL import Image

from spikeforge.data.events import (
    FlipRoll,
    SensorSize,
    cached_frames,
    event_frames,
    make_events,
    normalize_frames,
    read_events,
    resize_frames,
)


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
    with pytest.raises(ValueError, match=r"outside the sensor of height 4 and width 2 \(max x 2, max y 3\)"):
        event_frames(events, (4, 2), 1)
    with pytest.raises(ValueError, match="split_by"):
        event_frames(events, (4, 3), 1, "space")
    with pytest.raises(ValueError, match="frames must be a positive int"):
        event_frames(events, (4, 3), 0)
    with pytest.raises(ValueError, match="window applies to boundaries='spikeforge' with split_by='time'"):
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


# ----------------------------------------------------------------------------- frame boundaries and sensor sizes

#: 11 events at these times (us), event i at pixel (x, y) = (i % 4, i // 4), polarity i % 2
EDGE_TIMES = [0, 14, 15, 16, 29, 30, 44, 45, 59, 60, 61]

# frame members (event indices), worked out by hand from the rules in the frames module doc
HAND_FRAMES = [
    # count, T = 4: spikeforge i*N//T edges 0, 2, 5, 8, 11; SpikingJelly N//T = 2 per frame, the last takes
    # the rest; tonic 2 per frame, 3 dropped
    ("spikeforge", dict(frames=4), [[0, 1], [2, 3, 4], [5, 6, 7], [8, 9, 10]]),
    ("spikingjelly", dict(frames=4), [[0, 1], [2, 3], [4, 5], [6, 7, 8, 9, 10]]),
    ("tonic", dict(frames=4), [[0, 1], [2, 3], [4, 5], [6, 7]]),
    # time, T = 4: spikeforge t*4//62 over [0, 62); SpikingJelly and tonic dt = 61//4 = 15, edges 0, 15, 30, 45
    # (SpikingJelly's last frame runs to the end, tonic's stops at 60)
    ("spikeforge", dict(frames=4, split_by="time"), [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9, 10]]),
    ("spikingjelly", dict(frames=4, split_by="time"), [[0, 1], [2, 3, 4], [5, 6], [7, 8, 9, 10]]),
    ("tonic", dict(frames=4, split_by="time"), [[0, 1], [2, 3, 4], [5, 6], [7, 8]]),
    # duration 20: spikeforge ceil(62/20) = 4 frames; SpikingJelly ceil(61/20) = 4; tonic (61-20)//20+1 = 3
    ("spikeforge", dict(duration=20), [[0, 1, 2, 3], [4, 5], [6, 7, 8], [9, 10]]),
    ("spikingjelly", dict(duration=20), [[0, 1, 2, 3], [4, 5], [6, 7, 8], [9, 10]]),
    ("tonic", dict(duration=20), [[0, 1, 2, 3], [4, 5], [6, 7, 8]]),
    # event_count 4: spikeforge ceil(11/4) = 3 frames; tonic (11-4)//4+1 = 2
    ("spikeforge", dict(event_count=4), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]),
    ("tonic", dict(event_count=4), [[0, 1, 2, 3], [4, 5, 6, 7]]),
]


@pytest.mark.parametrize("boundaries, kwargs, members", HAND_FRAMES)
def test_frame_boundaries_on_a_hand_computed_case(boundaries, kwargs, members):
    n = len(EDGE_TIMES)
    events = make_events([i % 4 for i in range(n)], [i // 4 for i in range(n)], EDGE_TIMES, [i % 2 for i in range(n)])
    expected = np.zeros((len(members), 2, 3, 4), dtype=np.float32)
    for frame, indices in enumerate(members):
        for i in indices:
            expected[frame, i % 2, i // 4, i % 4] = 1
    np.testing.assert_array_equal(event_frames(events, (3, 4), boundaries=boundaries, **kwargs), expected)


def test_boundary_mode_errors():
    events = make_events([0, 1], [0, 0], [0, 5], [0, 1])
    with pytest.raises(ValueError, match="spikingjelly'.* no event_count mode"):
        event_frames(events, (1, 2), event_count=2, boundaries="spikingjelly")
    with pytest.raises(ValueError, match="exactly one of frames, duration, event_count"):
        event_frames(events, (1, 2), 2, duration=3)
    with pytest.raises(ValueError, match="boundaries must be one of"):
        event_frames(events, (1, 2), 2, boundaries="snntorch")
    with pytest.raises(ValueError, match="window applies to boundaries='spikeforge'"):
        event_frames(events, (1, 2), 2, "time", window=(0, 6), boundaries="tonic")
    with pytest.raises(ValueError, match="duration must be a positive int"):
        event_frames(events, (1, 2), duration=0)


def test_sensor_size_names_its_order_and_takes_tonic_sizes():
    events = make_events([319], [239], [0], [1])
    size = SensorSize.from_tonic((320, 240, 2))
    assert size == (240, 320) and (size.height, size.width) == (240, 320) and size.to_tonic() == (320, 240, 2)
    assert event_frames(events, size, 1)[0, 1, 239, 319] == 1
    assert event_frames(events, SensorSize(height=240, width=320), 1).shape == (1, 2, 240, 320)
    with pytest.raises(ValueError, match="they fit a sensor of height 240 and width 320: sensor_size is "
                                         r"\(height, width\), for tonic's .* SensorSize.from_tonic"):
        event_frames(events, (320, 240), 1)
    with pytest.raises(ValueError, match=r"has 3 entries; .* SensorSize.from_tonic\(\(320, 240, 2\)\)"):
        event_frames(events, (320, 240, 2), 1)
    with pytest.raises(ValueError, match=r"expects tonic's \(width, height\) or \(width, height, 2\)"):
        SensorSize.from_tonic((34, 34, 1))


REAL_RECORDINGS = ["event-samples/sample_nmnist.bin", "event-samples/davis346_346x260.aedat4",
                   "event-samples/dvxplorer_320x240.aedat4", "nmnist-small/1.bs2", "nmnist-small/60001.bs2"]
SENSORS = {"davis346": SensorSize(260, 346), "dvxplorer": SensorSize(240, 320)}


def real_recording(relative: str) -> tuple[np.ndarray, SensorSize]:
    with warnings.catch_warnings():  # the recordings' IMU, frame and trigger streams are skipped
        warnings.simplefilter("ignore", UserWarning)
        events = read_events(shared_file(relative))
    return events, next((s for name, s in SENSORS.items() if name in relative), SensorSize(34, 34))


@pytest.mark.parametrize("relative", REAL_RECORDINGS)
def test_spikingjelly_mode_equals_spikingjelly_on_real_recordings(relative):
    utils = pytest.importorskip("spikingjelly.datasets.utils")
    events, (height, width) = real_recording(relative)
    as_dict = {k: events[k] for k in "txyp"}
    for frames in (1, 3, 7, 10, 16):
        for split_by, theirs in (("count", "number"), ("time", "time")):
            want = utils.integrate_events_by_fixed_frames_number(as_dict, theirs, frames, height, width)
            got = event_frames(events, (height, width), frames, split_by, boundaries="spikingjelly")
            np.testing.assert_array_equal(got, want, err_msg=f"{split_by} T={frames}")
    for duration in (20_000, 100_000):
        want = utils.integrate_events_by_fixed_duration(as_dict, duration, height, width)
        np.testing.assert_array_equal(event_frames(events, (height, width), duration=duration,
                                                   boundaries="spikingjelly"), want, err_msg=f"duration {duration}")


@pytest.mark.parametrize("relative", REAL_RECORDINGS)
def test_tonic_mode_equals_tonic_to_frame_on_real_recordings(relative):
    to_frame = pytest.importorskip("tonic.functional").to_frame_numpy
    events, size = real_recording(relative)
    for frames in (1, 3, 7, 10, 16):
        for split_by, option in (("count", "n_event_bins"), ("time", "n_time_bins")):
            want = to_frame(events.copy(), size.to_tonic(), **{option: frames})
            got = event_frames(events, size, frames, split_by, boundaries="tonic")
            np.testing.assert_array_equal(got, want, err_msg=f"{option}={frames}")
    for option, value in (("time_window", 20_000), ("time_window", 100_000), ("event_count", 700),
                          ("event_count", 20_000)):
        want = to_frame(events.copy(), size.to_tonic(), **{option: value})
        keyword = "duration" if option == "time_window" else "event_count"
        got = event_frames(events, size, boundaries="tonic", **{keyword: value})
        np.testing.assert_array_equal(got, want, err_msg=f"{option}={value}")


def test_the_three_modes_differ_at_the_edges_of_a_real_recording():
    events, size = real_recording("nmnist-small/1.bs2")
    counts = {mode: event_frames(events, size, 10, boundaries=mode).sum(axis=(1, 2, 3))
              for mode in ("spikeforge", "spikingjelly", "tonic")}
    n = len(events)
    assert counts["spikeforge"].sum() == counts["spikingjelly"].sum() == n
    assert counts["tonic"].sum() == n - n % 10 and n % 10  # tonic drops the N mod T last events
    assert counts["spikingjelly"][-1] == n // 10 + n % 10 and set(counts["spikingjelly"][:-1]) == {n // 10}
    assert counts["spikeforge"].max() - counts["spikeforge"].min() <= 1
