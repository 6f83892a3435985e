"""The embedded digits set: content, split, determinism, and that it is learnable."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.data import Cutout, build_dataset, digits, digits_split
from spikeforge.data.digits import DIGITS_NUM_SAMPLES, _load_raw
from spikeforge.runtime.loaders import build_datasets
from spikeforge.train.config import build_config

# Counts per class in the 1,797-sample UCI test file (as published).
CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def _fresh(train: bool, size: int = 16):
    _load_raw.cache_clear()  # really re-read and re-verify the file
    return digits(train, size=size)


def test_sizes_shapes_and_range():
    tr, te = digits(True), digits(False)
    assert len(tr) + len(te) == DIGITS_NUM_SAMPLES == 1797
    assert (len(tr), len(te)) == (1442, 355)
    for ds in (tr, te):
        assert ds.data.shape == (len(ds), 1, 16, 16) and ds.data.dtype == torch.float32
        assert ds.targets.dtype == torch.int64
        assert float(ds.data.min()) == 0.0 and float(ds.data.max()) == 1.0
        assert sorted(ds.targets.unique().tolist()) == list(range(10))
        x, y = ds[0]
        assert x.shape == (1, 16, 16) and isinstance(y, int)
    assert np.bincount(np.concatenate([tr.targets.numpy(), te.targets.numpy()])).tolist() == CLASS_COUNTS


def test_split_is_stratified_and_documented():
    _, labels = _load_raw()
    te = digits_split(train=False)
    for c, n in enumerate(CLASS_COUNTS):
        members = np.flatnonzero(labels == c)
        # every fifth sample of each class, in file order
        assert np.array_equal(np.intersect1d(te, members), members[4::5])
        assert int((labels[te] == c).sum()) == n // 5
    frac = np.bincount(labels[te], minlength=10) / np.array(CLASS_COUNTS)
    assert np.all(np.abs(frac - 0.2) < 0.01)


def test_split_is_deterministic_and_disjoint():
    a_tr, a_te = _fresh(True), _fresh(False)
    b_tr, b_te = _fresh(True), _fresh(False)
    assert torch.equal(a_tr.data, b_tr.data) and torch.equal(a_tr.targets, b_tr.targets)
    assert torch.equal(a_te.data, b_te.data) and torch.equal(a_te.targets, b_te.targets)
    assert not np.intersect1d(a_tr.indices, a_te.indices).size
    # compare the images themselves, not just indices (the file has no duplicate images)
    train_images = {x.numpy().tobytes() for x in a_tr.data}
    assert len(train_images) == len(a_tr)
    assert not any(x.numpy().tobytes() in train_images for x in a_te.data)


def test_same_tensors_on_every_machine():
    # The factor-2 bilinear upsampling is exact in float32, so the bytes are fixed.
    def digest(ds):
        return hashlib.sha256(ds.data.numpy().tobytes() + ds.targets.numpy().tobytes()).hexdigest()[:16]

    assert digest(digits(True)) == "9e9b15c23833adf5"
    assert digest(digits(False)) == "cc85125094a8a993"


def test_original_grid_matches_raw_values():
    images, labels = _load_raw()
    ds = digits(True, size=8)
    idx = digits_split(True)
    assert torch.equal(ds.data[:, 0] * 16, torch.from_numpy(images[idx].astype(np.float32)))
    assert torch.equal(ds.targets, torch.from_numpy(labels[idx].astype(np.int64)))


def test_loading_is_fast():
    start = time.perf_counter()
    _fresh(True), _fresh(False)
    assert time.perf_counter() - start < 1.0


def test_bad_size_and_registry():
    with pytest.raises(ValueError, match="size"):
        digits(True, size=0)
    ds = build_dataset("digits", "/no/such/root", train=False, size=8)
    assert ds.data.shape == (355, 1, 8, 8)


def test_transform_and_target_transform():
    plain = digits(False, size=8)
    images, labels = _load_raw()
    idx = digits_split(False)
    both = build_dataset("digits", None, train=False, size=8, transform=lambda x: 1 - x,
                         target_transform=lambda y: f"digit {y}")
    for i in (0, 100, 354):
        x, y = both[i]
        want = 1 - torch.from_numpy(images[idx[i]].astype(np.float32)) / 16  # from the raw file, by hand
        assert torch.equal(x, want[None]) and y == f"digit {labels[idx[i]]}"
        assert torch.equal(plain[i][0], 1 - x)
    cut = build_dataset("digits", None, train=False, transform={"name": "cutout", "size": 40})
    assert not cut[0][0].any()  # a hole larger than the 16x16 image
    config = build_config("digits", ["data.options.transform.name=cutout", "data.options.transform.size=4"])
    assert all(isinstance(s.transform, Cutout) and s.transform.size == 4 for s in build_datasets(config.data))
    with pytest.raises(ValueError, match="^transform must be a callable, one of cutout, .*got 'blur'$"):
        digits(True, transform="blur")
    with pytest.raises(ValueError, match="^target_transform must be a callable or a list of callables; got 3$"):
        digits(True, target_transform=3)


def test_matches_scikit_learn():
    datasets = pytest.importorskip("sklearn.datasets")
    ref = datasets.load_digits()
    images, labels = _load_raw()
    assert np.array_equal(ref.images, images.astype(ref.images.dtype))
    assert np.array_equal(ref.target, labels.astype(ref.target.dtype))


def test_small_spiking_cnn_learns_it():
    """The embedded set is the demo set: a tiny spiking CNN must reach >= 95% in
    three epochs (about 97% with seeds 0-2, ~2 s of CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread is faster and immune to oversubscription
    try:
        acc = _train_and_test()
    finally:
        torch.set_num_threads(threads)
    assert acc >= 0.95, acc


def _train_and_test() -> float:
    torch.manual_seed(0)
    tr, te = digits(True), digits(False)
    backbone = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), sf.LIF(decay=0.5), nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), sf.LIF(decay=0.5), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    )
    net = sf.SpikingNetwork(backbone, timesteps=2)
    epochs, batch = 3, 64
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * -(-len(tr) // batch))
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(tr), generator=gen).split(batch):
            loss = nn.functional.cross_entropy(net(tr.data[idx]).mean(0), tr.targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        return (net(te.data).mean(0).argmax(1) == te.targets).float().mean().item()
