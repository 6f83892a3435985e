"""CIFAR-10 on the real data (skips when ../shared/data is absent)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from spikeforge.data import CIFAR10_MEAN, CIFAR10_STD, DatasetCorruptError, build_dataset, cifar10

# Pixel standard deviation of the CIFAR-10 training set per channel. The
# normalisation constants the papers use, (0.2023, 0.1994, 0.2010), are not the
# pixel std, so normalised images have std ~1.22-1.30 rather than 1; the test
# checks that value instead of pretending it is 1.
PIXEL_STD = (0.2470, 0.2435, 0.2616)


@pytest.fixture(scope="module")
def train_set(cifar10_root):
    return cifar10(cifar10_root, train=True)


@pytest.fixture(scope="module")
def test_set(cifar10_root):
    return cifar10(cifar10_root, train=False)


def test_sizes_and_shapes(train_set, test_set):
    assert len(train_set) == 50_000 and len(test_set) == 10_000
    for ds in (train_set, test_set):
        x, y = ds[123]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
        assert len(ds.classes) == 10
    assert np.bincount(train_set.targets).tolist() == [5000] * 10


def test_train_augmentation_varies_and_test_is_fixed(train_set, test_set, cifar10_root):
    torch.manual_seed(0)
    views = [train_set[7][0] for _ in range(6)]
    assert any(not torch.equal(views[0], v) for v in views[1:])
    assert torch.equal(test_set[7][0], test_set[7][0])
    plain = cifar10(cifar10_root, train=True, augment=False)
    assert torch.equal(plain[7][0], plain[7][0])


def test_normalisation(test_set):
    n = 3000
    x = torch.stack([test_set[i][0] for i in range(n)])
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    # exact inverse: un-normalising gives back the stored 8-bit pixels
    raw = torch.from_numpy(test_set.data[:n]).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(x * std + mean, raw, atol=1e-5)
    m, s = x.mean((0, 2, 3)), x.std((0, 2, 3))
    assert torch.allclose(m, torch.zeros(3), atol=0.05), m
    expected = torch.tensor(PIXEL_STD) / torch.tensor(CIFAR10_STD)
    assert torch.allclose(s, expected, atol=0.05), (s, expected)


def test_options_and_registry(cifar10_root):
    ds = build_dataset("CIFAR-10", cifar10_root, train=True, autoaugment=True, cutout=16)
    torch.manual_seed(1)
    x, _ = ds[0]
    assert x.shape == (3, 32, 32) and int((x == 0).all(0).sum()) > 0  # a cutout hole
    # the data folder itself is accepted as root
    assert len(cifar10(cifar10_root / "cifar-10-batches-py", train=False)) == 10_000


def test_transform_runs_after_normalisation_and_cutout(cifar10_root, test_set):
    mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(3, 1, 1)
    flipped = cifar10(cifar10_root, train=False, transform=lambda x: x.flip(-1), target_transform=lambda y: y + 100)
    for i in (0, 4321, 9999):
        # independent reference: the stored 8-bit pixels, normalised by hand, then the user's flip
        raw = torch.from_numpy(test_set.data[i]).permute(2, 0, 1).float() / 255
        x, y = flipped[i]
        torch.testing.assert_close(x, ((raw - mean) / std).flip(-1), atol=1e-5, rtol=0)
        assert y == test_set.targets[i] + 100
    # training split: the same random crop/flip/hole as without a transform, then the transform
    plain = cifar10(cifar10_root, train=True, cutout=8)
    shifted = build_dataset("cifar10", cifar10_root, train=True, cutout=8, transform=[lambda x: x + 1])
    for i in (3, 777):
        torch.manual_seed(i)
        want = plain[i][0] + 1
        torch.manual_seed(i)
        got = shifted[i][0]
        assert torch.equal(got, want) and int((got == 1).all(0).sum()) > 0  # the Cutout hole, shifted by 1


def test_truncated_batch_file(cifar10_root, tmp_path):
    src = cifar10_root / "cifar-10-batches-py"
    dst = tmp_path / "cifar-10-batches-py"
    dst.mkdir()
    for name in os.listdir(src):
        if name != "data_batch_3":
            os.symlink(src / name, dst / name)
    with open(src / "data_batch_3", "rb") as f:
        (dst / "data_batch_3").write_bytes(f.read(1_000_000))
    with pytest.raises(DatasetCorruptError) as info:
        cifar10(tmp_path, train=True)
    msg = str(info.value)
    assert "\n" not in msg and f"{dst / 'data_batch_3'} fails the md5 check" in msg
    assert "data_batch_1" not in msg  # only the bad file is named
    shutil.rmtree(dst)
