"""CIFAR10-DVS, N-MNIST and DVS128 Gesture data sets on small files in the documented layouts,
the real N-MNIST subset, the shipped recipes, and the trainer on frame sequences."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from event_files import (
    aedat3_packet,
    aedat3_word,
    dvs128_address,
    shared_file,
    write_aedat2,
    write_aedat3,
    write_atis,
)
from torch.utils.data import DataLoader

from spikeforge.data import DatasetNotFoundError, build_dataset, dataset_info
from spikeforge.data.events import CIFAR10DVS_CLASSES, EventFileError, FlipRoll, read_events
from spikeforge.runtime.loaders import build_datasets
from spikeforge.train import Trainer
from spikeforge.train.config import build_config
from spikeforge.train.tasks import time_first
from spikeforge.train.trained import build_model

# ----------------------------------------------------------------------------- CIFAR10-DVS


def make_cifar10dvs(root, indices=range(1, 11)):
    """Per class, recordings cifar10_<class>_<i>.aedat whose 20 events all sit at raw x = i, y = class."""
    for label, name in enumerate(CIFAR10DVS_CLASSES):
        (root / name).mkdir(parents=True)
        for i in indices:
            records = [(dvs128_address(i, label, k % 2), 1000 * k) for k in range(20)]
            write_aedat2(root / name / f"cifar10_{name}_{i}.aedat", records)
    return root


def test_cifar10dvs_split_items_and_augmentation(tmp_path, cache_dir):
    root = make_cifar10dvs(tmp_path / "CIFAR10-DVS")
    train = build_dataset("cifar10dvs", root, train=True, cache_dir=cache_dir)
    test = build_dataset("cifar10dvs", root, train=False, cache_dir=cache_dir)
    assert (len(train), len(test)) == (90, 10)  # 9/1 per class here; 900/100 on the full set
    # per class the highest file indices are the test set, in numeric (not name) order: _10, not _9
    assert [r.path.name for r in test.recordings] == [f"cifar10_{c}_10.aedat" for c in CIFAR10DVS_CLASSES]
    assert np.bincount(train.targets).tolist() == [9] * 10 and test.targets == list(range(10))
    frames, label = test[3]
    assert frames.shape == (10, 2, 48, 48) and frames.dtype == torch.float32 and label == 3
    assert isinstance(train.transform, FlipRoll) and train.transform.max_shift == 5 and test.transform is None
    assert torch.equal(test[3][0], frames)  # no randomness at test time
    raw = build_dataset("cifar10dvs", root, train=False, size=None, normalize="none", frames=2, cache_dir=cache_dir)
    frames, label = raw[3]
    assert frames.shape == (2, 2, 128, 128) and frames.sum() == 20
    assert frames[:, :, 3, 127 - 10].sum() == 20 and frames[0].sum() == frames[1].sum() == 10  # x flipped
    assert frames[:, 1].sum() == 10  # odd k: ON
    batch, labels = next(iter(DataLoader(test, batch_size=4)))
    assert batch.shape == (4, 10, 2, 48, 48) and time_first(batch).shape == (10, 4, 2, 48, 48)
    clone = pickle.loads(pickle.dumps(test))
    assert torch.equal(clone[5][0], test[5][0])


def test_event_sets_batch_time_first_for_models(tmp_path, cache_dir):
    """The documented path (``loader`` / ``collate_fn``) hands a model [T, B, ...]; a plain DataLoader's
    [B, T, ...] batch is only right for a batch-first (input_layout="BT") network."""
    import spikeforge as sf
    from spikeforge.data import time_first_collate

    test = build_dataset("cifar10dvs", make_cifar10dvs(tmp_path / "CIFAR10-DVS"), train=False, cache_dir=cache_dir)
    plain, plain_labels = next(iter(DataLoader(test, batch_size=4)))
    frames, labels = next(iter(test.loader(batch_size=4)))
    assert frames.shape == (10, 4, 2, 48, 48) and frames.is_contiguous()
    assert torch.equal(frames, plain.transpose(0, 1)) and torch.equal(labels, plain_labels)
    own = next(iter(DataLoader(test, batch_size=4, collate_fn=test.collate_fn)))
    assert torch.equal(own[0], frames) and test.collate_fn is time_first_collate
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), sf.LIF(), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten(), torch.nn.Linear(3, 10))
    out = sf.SpikingNetwork(backbone)(frames)
    assert out.shape == (10, 4, 10)
    torch.testing.assert_close(sf.SpikingNetwork(backbone, input_layout="BT")(plain), out)
    assert time_first_collate([torch.ones(3, 2, 5)] * 4).shape == (3, 4, 2, 5)  # bare [T, ...] items
    with pytest.raises(ValueError, match=r"time_first_collate expects items \(frames \[T, \.\.\.\], label\)"):
        time_first_collate([(torch.ones(3), 0)] * 2)


def test_cifar10dvs_errors(tmp_path, cache_dir):
    root = make_cifar10dvs(tmp_path / "dvs", indices=range(3))
    with pytest.raises(ValueError, match="cannot be downloaded automatically"):
        build_dataset("cifar10dvs", root, download=True)
    with pytest.raises(ValueError, match="needs a data root"):
        build_dataset("cifar10dvs", None)
    for f in (root / "truck").iterdir():
        f.unlink()
    with pytest.raises(DatasetNotFoundError, match=r"no \.aedat files in .* for truck: expected the ten class folders"):
        build_dataset("cifar10dvs", root, cache_dir=cache_dir)
    (root / "truck" / "cifar10_truck_0.aedat").write_bytes((root / "cat" / "cifar10_cat_0.aedat").read_bytes())
    bad = root / "cat" / "cifar10_cat_0.aedat"
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(EventFileError, match=rf"{bad}: file ends inside an event record .* at byte offset \d+"):
        build_dataset("cifar10dvs", root, cache_dir=cache_dir)
    with pytest.raises(DatasetNotFoundError, match="is not a folder"):
        build_dataset("cifar10dvs", tmp_path / "nowhere")


def test_tet_and_lsg_recipes_build_their_cifar10dvs_data_and_model(tmp_path, cache_dir):
    root = make_cifar10dvs(tmp_path / "dvs")
    for recipe in ("tet-vggsnn-cifar10dvs", "lsg-vggsnn-cifar10dvs"):
        config = build_config(recipe, [f"data.root={root}", f"data.options.cache_dir={cache_dir}"])
        train, test = build_datasets(config.data)
        assert (len(train), len(test)) == (90, 10) and train[0][0].shape == (config.timesteps, 2, 48, 48)
    model = build_model(config, 10, config.timesteps).eval()
    with torch.no_grad():
        assert model(time_first(test[0][0][None])).shape == (10, 1, 10)


# ----------------------------------------------------------------------------- N-MNIST


def digit_records(label: int, n: int = 30):
    """Events on row ``label`` of the 34x34 sensor over 300 ms."""
    return [(k % 34, label, k % 2, 10_000 * k) for k in range(n)]


def test_nmnist_official_layout(tmp_path, cache_dir):
    for split, ids in (("Train", range(2)), ("Test", range(1))):
        for d in range(10):
            (tmp_path / split / str(d)).mkdir(parents=True)
            for i in ids:
                write_atis(tmp_path / split / str(d) / f"{i:05d}.bin", digit_records(d))
    train = build_dataset("nmnist", tmp_path, train=True, cache_dir=cache_dir)
    test = build_dataset("nmnist", tmp_path, train=False, cache_dir=cache_dir, size=16, frames=3)
    assert (len(train), len(test)) == (20, 10) and sorted(train.targets) == sorted(list(range(10)) * 2)
    frames, label = train[5]
    assert (frames.shape == (10, 2, 34, 34) and frames[:, :, label].sum() > 0
            and frames.sum() == frames[:, :, label].sum())
    assert frames.amax(dim=(1, 2, 3)).tolist() == [1.0] * 10  # 3 events per 30 ms slice, max-normalised
    assert test[0][0].shape == (3, 2, 16, 16) and train.transform is None
    shifted = build_dataset("nmnist", tmp_path, train=True, cache_dir=cache_dir, max_shift=2)
    assert isinstance(shifted.transform, FlipRoll) and not shifted.transform.flip
    assert dataset_info("n-mnist").num_classes == 10 and dataset_info("nmnist").in_channels == 2


def test_nmnist_label_list_layout_and_errors(tmp_path, cache_dir):
    for sample, label in ((1, 3), (2, 7), (60001, 1)):
        write_atis(tmp_path / f"{sample}.bs2", digit_records(label))
    (tmp_path / "train2.txt").write_text("#sample #class\r\n1\t3\r\n2\t7\r\n")
    (tmp_path / "test1.txt").write_text("#sample #class\n60001\t1\n")
    train = build_dataset("nmnist", tmp_path, train=True, cache_dir=cache_dir)
    test = build_dataset("nmnist", tmp_path, train=False, cache_dir=cache_dir)
    assert train.targets == [3, 7] and test.targets == [1] and test[0][0][:, :, 1].sum() > 0
    (tmp_path / "test1.txt").write_text("#sample #class\n60002\t1\n")
    with pytest.raises(DatasetNotFoundError, match="lists sample 60002 but neither"):
        build_dataset("nmnist", tmp_path, train=False, cache_dir=cache_dir)
    (tmp_path / "test1.txt").write_text("#sample #class\n60001\tseven\n")
    with pytest.raises(EventFileError, match=r"test1.txt: line 2 is not .* at byte offset 15"):
        build_dataset("nmnist", tmp_path, train=False, cache_dir=cache_dir)
    (tmp_path / "test2.txt").write_text("")
    with pytest.raises(DatasetNotFoundError, match=r"2 label lists \['test1.txt', 'test2.txt'\]"):
        build_dataset("nmnist", tmp_path, train=False, cache_dir=cache_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"N-MNIST not found in .*\(layout 'auto'\); expected original"):
        build_dataset("nmnist", tmp_path / "empty", train=False)


def test_real_nmnist_subset_with_the_recipe_options(cache_dir):
    folder = shared_file("nmnist-small")
    config = build_config("vggsnn-nmnist-cpu", [f"data.root={folder}", f"data.options.cache_dir={cache_dir}"])
    train, test = build_datasets(config.data)
    assert (len(train), len(test)) == (1000, 100)
    for dataset, list_name in ((train, "train1K.txt"), (test, "test100.txt")):
        rows = [line.split() for line in (folder / list_name).read_text().splitlines()[1:] if line.strip()]
        assert [r.path.stem for r in dataset.recordings] == [sample for sample, _ in rows]
        assert dataset.targets == [int(label) for _, label in rows]
    frames, _ = train[0]
    assert frames.shape == (config.timesteps, 2, 16, 16) and config.model.kwargs["input_size"] == 16
    assert (frames.sum(dim=(1, 2, 3)) > 0).all()  # every saccade slice has events
    settings = json.loads((train.frames_path.parent / "settings.json").read_text())
    assert settings["frames"] == config.timesteps and settings["size"] == [16, 16]


@pytest.mark.parametrize("split_by", ["count", "time"])
def test_real_nmnist_set_frames_equal_spikingjelly_and_tonic_in_their_modes(cache_dir, split_by):
    utils = pytest.importorskip("spikingjelly.datasets.utils")
    to_frame = pytest.importorskip("tonic.functional").to_frame_numpy
    folder = shared_file("nmnist-small")
    sets = {mode: build_dataset("nmnist", folder, train=False, frames=10, split_by=split_by, normalize="none",
                                boundaries=mode, cache_dir=cache_dir) for mode in ("spikingjelly", "tonic")}
    assert sets["spikingjelly"].frames_path != sets["tonic"].frames_path  # the mode is part of the cache key
    for i, rec in enumerate(sets["tonic"].recordings):
        events = read_events(rec.path)
        theirs = utils.integrate_events_by_fixed_frames_number({k: events[k] for k in "txyp"},
                                                               "number" if split_by == "count" else "time", 10, 34, 34)
        np.testing.assert_array_equal(sets["spikingjelly"][i][0].numpy(), theirs, err_msg=rec.path.name)
        theirs = to_frame(events.copy(), (34, 34, 2), **{f"n_{'event' if split_by == 'count' else 'time'}_bins": 10})
        np.testing.assert_array_equal(sets["tonic"][i][0].numpy(), theirs, err_msg=rec.path.name)


# ----------------------------------------------------------------------------- DVS128 Gesture


def test_dvs_gesture_windows_split_and_errors(tmp_path, cache_dir):
    folder = tmp_path / "DvsGesture"
    folder.mkdir()
    # inside window 1: pixel (1, 1); window 2: pixel (2, 2); outside both: pixel (3, 3)
    events = [(aedat3_word(3, 3, 1), 50)] + [(aedat3_word(1, 1, k % 2), 100 + k) for k in range(40)]
    events += [(aedat3_word(3, 3, 1), 250)] + [(aedat3_word(2, 2, 1), 300 + 3 * k) for k in range(50)]
    for user in ("user01_led", "user24_natural"):
        write_aedat3(folder / f"{user}.aedat", [aedat3_packet(events[:45]), aedat3_packet(events[45:])])
    (folder / "user01_led_labels.csv").write_text("class,startTime_usec,endTime_usec\n1,100,200\n11,300,450\n")
    (folder / "user24_natural_labels.csv").write_text("class,startTime_usec,endTime_usec\n4,300,450\n")
    train = build_dataset("dvsgesture", tmp_path, train=True, cache_dir=cache_dir, frames=4, normalize="none")
    test = build_dataset("dvs-gesture", tmp_path, train=False, cache_dir=cache_dir, frames=4, normalize="none")
    assert train.targets == [0, 10] and test.targets == [3] and len(train.classes) == 11
    first, second = train[0][0], train[1][0]
    assert first.shape == (4, 2, 128, 128) and first.sum() == first[:, :, 1, 1].sum() == 40
    assert second.sum() == second[:, 1, 2, 2].sum() == 50 and second.sum(dim=(1, 2, 3)).tolist() == [12, 13, 12, 13]
    timed = build_dataset("dvsgesture", tmp_path, train=False, cache_dir=cache_dir, frames=3, split_by="time")
    per_slice = torch.tensor([(timed[0][0][i] > 0).sum() for i in range(3)])
    assert (per_slice == 1).all()  # one pixel, present in each 50-microsecond third of [300, 450)
    (folder / "user24_natural_labels.csv").unlink()
    with pytest.raises(DatasetNotFoundError, match="user24_natural_labels.csv is missing"):
        build_dataset("dvsgesture", tmp_path, train=False, cache_dir=cache_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="DVS128 Gesture not found"):
        build_dataset("dvsgesture", tmp_path / "empty", train=True, cache_dir=cache_dir)


# ----------------------------------------------------------------------------- trainer


def test_trainer_runs_on_frame_sequences(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setattr("spikeforge.train.trainer.redraw_plots", lambda *args: [])  # not what this test is about
    for sample in range(40):
        write_atis(tmp_path / f"{sample}.bin", digit_records(sample % 2 * 20))
    lines = "".join(f"{s}\t{s % 2}\n" for s in range(40))
    (tmp_path / "train.txt").write_text(lines[: lines.index("32\t")])
    (tmp_path / "test.txt").write_text(lines[lines.index("32\t"):])
    config = build_config("digits", [
        "model.kwargs={width: 4, in_channels: 2}", "data.name=nmnist", f"data.root={tmp_path}", "data.batch_size=8",
        f"data.options={{frames: 2, size: 16, cache_dir: {cache_dir}}}", "epochs=2", "timesteps=2",
        "progress=false", "log_window_fraction=true", "device=cpu"])
    summary = Trainer(config, tmp_path / "run", log=lambda *a: None).fit()
    assert summary["epochs"] == 2 and 0.0 <= summary["final_acc"] <= 1.0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and records[-1]["window_fraction"]  # the 5-D sample path of window_fractions


def test_an_edited_recording_of_the_same_size_gets_new_frames(tmp_path, cache_dir):
    for d in range(10):
        (tmp_path / "Train" / str(d)).mkdir(parents=True)
        write_atis(tmp_path / "Train" / str(d) / "00000.bin", digit_records(d))
    before = build_dataset("nmnist", tmp_path, train=True, frames=2, cache_dir=cache_dir)
    path = tmp_path / "Train" / "0" / "00000.bin"
    stat = path.stat()
    write_atis(path, digit_records(1))  # same byte size, other events
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a real edit moves mtime too
    after = build_dataset("nmnist", tmp_path, train=True, frames=2, cache_dir=cache_dir)
    assert path.stat().st_size == stat.st_size and after.frames_path != before.frames_path
    index = [r.path for r in after.recordings].index(path)
    assert not torch.equal(before[index][0], after[index][0])
