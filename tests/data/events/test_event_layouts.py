"""The layouts of CIFAR10-DVS, N-MNIST and DVS128 Gesture (the original archives', tonic's, SpikingJelly's):
each is detected, and gives the same samples, labels and frames as the original layout of the same
recordings (layout_files.py writes them from real recordings); SpikingJelly's own converters, when
installed, write the same converted files as layout_files.py."""

from __future__ import annotations

import numpy as np
import pytest
from event_files import shared_file
from layout_files import (
    GESTURE_RECORDINGS,
    nmnist_samples,
    write_cifar10dvs,
    write_gesture,
    write_nmnist,
)

from spikeforge.data import DatasetNotFoundError, build_dataset
from spikeforge.data.events import LAYOUTS


def by_stem(dataset) -> dict[str, tuple[int, np.ndarray]]:
    """{file name without suffix: (label, frames)}."""
    return {rec.path.stem: (dataset.targets[i], dataset[i][0].numpy()) for i, rec in enumerate(dataset.recordings)}


def as_multiset(dataset) -> list[tuple[int, bytes]]:
    return sorted((dataset.targets[i], dataset[i][0].numpy().tobytes()) for i in range(len(dataset)))


def assert_same_items(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, (label, frames) in want.items():
        assert got[key][0] == label, key
        np.testing.assert_array_equal(got[key][1], frames, err_msg=key)


@pytest.mark.parametrize("layout", LAYOUTS["nmnist"])
def test_nmnist_layouts_give_the_original_frames(tmp_path, cache_dir, layout):
    reference = write_nmnist(tmp_path / "reference", "original")
    root = write_nmnist(tmp_path / layout, layout)
    for train, n in ((True, 12), (False, 6)):
        want = build_dataset("nmnist", reference, train=train, frames=4, cache_dir=cache_dir)
        detected = build_dataset("nmnist", root, train=train, frames=4, cache_dir=cache_dir)
        named = build_dataset("nmnist", root, train=train, frames=4, layout=layout, cache_dir=cache_dir)
        assert detected.layout == named.layout == layout and len(detected) == n
        assert_same_items(by_stem(detected), by_stem(want))
        assert_same_items(by_stem(named), by_stem(want))
    labels = {sample: label for _, sample, label, _ in nmnist_samples(12, 6)}
    assert {stem: label for stem, (label, _) in by_stem(detected).items()} == {
        s: labels[s] for s in by_stem(detected)}


@pytest.mark.parametrize("layout", LAYOUTS["cifar10dvs"])
def test_cifar10dvs_layouts_give_the_original_frames(tmp_path, cache_dir, layout):
    reference = write_cifar10dvs(tmp_path / "reference", "original")
    root = write_cifar10dvs(tmp_path / layout, layout)
    for train in (True, False):
        want = build_dataset("cifar10dvs", reference, train=train, frames=3, augment=False, cache_dir=cache_dir)
        got = build_dataset("cifar10dvs", root, train=train, frames=3, augment=False, cache_dir=cache_dir)
        assert got.layout == layout and len(got) == 10  # per class: index 0 train, index 1 test
        assert {rec.path.stem[-1] for rec in got.recordings} == {"0" if train else "1"}
        assert_same_items(by_stem(got), by_stem(want))


@pytest.mark.parametrize("layout", LAYOUTS["dvsgesture"])
def test_gesture_layouts_give_the_original_samples(tmp_path, cache_dir, layout):
    reference = write_gesture(tmp_path / "reference", "original")
    root = write_gesture(tmp_path / layout, layout)
    for train in (True, False):
        want = build_dataset("dvsgesture", reference, train=train, frames=4, cache_dir=cache_dir)
        got = build_dataset("dvsgesture", root, train=train, frames=4, cache_dir=cache_dir)
        classes = [c - 1 for rec, cs in GESTURE_RECORDINGS.items() if (int(rec[4:6]) >= 24) != train for c in cs]
        assert got.layout == layout and sorted(got.targets) == sorted(classes)
        assert as_multiset(got) == as_multiset(want)  # equal-count frames: tonic's ms times change nothing


def test_layout_errors_name_what_was_expected(tmp_path, cache_dir):
    root = write_nmnist(tmp_path / "nmnist", "original", train=2, test=1)
    with pytest.raises(DatasetNotFoundError, match=r"layout 'tonic'\); expected tonic: NMNIST/Train/<digit>/<id>\.bin"):
        build_dataset("nmnist", root, layout="tonic", cache_dir=cache_dir)
    with pytest.raises(ValueError, match="layout must be 'auto' or one of original, lists, tonic"):
        build_dataset("nmnist", root, layout="tonik", cache_dir=cache_dir)
    bad = tmp_path / "gesture" / "DVSGesture" / "ibmGestureTrain" / "user01_led"
    bad.mkdir(parents=True)
    np.save(bad / "clap.npy", np.zeros((3, 4)))
    with pytest.raises(DatasetNotFoundError, match=r"clap\.npy is not named <class>\.npy with a class 0-10"):
        build_dataset("dvsgesture", tmp_path / "gesture", cache_dir=cache_dir)
    np.save(bad / "clap.npy", np.zeros((3, 3)))
    (bad / "clap.npy").rename(bad / "0.npy")
    with pytest.raises(Exception, match=r"0\.npy: expected tonic's \[N, 4\] array .* got shape \(3, 3\)"):
        build_dataset("dvsgesture", tmp_path / "gesture", cache_dir=cache_dir)
    npz = tmp_path / "npz" / "events_np" / "train" / "0" / "0.npz"
    npz.parent.mkdir(parents=True)
    np.savez(npz, x=[1], y=[1], t=[1])
    with pytest.raises(Exception, match=r"0\.npz: expected a SpikingJelly events \.npz with arrays t, x, y, p"):
        build_dataset("nmnist", tmp_path / "npz", cache_dir=cache_dir)


# ----------------------------------------------------------------------------- SpikingJelly's own converters


def test_spikingjelly_converts_nmnist_and_cifar10dvs_to_the_npz_written_here(tmp_path):
    utils = pytest.importorskip("spikingjelly.datasets.utils")
    cifar10_dvs = pytest.importorskip("spikingjelly.datasets.cifar10_dvs")
    _, sample, label, path = nmnist_samples(1, 0)[0]
    write_nmnist(tmp_path / "nmnist", "spikingjelly-npz", train=1, test=0)
    ours = np.load(tmp_path / "nmnist" / "events_np" / "train" / str(label) / f"{sample}.npz")
    theirs = utils.load_ATIS_bin(path)
    for key in "txyp":
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    write_cifar10dvs(tmp_path / "aedat", "original", per_class=1)
    write_cifar10dvs(tmp_path / "npz", "spikingjelly-npz", per_class=1)
    theirs = cifar10_dvs._load_origin_data(tmp_path / "aedat" / "cat" / "cifar10_cat_0.aedat")
    ours = np.load(tmp_path / "npz" / "events_np" / "cat" / "cifar10_cat_0.npz")
    for key in "txyp":
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def test_spikingjelly_gesture_split_reads_like_the_original(tmp_path, cache_dir):
    gesture = pytest.importorskip("spikingjelly.datasets.dvs128_gesture")
    reference = write_gesture(tmp_path / "reference", "original")
    for recording in GESTURE_RECORDINGS:
        split = tmp_path / "sj" / "events_np" / ("test" if int(recording[4:6]) >= 24 else "train")
        for label in range(11):
            (split / str(label)).mkdir(parents=True, exist_ok=True)
        gesture._split_aedat_files_to_np(recording, reference / f"{recording}.aedat",
                                         reference / f"{recording}_labels.csv", split)
    for train in (True, False):
        got = build_dataset("dvsgesture", tmp_path / "sj", train=train, frames=5, split_by="time",
                            boundaries="spikingjelly", cache_dir=cache_dir)
        want = build_dataset("dvsgesture", reference, train=train, frames=5, split_by="time",
                             boundaries="spikingjelly", cache_dir=cache_dir)
        assert got.layout == "spikingjelly-npz" and as_multiset(got) == as_multiset(want)


def test_the_shared_subset_in_tonic_layout_is_read_like_the_subset(tmp_path, cache_dir):
    folder = shared_file("nmnist-small")
    root = tmp_path / "tonic" / "NMNIST" / "Test"
    for line in (folder / "test100.txt").read_text().splitlines()[1:21]:
        sample, label = line.split()
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{sample}.bin").symlink_to(folder / f"{sample}.bs2")
    got = by_stem(build_dataset("nmnist", tmp_path / "tonic", train=False, frames=3, size=16, cache_dir=cache_dir))
    want = by_stem(build_dataset("nmnist", folder, train=False, frames=3, size=16, cache_dir=cache_dir))
    assert len(got) == 20
    assert_same_items(got, {stem: want[stem] for stem in got})
