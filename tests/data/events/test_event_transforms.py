"""Transforms of the event data sets: ``transform`` on frames, ``event_transform`` on events before integration
(uncached), ``target_transform`` on labels, the training-only ``augment``, the named built-ins and how a
recipe names them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from layout_files import write_cifar10dvs, write_nmnist

from spikeforge.data import build_dataset
from spikeforge.data.events import Compose, DropEvents, FlipRoll, event_frames, make_events, read_events
from spikeforge.runtime.loaders import build_datasets
from spikeforge.train.config import build_config


@pytest.fixture
def nmnist_root(tmp_path):
    return write_nmnist(tmp_path / "nmnist", "original", train=6, test=3)


def test_transform_and_target_transform_apply_to_every_item(nmnist_root, cache_dir):
    plain = build_dataset("nmnist", nmnist_root, frames=4, cache_dir=cache_dir)
    doubled = build_dataset("nmnist", nmnist_root, frames=4, cache_dir=cache_dir, transform=lambda f: 2 * f,
                            target_transform=lambda y: y + 100)
    assert doubled.frames_path == plain.frames_path  # frame transforms run after the cache
    for i in range(len(plain)):
        frames, label = doubled[i]
        assert torch.equal(frames, 2 * plain[i][0]) and label == plain.targets[i] + 100


def test_event_transform_runs_before_integration_and_is_not_cached(nmnist_root, cache_dir):
    def off_only(events):
        return events[events["p"] == 0]

    build_dataset("nmnist", nmnist_root, frames=4, normalize="none", cache_dir=cache_dir)
    entries = sorted(cache_dir.iterdir())
    off = build_dataset("nmnist", nmnist_root, frames=4, normalize="none", cache_dir=cache_dir,
                        event_transform=off_only)
    assert off.frames_path is None and sorted(cache_dir.iterdir()) == entries  # nothing cached
    for i, rec in enumerate(off.recordings):
        frames = off[i][0]
        np.testing.assert_array_equal(frames.numpy(), event_frames(off_only(read_events(rec.path)), (34, 34), 4,
                                                                   "time"))
        assert not frames[:, 1].any() and frames.sum() > 0
    with pytest.raises(TypeError, match="event_transform must return a structured array with fields x, y, t, p"):
        build_dataset("nmnist", nmnist_root, cache_dir=cache_dir, event_transform=lambda e: e["x"])[0]


def test_a_tonic_event_transform_plugs_in(nmnist_root, cache_dir):
    transforms = pytest.importorskip("tonic.transforms")
    crop = transforms.CropTime(max=100_000)
    cropped = build_dataset("nmnist", nmnist_root, frames=2, split_by="count", normalize="none",
                            cache_dir=cache_dir, event_transform=crop)
    for i, rec in enumerate(cropped.recordings):
        events = read_events(rec.path)
        want = event_frames(events[events["t"] <= 100_000], (34, 34), 2)
        np.testing.assert_array_equal(cropped[i][0].numpy(), want)


def test_augment_is_for_the_training_split_and_named_transforms_build(tmp_path, cache_dir):
    root = write_cifar10dvs(tmp_path / "dvs", "original")
    train = build_dataset("cifar10dvs", root, train=True, cache_dir=cache_dir)
    test = build_dataset("cifar10dvs", root, train=False, cache_dir=cache_dir)
    assert isinstance(train.transform, FlipRoll) and train.transform.max_shift == 5 and test.transform is None
    named = build_dataset("cifar10dvs", root, cache_dir=cache_dir, augment={"name": "flip_roll", "max_shift": 2},
                          transform=[lambda f: f + 1], event_transform={"name": "drop_events", "p": 0.25})
    assert isinstance(named.transform, Compose) and named.transform.transforms[0].max_shift == 2
    assert isinstance(named.event_transform, DropEvents) and named.event_transform.p == 0.25
    assert build_dataset("cifar10dvs", root, cache_dir=cache_dir, augment=False).transform is None
    with pytest.raises(ValueError, match="augment must be a callable, one of flip_roll, .* got 'flip_rol'"):
        build_dataset("cifar10dvs", root, cache_dir=cache_dir, augment="flip_rol")
    with pytest.raises(ValueError, match="augment: flip_roll .*unexpected keyword argument 'shift'"):
        build_dataset("cifar10dvs", root, cache_dir=cache_dir, augment={"name": "flip_roll", "shift": 2})
    with pytest.raises(ValueError, match="target_transform must be a callable"):
        build_dataset("cifar10dvs", root, cache_dir=cache_dir, target_transform="onehot")


def test_a_recipe_names_transforms_in_its_data_options(tmp_path, cache_dir):
    root = write_cifar10dvs(tmp_path / "dvs", "original")
    config = build_config("tet-vggsnn-cifar10dvs", [
        f"data.root={root}", f"data.options.cache_dir={cache_dir}", "data.options.augment.name=flip_roll",
        "data.options.augment.max_shift=1", "data.options.event_transform=drop_events"])
    train, test = build_datasets(config.data)
    assert isinstance(train.transform, FlipRoll) and train.transform.max_shift == 1 and test.transform is None
    assert isinstance(train.event_transform, DropEvents) and train.settings.boundaries == "spikingjelly"
    assert train[0][0].shape == (10, 2, 48, 48)


def test_drop_events_drops_each_event_with_probability_p():
    events = make_events(np.zeros(20_000), np.zeros(20_000), np.arange(20_000), np.zeros(20_000))
    kept = DropEvents(0.25, generator=torch.Generator().manual_seed(0))(events)
    assert abs(len(kept) / 20_000 - 0.75) < 0.02 and np.all(np.diff(kept["t"]) > 0)
    assert len(DropEvents(0.0)(events)) == 20_000
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\)"):
        DropEvents(1.0)
