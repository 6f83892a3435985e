"""Transform specs of the data sets, so a recipe can name a transform in ``data.options``.

Every data set of :func:`~spikeforge.data.build_dataset` takes ``transform`` (on
each item's tensor) and ``target_transform`` (on each label); the event sets also
take ``event_transform`` and ``augment`` (:mod:`spikeforge.data.events.transforms`).
Each is a spec: a callable, a name registered for that argument, ``{name: ...,
<keyword>: ...}``, or a list of specs applied in order (:class:`Compose`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["Compose", "build_transform"]


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
        accepted = (f"a callable, one of {', '.join(registry)}, {{name: ..., <options>}} or a list of these"
                    if registry else "a callable or a list of callables")
        raise ValueError(f"{argument} must be {accepted}; got {spec!r}")
    try:
        return registry[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"{argument}: {name} {err}") from None
