"""Small image sets held in memory as one uint8 tensor, augmented a batch at a time.

On a machine with few cores, per-image PIL transforms in DataLoader workers
compete with training for the same cores; on a GPU they starve it. A
:class:`MemoryImageSet` keeps the whole set as ``uint8 [N, C, H, W]`` and does
the standard CIFAR augmentation (zero-padded random crop, horizontal flip)
and normalisation on whole batches with tensor ops, on the training device.

``batches(...)`` is the fast path the trainer uses; ``__getitem__`` gives the
same augmentation one image at a time so the set also works with a plain
``DataLoader``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["MemoryImageSet", "BatchIterator", "random_crop_flip"]


def random_crop_flip(images: Tensor, padding: int, flip: bool, generator: torch.Generator | None = None) -> Tensor:
    """Per-image random crop of the zero-padded batch and random horizontal flip.

    ``images``: ``[B, C, H, W]`` (any dtype, any device) -> same shape. Each
    image gets its own offsets, uniform in ``[0, 2*padding]`` per axis (as
    ``RandomCrop(H, padding)``), and is flipped with probability 1/2. Random
    numbers come from ``generator`` (a CPU generator) and are moved to the
    images' device.
    """
    b, _, h, w = images.shape
    device = images.device
    if padding > 0:
        dy, dx = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(device)
        padded = F.pad(images, (padding, padding, padding, padding))
        rows = dy[:, None] + torch.arange(h, device=device)  # [B, H]
        cols = dx[:, None] + torch.arange(w, device=device)  # [B, W]
        batch = torch.arange(b, device=device)[:, None, None]
        images = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        flips = (torch.rand(b, generator=generator) < 0.5).to(device)
        images = torch.where(flips[:, None, None, None], images.flip(3), images)
    return images


class MemoryImageSet(Dataset):
    """``uint8 [N, C, H, W]`` images and ``int64 [N]`` labels with batch-wise augmentation.

    Args:
        images: ``uint8 [N, C, H, W]`` (or ``[N, H, W, C]`` with ``channels_last_input=True``).
        labels: ``[N]`` class indices.
        mean, std: per-channel normalisation applied after scaling to ``[0, 1]``.
        crop_padding: random-crop padding in pixels (0: no crop).
        flip: random horizontal flips.
        augment: ``False`` turns crop and flip off (test splits).
        classes: class names (default: ``"0"``, ``"1"``, ... up to the largest label).
    """

    def __init__(self, images: Tensor, labels: Tensor | Sequence[int], mean: Sequence[float], std: Sequence[float],
                 crop_padding: int = 4, flip: bool = True, augment: bool = True, channels_last_input: bool = False,
                 classes: Sequence[str] | None = None):
        images = torch.as_tensor(images)
        if channels_last_input:
            images = images.permute(0, 3, 1, 2)
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be [{images.shape[0]}], got {tuple(labels.shape)}")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError(f"mean and std need {images.shape[1]} values, one per channel")
        self.images = images.contiguous()
        self.labels = labels
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._crop, self._flip = crop_padding, flip  # as configured, for subsets that switch augmentation
        self.crop_padding = crop_padding if augment else 0
        self.flip = flip and augment
        self.classes = list(classes) if classes is not None else [str(i) for i in range(int(labels.max()) + 1)]

    @property
    def targets(self) -> list[int]:
        """Labels as a list (torchvision's attribute name)."""
        return self.labels.tolist()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.prepare(self.images[index : index + 1])[0]
        return image, int(self.labels[index])

    def subset(self, indices, augment: bool | None = None) -> "MemoryImageSet":
        """The images at ``indices`` as a new set (shares nothing); ``augment`` overrides crop and flip."""
        index = torch.as_tensor(indices, dtype=torch.long)
        on = (self.crop_padding > 0 or self.flip) if augment is None else augment
        return MemoryImageSet(self.images[index], self.labels[index], self.mean, self.std,
                              crop_padding=self._crop, flip=self._flip, augment=on, classes=self.classes)

    def prepare(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment (if on) and normalise a ``uint8 [B, C, H, W]`` batch -> ``float32``, same device."""
        images = random_crop_flip(images, self.crop_padding, self.flip, generator)
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return (images.float().div_(255.0) - mean).div_(std)

    def batches(self, batch_size: int, *, shuffle: bool, seed: int = 0, drop_last: bool = False,
                device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
                start: int = 0) -> "BatchIterator":
        """Batches ``(float32 [B, C, H, W] on device, int64 [B])`` for one epoch.

        ``seed`` fixes the order and the augmentation: the augmentation of batch ``i``
        depends on ``(seed, i)`` only, so ``start=k`` (a resumed epoch) gives exactly the
        batches ``k, k+1, ...`` of the whole epoch without preparing the first ``k``. With
        ``world_size > 1`` every rank gets a disjoint share of one shared permutation (equal
        shares with ``drop_last``; otherwise together they cover every sample once).
        """
        return BatchIterator(self, batch_size, shuffle, seed, drop_last, torch.device(device), rank, world_size, start)


class BatchIterator:
    """One epoch of :meth:`MemoryImageSet.batches` from batch ``start`` on (``len``: the batches left)."""

    def __init__(self, data: MemoryImageSet, batch_size: int, shuffle: bool, seed: int, drop_last: bool,
                 device: torch.device, rank: int, world_size: int, start: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.data, self.batch_size, self.drop_last, self.device = data, batch_size, drop_last, device
        self.start = start
        n = len(data)
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        self.augmentation_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        if drop_last:  # equal shares, so every rank runs the same number of steps
            order = order[: n - n % world_size]
        self.order = order[rank::world_size]

    def batch_count(self) -> int:
        """Batches in the whole epoch."""
        n = len(self.order)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __len__(self) -> int:
        return max(self.batch_count() - self.start, 0)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(self.start, self.batch_count()):
            index = self.order[i * self.batch_size : (i + 1) * self.batch_size]
            images = self.data.images[index].to(self.device, non_blocking=True)
            labels = self.data.labels[index].to(self.device, non_blocking=True)
            yield self.data.prepare(images, self.augmentation_generator(i)), labels

    def augmentation_generator(self, index: int) -> torch.Generator:
        """The random numbers of batch ``index``'s crops and flips (a function of the seed and ``index``)."""
        return torch.Generator().manual_seed(self.augmentation_seed + index)
