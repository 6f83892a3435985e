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
applied in order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .augment import DropEvents, FlipRoll

__all__ = ["FRAME_TRANSFORMS", "EVENT_TRANSFORMS", "Compose", "build_transform"]

#: Frame transforms (``[T, 2, H, W]`` tensor -> tensor) a recipe can name.
FRAME_TRANSFORMS: dict[str, Callable[..., Callable]] = {"flip_roll": FlipRoll}
#: Event transforms (EVENT_DTYPE array -> array) a recipe can name.
EVENT_TRANSFORMS: dict[str, Callable[..., Callable]] = {"drop_events": DropEvents}


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, data):
        for transform in self.transforms:
            data = transform(data)
        return data

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def build_transform(spec, registry: dict[str, Callable[..., Callable]], argument: str) -> Callable | None:
    """The callable a spec names (None for None; see the module doc); ValueError naming ``argument``
    and the registered names for anything else."""
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, (list, tuple)):
        parts = [build_transform(s, registry, f"{argument}[{i}]") for i, s in enumerate(spec)]
        return Compose([p for p in parts if p is not None])
    name, kwargs = (spec, {}) if isinstance(spec, str) else (None, None)
    if isinstance(spec, dict):
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        name = spec.get("name")
    if name not in registry:
        raise ValueError(f"{argument} must be a callable, one of {', '.join(registry)}, {{name: ..., <options>}} "
                         f"or a list of these; got {spec!r}")
    try:
        return registry[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"{argument}: {name} {err}") from None
