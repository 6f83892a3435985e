"""Transforms of the event data sets, and how a recipe names them.

A data set takes three (like torchvision and tonic):

- ``transform``: on each item's frames, a ``float32`` tensor ``[T, 2, H, W]``
  read from the frame cache (any callable: your own, torchvision's);
- ``event_transform``: on each recording's events (an
  :data:`~spikeforge.data.events.EVENT_DTYPE` structured array, ``t`` in
  microseconds) before integration, e.g. a tonic event transform; the set then
  integrates every item on access and caches nothing;
- ``target_transform``: on each label.

``augment`` is the training split's own frame transform (applied before
``transform``). A recipe names transforms in ``data.options``, which go to both
splits, so training-only augmentation goes in ``augment``::

    data: {name: cifar10dvs, options: {augment: {name: flip_roll, max_shift: 3},
                                       event_transform: {name: drop_events, p: 0.1}}}

A spec is a callable, a registered name (:data:`FRAME_TRANSFORMS`,
:data:`EVENT_TRANSFORMS`), ``{name: ..., <keyword>: ...}``, or a list of specs
applied in order (:func:`~spikeforge.data.transforms.build_transform`, shared
with the image sets).
"""

from __future__ import annotations

from collections.abc import Callable

from ..transforms import Compose, build_transform
from .augment import DropEvents, FlipRoll

__all__ = ["FRAME_TRANSFORMS", "EVENT_TRANSFORMS", "Compose", "build_transform"]

#: Frame transforms (``[T, 2, H, W]`` tensor -> tensor) a recipe can name.
FRAME_TRANSFORMS: dict[str, Callable[..., Callable]] = {"flip_roll": FlipRoll}
#: Event transforms (EVENT_DTYPE array -> array) a recipe can name.
EVENT_TRANSFORMS: dict[str, Callable[..., Callable]] = {"drop_events": DropEvents}
