"""In-memory image sets: batch augmentation against a per-image reference, sharding, real CIFAR-10."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spikeforge.data import MemoryImageSet, random_crop_flip


def _reference_crop_flip(images, padding, offsets, flips):
    """One image at a time: pad with zeros, slice the window at (dy, dx), flip if asked."""
    out = []
    h, w = images.shape[-2:]
    for image, (dy, dx), flip in zip(images, offsets, flips):
        padded = F.pad(image, (padding,) * 4)
        crop = padded[:, dy : dy + h, dx : dx + w]
        out.append(crop.flip(-1) if flip else crop)
    return torch.stack(out)


def test_random_crop_flip_matches_per_image_reference():
    images = torch.randint(0, 256, (16, 3, 8, 10), dtype=torch.uint8)
    out = random_crop_flip(images, 3, True, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # replay the same draws
    dy, dx = torch.randint(0, 7, (2, 16), generator=g)
    flips = torch.rand(16, generator=g) < 0.5
    expected = _reference_crop_flip(images, 3, list(zip(dy.tolist(), dx.tolist())), flips.tolist())
    assert torch.equal(out, expected)
    assert 0 < int(flips.sum()) < 16 and len({(a, b) for a, b in zip(dy.tolist(), dx.tolist())}) > 4


def test_no_augmentation_is_identity_and_normalisation_is_exact():
    images = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    data = MemoryImageSet(images, torch.arange(6) % 3, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), augment=False)
    x = data.prepare(images)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (images.float() / 255 - mean) / std)
    assert data.classes == ["0", "1", "2"] and data.targets == [0, 1, 2, 0, 1, 2]
    image, label = data[4]
    torch.testing.assert_close(image, x[4])
    assert label == 1


def test_batches_cover_the_set_and_shard_disjointly():
    n = 103
    data = MemoryImageSet(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n), (0.0,), (1.0,), augment=False,
                          classes=[str(i) for i in range(n)])
    test_order = torch.cat([y for _, y in data.batches(10, shuffle=False)])
    assert torch.equal(test_order, torch.arange(n))
    shards = [torch.cat([y for _, y in data.batches(7, shuffle=True, seed=3, rank=r, world_size=3)]) for r in range(3)]
    assert sorted(torch.cat(shards).tolist()) == list(range(n))  # evaluation: every sample once
    train = [data.batches(7, shuffle=True, seed=3, drop_last=True, rank=r, world_size=3) for r in range(3)]
    assert len({len(t) for t in train}) == 1 and len(train[0]) == (n - n % 3) // 3 // 7
    seen = [torch.cat([y for _, y in t]) for t in train]
    assert len(set(torch.cat(seen).tolist())) == sum(len(s) for s in seen)  # disjoint
    again = torch.cat([y for _, y in data.batches(7, shuffle=True, seed=3, drop_last=True, rank=0, world_size=3)])
    assert torch.equal(again, seen[0])


def test_bad_input_is_rejected_with_its_shape():
    with pytest.raises(ValueError, match=r"uint8 \[N, C, H, W\]"):
        MemoryImageSet(torch.zeros(2, 3, 4), [0, 1], (0.0,), (1.0,))
    with pytest.raises(ValueError, match="labels must be"):
        MemoryImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), [0], (0.0,), (1.0,))


def test_real_cifar10_in_memory_equals_torchvision_pipeline(cifar10_root):
    from spikeforge.data import cifar10

    fast = cifar10(cifar10_root, train=False, in_memory=True)
    slow = cifar10(cifar10_root, train=False)
    assert isinstance(fast, MemoryImageSet) and len(fast) == len(slow) == 10_000
    assert fast.classes == slow.classes and fast.targets == list(slow.targets)
    x, y = next(iter(fast.batches(64, shuffle=False)))
    expected = torch.stack([slow[i][0] for i in range(64)])
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=1e-5)
    assert torch.equal(y, torch.tensor(slow.targets[:64]))
    train = cifar10(cifar10_root, train=True, in_memory=True)
    assert (train.crop_padding, train.flip) == (4, True) and len(train) == 50_000
    with pytest.raises(ValueError, match="autoaugment or cutout"):
        cifar10(cifar10_root, train=True, in_memory=True, cutout=8)
