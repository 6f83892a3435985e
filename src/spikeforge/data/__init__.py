"""Data sets: vision sets through torchvision, event-camera sets, and the embedded digits set.

::

    from spikeforge.data import build_dataset
    train = build_dataset("cifar10", "~/data", train=True, cutout=16)
    test = build_dataset("digits", None, train=False)      # ships with the package

Nothing downloads unless asked (``download=True``); a missing or corrupt set
raises :class:`DatasetNotFoundError` (a ``FileNotFoundError``) with a one-line
message naming the folder and the files expected there. Event-camera readers,
frame integration and the CIFAR10-DVS / N-MNIST / DVS128 Gesture / MVSEC sets
are in :mod:`spikeforge.data.events` (their ``loader(...)``, or
:func:`time_first_collate`, batches frame sequences time-first ``[T, B, ...]``);
in-memory CIFAR with batch-wise augmentation in :mod:`spikeforge.data.memory`.
"""

from .digits import Digits, digits, digits_split
from .errors import DatasetCorruptError, DatasetNotFoundError
from .events.frameset import time_first_collate
from .memory import MemoryImageSet, random_crop_flip
from .registry import DatasetInfo, available_datasets, build_dataset, dataset_info, register_dataset
from .vision import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Cutout,
    cifar10,
    cifar100,
    cifar_transform,
    imagenet,
    imagenet_transform,
)

__all__ = [
    "DatasetNotFoundError",
    "DatasetCorruptError",
    "build_dataset",
    "register_dataset",
    "available_datasets",
    "dataset_info",
    "DatasetInfo",
    "cifar10",
    "cifar100",
    "imagenet",
    "cifar_transform",
    "imagenet_transform",
    "Cutout",
    "MemoryImageSet",
    "random_crop_flip",
    "digits",
    "Digits",
    "digits_split",
    "time_first_collate",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]
