"""Activation factories: where a model's activations (spiking neurons or ANN units) come from.

Every model in :mod:`spikeforge.models` is written once against an
:class:`ActivationFactory`: a callable that returns a *fresh* activation module
at each call, so every place in a network gets its own instance (a neuron
records its own firing rate and may own learnable parameters). Swapping the
factory turns the same architecture into an ANN, a LIF/IF/PLIF SNN or,
once :mod:`spikeforge.convert` registers it, a QCFS source network.

Built-in names (``neuron=`` in :func:`spikeforge.models.create`):

- ``"lif"``: :class:`spikeforge.LIF` (spiking);
- ``"if"``: :class:`spikeforge.IF` (spiking, no leak);
- ``"plif"``: :class:`spikeforge.ParametricLIF` (spiking, learnable leak);
- ``"lsg"``: :class:`spikeforge.LSGLIF` (spiking, learnable leak with the surrogate width tied to it; its own defaults);
- ``"relu"``: :class:`torch.nn.ReLU` (ANN);
- ``"qcfs"``: registered by the conversion module when it is imported
  (``import spikeforge.convert``; ANN, forbids max-pooling).

Defaults of the spiking names are :data:`SPIKING_DEFAULTS` (TET's iterative
LIF: Deng et al., ICLR 2022, "Temporal Efficient Training of Spiking Neural Network via Gradient
Re-weighting", and its official code); ``neuron_kwargs`` override them key by key.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from torch import nn

from ..core.neuron import IF, LIF, LSGLIF, ParametricLIF, SpikingNeuron
from ..core.surrogate import Triangle

__all__ = [
    "SPIKING_DEFAULTS",
    "ActivationFactory",
    "activation_factory",
    "register_activation",
    "list_activations",
]

#: Defaults of the built-in spiking activations ("lif", "if", "plif"), from TET
#: (Deng et al., ICLR 2022, its LIF model and official code): multiplicative leak 0.5,
#: threshold 1.0, hard reset to 0, strict firing ``v > v_th``, triangle surrogate
#: with gamma 1.0, gradient through the reset (not detached). "if" drops the
#: leak; for "plif" the decay is the initial value of the learnable
#: ``sigmoid(logit)``. The surrogate is copied for every neuron.
SPIKING_DEFAULTS: MappingProxyType[str, Any] = MappingProxyType(
    {"decay": 0.5, "v_th": 1.0, "reset": "hard", "strict": True, "surrogate": Triangle(1.0)}
)


@dataclass(frozen=True)
class _Entry:
    constructor: Callable[..., nn.Module]
    spiking: bool
    allows_maxpool: bool
    defaults: dict = field(default_factory=dict)


_ACTIVATIONS: dict[str, _Entry] = {}

# Names that a module above this one registers when it is imported: for the error message only.
_REGISTERED_BY = {"qcfs": "spikeforge.convert"}


def register_activation(
    name: str,
    constructor: Callable[..., nn.Module],
    *,
    spiking: bool,
    allows_maxpool: bool = True,
    defaults: Mapping[str, Any] | None = None,
    replace: bool = False,
) -> None:
    """Make ``neuron=name`` available to :func:`spikeforge.models.create`.

    Args:
        constructor: called as ``constructor(**{**defaults, **neuron_kwargs})``
            for every activation place; must return a new module each call.
        spiking: models built with it are wrapped in :class:`spikeforge.SpikingNetwork`.
        allows_maxpool: ``False`` for activations meant for ANN->SNN conversion
            (QCFS): models then use average pooling and reject ``pool="max"``.
        defaults: constructor keywords used unless ``neuron_kwargs`` overrides them.
        replace: allow overwriting an existing name.
    """
    key = name.lower()
    if key in _ACTIVATIONS and not replace:
        raise ValueError(f"activation {name!r} is already registered (pass replace=True to overwrite)")
    _ACTIVATIONS[key] = _Entry(constructor, bool(spiking), bool(allows_maxpool), dict(defaults or {}))


def list_activations() -> list[str]:
    """Registered activation names, sorted."""
    return sorted(_ACTIVATIONS)


def _copy_modules(kwargs: dict) -> dict:
    """Copy module-valued keywords (surrogates) so that no two places share one."""
    return {k: copy.deepcopy(v) if isinstance(v, nn.Module) else v for k, v in kwargs.items()}


class ActivationFactory:
    """Builds one fresh activation module per call: ``act() -> nn.Module``.

    Attributes:
        name: the registered name, or the callable's name.
        spiking: the activations are spiking neurons (the model gets a time wrapper).
        allows_maxpool: max-pooling may be used next to these activations.
    """

    def __init__(
        self,
        constructor: Callable[..., nn.Module],
        kwargs: dict | None = None,
        *,
        name: str,
        spiking: bool,
        allows_maxpool: bool = True,
    ):
        self.constructor = constructor
        self.kwargs = dict(kwargs or {})
        self.name = name
        self.spiking = spiking
        self.allows_maxpool = allows_maxpool

    def __call__(self) -> nn.Module:
        module = self.constructor(**_copy_modules(self.kwargs))
        if not isinstance(module, nn.Module):
            raise TypeError(f"activation {self.name!r} returned {type(module).__name__}, not an nn.Module")
        return module

    def __repr__(self) -> str:
        return f"ActivationFactory({self.name!r}, spiking={self.spiking}, kwargs={self.kwargs})"


def _lookup(name: str) -> _Entry:
    key = name.lower()
    if key not in _ACTIVATIONS and key in _REGISTERED_BY:
        raise ValueError(f"neuron={name!r} is not registered yet: import {_REGISTERED_BY[key]} first (it registers "
                         f"{key!r})")
    if key not in _ACTIVATIONS:
        raise ValueError(
            f"unknown neuron {name!r}: expected one of {list_activations()}, "
            "an ActivationFactory, or a callable returning a fresh nn.Module per call"
        )
    return _ACTIVATIONS[key]


def _probe(constructor: Callable[..., nn.Module], kwargs: dict, name: str) -> bool:
    """Build two instances of a user callable: check them, and tell whether they spike."""
    first = constructor(**_copy_modules(kwargs))
    second = constructor(**_copy_modules(kwargs))
    if not isinstance(first, nn.Module):
        raise TypeError(f"neuron callable {name!r} returned {type(first).__name__}, not an nn.Module")
    if first is second:
        raise ValueError(f"neuron callable {name!r} must return a new module at every call, not a shared one")
    return any(isinstance(m, SpikingNeuron) for m in first.modules())


def activation_factory(
    neuron: str | Callable[..., nn.Module] | ActivationFactory = "lif", neuron_kwargs: dict | None = None
) -> ActivationFactory:
    """Resolve ``neuron`` (a name, a callable or a factory) into an :class:`ActivationFactory`.

    For a registered name, ``neuron_kwargs`` override the name's defaults. A
    callable (e.g. ``sf.LIF`` or a lambda) is called with ``neuron_kwargs``
    only (no defaults); it is spiking if its module contains a
    :class:`~spikeforge.SpikingNeuron`.
    """
    if isinstance(neuron, ActivationFactory):
        if neuron_kwargs:
            raise ValueError("neuron_kwargs cannot be combined with a ready ActivationFactory")
        return neuron
    kwargs = dict(neuron_kwargs or {})
    if isinstance(neuron, str):
        entry = _lookup(neuron)
        return ActivationFactory(
            entry.constructor,
            {**entry.defaults, **kwargs},
            name=neuron.lower(),
            spiking=entry.spiking,
            allows_maxpool=entry.allows_maxpool,
        )
    if callable(neuron):
        name = getattr(neuron, "__name__", type(neuron).__name__)
        spiking = _probe(neuron, kwargs, name)
        return ActivationFactory(neuron, kwargs, name=name, spiking=spiking)
    raise TypeError(f"neuron must be a name, a callable or an ActivationFactory, got {type(neuron).__name__}")


_NO_LEAK = {k: v for k, v in SPIKING_DEFAULTS.items() if k != "decay"}
register_activation("lif", LIF, spiking=True, defaults=SPIKING_DEFAULTS)
register_activation("if", IF, spiking=True, defaults=_NO_LEAK)
register_activation("plif", ParametricLIF, spiking=True, defaults=SPIKING_DEFAULTS)
# LSG (Lian et al., IJCAI 2023): its own defaults (v_th 0.5, decay 0.2, rectangle, v >= v_th) live in LSGLIF.
register_activation("lsg", LSGLIF, spiking=True)
register_activation("relu", nn.ReLU, spiking=False)
