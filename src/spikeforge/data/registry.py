"""Data sets by name, so a recipe can say ``data: cifar10``.

``build_dataset(name, root, train, **options)`` calls the registered builder as
``builder(root=root, train=train, **options)``. Names are case-insensitive and
ignore ``-`` and ``_`` ("CIFAR-10" is "cifar10"). The event-camera sets
(``cifar10dvs``, ``nmnist``, ``dvsgesture``, and the ``mvsec`` stereo pairs for
``task: stereo``; :mod:`spikeforge.data.events`)
are registered here too; others can add theirs with :func:`register_dataset`.

A recipe's ``data.options`` are these options, for both splits. The event sets
take ``layout`` (the original archives', tonic's or SpikingJelly's folders),
``boundaries`` (frame edges) and transforms (``transform``, ``event_transform``,
``target_transform``, training-only ``augment``), which a recipe names by the
built-ins of :mod:`spikeforge.data.events.transforms`, e.g.
``augment: {name: flip_roll, max_shift: 3}``. The image sets (CIFAR, ImageNet,
digits) take ``transform`` (on the finished image tensor) and ``target_transform``,
named by :data:`spikeforge.data.vision.IMAGE_TRANSFORMS`; every spec is read by
:func:`spikeforge.data.transforms.build_transform`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .digits import digits as _digits_builder
from .events.datasets import cifar10dvs as _cifar10dvs
from .events.datasets import dvs_gesture as _dvs_gesture
from .events.datasets import nmnist as _nmnist
from .events.mvsec import mvsec as _mvsec
from .vision import cifar10 as _cifar10
from .vision import cifar100 as _cifar100
from .vision import imagenet as _imagenet

__all__ = ["DatasetInfo", "register_dataset", "available_datasets", "dataset_info", "build_dataset"]


@dataclass(frozen=True)
class DatasetInfo:
    """A registered data set: its builder and what a model needs to know about it."""

    name: str
    builder: Callable[..., Any]
    num_classes: int
    in_channels: int
    description: str = ""

    @property
    def options(self) -> tuple[str, ...]:
        """Keyword options the builder takes besides ``root`` and ``train``."""
        params = inspect.signature(self.builder).parameters
        return tuple(p for p in params if p not in ("root", "train"))


_REGISTRY: dict[str, DatasetInfo] = {}


def _key(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"a data set name must be a string, got {name!r}")
    return name.strip().lower().replace("-", "").replace("_", "")


def register_dataset(name: str, builder: Callable[..., Any], *, num_classes: int,
                     in_channels: int, description: str = "", replace: bool = False) -> DatasetInfo:
    """Register ``builder(root=..., train=..., **options)`` under ``name``."""
    key = _key(name)
    if key in _REGISTRY and not replace:
        raise ValueError(f"data set {name!r} is already registered")
    info = DatasetInfo(key, builder, num_classes, in_channels, description)
    _REGISTRY[key] = info
    return info


def available_datasets() -> list[str]:
    """The registered names, sorted."""
    return sorted(_REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``; ValueError listing the names if unknown."""
    info = _REGISTRY.get(_key(name))
    if info is None:
        raise ValueError(f"unknown data set {name!r}; available: {', '.join(available_datasets())}")
    return info


def build_dataset(name: str, root=None, train: bool = True, **options: Any):
    """Build the data set registered as ``name`` (see :func:`available_datasets`).

    Unknown names and options the builder does not take raise ValueError with
    a one-line message listing what is accepted.
    """
    info = dataset_info(name)
    params = inspect.signature(info.builder).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in options if k not in info.options]
    if unknown and not takes_any:
        raise ValueError(f"data set {info.name!r} has no option {', '.join(map(repr, unknown))}; "
                         f"options: {', '.join(info.options) or 'none'}")
    return info.builder(root=root, train=train, **options)


register_dataset("cifar10", _cifar10, num_classes=10, in_channels=3,
                 description="CIFAR-10, 32x32 RGB, 50k/10k (torchvision)")
register_dataset("cifar100", _cifar100, num_classes=100, in_channels=3,
                 description="CIFAR-100, 32x32 RGB, 50k/10k (torchvision)")
register_dataset("imagenet", _imagenet, num_classes=1000, in_channels=3,
                 description="ImageNet-1k, ImageFolder train/ and val/, 224x224 crops")
register_dataset("digits", _digits_builder, num_classes=10, in_channels=1,
                 description="UCI handwritten digits, embedded, 1,442/355, 16x16 by default")
register_dataset("cifar10dvs", _cifar10dvs, num_classes=10, in_channels=2,
                 description="CIFAR10-DVS (original, tonic or SpikingJelly layout), 9k/1k (900/100 per class), "
                             "frames [10, 2, 48, 48]")
register_dataset("nmnist", _nmnist, num_classes=10, in_channels=2,
                 description="N-MNIST (original, label-list, tonic or SpikingJelly layout), frames [10, 2, 34, 34] "
                             "by time")
register_dataset("dvsgesture", _dvs_gesture, num_classes=11, in_channels=2,
                 description="DVS128 Gesture (original, tonic or SpikingJelly layout), users 1-23/24-29, "
                             "frames [16, 2, 128, 128]")
register_dataset("mvsec", _mvsec, num_classes=0, in_channels=5,
                 description="MVSEC indoor_flying stereo (HDF5), splits 1/3, 5 event-count frames per view, disparity")
