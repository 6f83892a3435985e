"""A run's data: the recipe's sets, a class-balanced training subset, and the batches of an epoch
(their order a function of ``(seed, epoch)``, so that a resumed run sees the same batches)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler, Subset
from torch.utils.data.distributed import DistributedSampler

from ..data import build_dataset
from ..data.memory import MemoryImageSet
from .config import DataConfig
from .distributed import DistInfo

__all__ = ["build_split", "build_datasets", "evaluation_set", "num_classes_of", "class_balanced_indices",
           "training_subset", "epoch_batches"]


def build_split(data: DataConfig, train: bool, **options) -> Dataset:
    """The training (``train=True``) or test set of a recipe's ``data`` section (``options`` over its own)."""
    common = dict(root=data.root, **data.options) | options
    if data.download:
        common["download"] = True
    return build_dataset(data.name, train=train, **common)


def build_datasets(data: DataConfig) -> tuple[Dataset, Dataset]:
    """``(training set, test set)`` of a recipe's ``data`` section (the whole training set: see
    :func:`training_subset`)."""
    return build_split(data, True), build_split(data, False)


def evaluation_set(data: DataConfig, root: str | None = None) -> Dataset:
    """The test set of a recipe's ``data`` section from ``root`` (default: the section's), never
    downloaded whatever ``data.download`` says (a user asks for downloads when training, not when testing)."""
    return build_split(replace(data, download=False, root=root or data.root), False)


def num_classes_of(dataset: Dataset) -> int:
    for attr in ("num_classes", "classes"):
        value = getattr(dataset, attr, None)
        if value is not None:
            return value if isinstance(value, int) else len(value)
    raise ValueError(f"cannot tell the number of classes of {type(dataset).__name__}: set model.kwargs.num_classes")



def class_balanced_indices(labels, n: int) -> list[int]:
    """Indices of ``n`` samples (all if fewer) with as equal a share per class as the class sizes allow,
    each class's first samples in the original order; the lower labels take the remainder.

    ``labels``: class indices ``>= 0``, one per sample (a sequence or an int tensor ``[N]``).
    Returns the chosen indices in ascending order.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    grouped = torch.argsort(labels, stable=True)  # by class, original order within each class
    counts = torch.bincount(labels)
    first_of_class = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(labels)  # position of each sample within its class
    rank[grouped] = torch.arange(len(labels)) - first_of_class[labels[grouped]]
    order = torch.argsort(rank * len(counts) + labels, stable=True)  # round robin over the classes
    return sorted(order[:n].tolist())



def training_subset(dataset: Dataset, n: int | None) -> Dataset:
    """The first ``n`` samples of ``dataset``, class-balanced when it has ``targets`` (``data.subset``);
    ``dataset`` itself when ``n`` is None or not smaller than it."""
    if n is None or n >= len(dataset):
        return dataset
    labels = getattr(dataset, "targets", None)
    indices = class_balanced_indices(labels, n) if labels is not None else list(range(n))
    return dataset.subset(indices) if isinstance(dataset, MemoryImageSet) else Subset(dataset, indices)



def epoch_batches(dataset: Dataset, batch_size: int, *, train: bool, seed: int, epoch: int,
                  device: torch.device, workers: int = 0, dist: DistInfo | None = None, start: int = 0):
    """Batches ``(images, labels)`` of one epoch from batch ``start`` on (``len``: the batches left):
    shuffled with drop-last for training (order fixed by ``seed`` and ``epoch``), in order otherwise;
    sharded over ranks when ``dist`` is enabled (for evaluation without padding: every sample on exactly
    one rank). In-memory sets (:class:`MemoryImageSet`) batch themselves on ``device``; others go
    through a DataLoader over the sampler's indices from ``start * batch_size`` on, so skipped batches
    are never loaded. (With ``workers > 0`` and random
    per-image transforms, the transforms of a resumed epoch differ from an uninterrupted one's.)"""
    dist = dist or DistInfo()
    if isinstance(dataset, MemoryImageSet):
        return dataset.batches(batch_size, shuffle=train, seed=seed * 100_003 + epoch, drop_last=train,
                               device=device, rank=dist.rank, world_size=dist.world_size, start=start)
    if dist.enabled and train:
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
    elif dist.enabled:  # no padding to equal shares: every test sample counts once
        sampler = range(dist.rank, len(dataset), dist.world_size)
    elif train:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    else:
        sampler = SequentialSampler(dataset)
    if start:
        sampler = list(sampler)[start * batch_size:]
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=train, persistent_workers=False,
                      generator=torch.Generator().manual_seed(seed + epoch))
