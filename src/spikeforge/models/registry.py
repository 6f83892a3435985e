"""Model registry and the ``create`` entry point.

A model is registered as a *builder*: ``builder(act, num_classes, **kwargs) ->
nn.Module``, where ``act`` is an :class:`~spikeforge.models.activations.ActivationFactory`
and the module maps ``[N, C, H, W] -> [N, num_classes]``. :func:`create`
resolves the activation, calls the builder and, for spiking activations,
wraps the result in :class:`spikeforge.SpikingNetwork`.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..core.norm import BN_STATS, set_bn_stats
from ..core.time import SpikingNetwork
from .activations import activation_factory

__all__ = ["register", "list_models", "create"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_OWN_TIME: set[str] = set()  # builders that run the time steps themselves


def register(name: str, builder: Callable[..., nn.Module] | None = None, *, replace: bool = False,
             own_time: bool = False):
    """Register ``builder`` under ``name``; usable as ``@register("name")``.

    The builder is called as ``builder(act, num_classes=..., **model_kwargs)``. With
    ``own_time=True`` it also receives ``timesteps=`` and its module is returned
    unwrapped (it runs its own :class:`~spikeforge.SpikingNetwork` inside, e.g. with a
    step after the time average, and exposes a settable ``timesteps``).
    """

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name.lower()
        if key in _MODELS and not replace:
            raise ValueError(f"model {name!r} is already registered (pass replace=True to overwrite)")
        _MODELS[key] = fn
        _OWN_TIME.discard(key)
        if own_time:
            _OWN_TIME.add(key)
        return fn

    return decorate(builder) if builder is not None else decorate


def list_models() -> list[str]:
    """Names accepted by :func:`create`, sorted."""
    return sorted(_MODELS)


def create(
    name: str,
    num_classes: int = 10,
    neuron="lif",
    timesteps: int = 4,
    neuron_kwargs: dict | None = None,
    *,
    mean_over_time: bool = False,
    bn_stats: str = "folded",
    pretrained=None,
    **model_kwargs,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: one of :func:`list_models`.
        num_classes: size of the output layer ``K``.
        neuron: ``"lif"``, ``"if"``, ``"plif"`` (spiking), ``"relu"``, ``"qcfs"`` (ANN; registered by
            ``import spikeforge.convert``), another registered activation name, or a callable returning a fresh
            ``nn.Module`` per call (see :func:`~spikeforge.models.activation_factory`).
        timesteps: ``T`` of the spiking wrapper for static inputs (ignored for ANNs).
        neuron_kwargs: keywords for the activation constructor, over its defaults.
        mean_over_time: spiking models return the time-averaged logits ``[B, K]``
            (``create(...)(x).argmax(1)`` as with an ANN or timm model) instead of
            ``[T, B, K]``. Train such a model with the ``sdt`` loss; ``tet`` needs
            per-step outputs. ANNs return ``[B, K]`` anyway.
        bn_stats: ``"folded"``: in training, batch norms normalise over time and batch
            together; ``"per_step"`` (spiking models only): over each step's batch, as ``T``
            calls of the layer would (the official SpikeDHS training; see
            :mod:`spikeforge.core.norm`). Eval mode is the same either way.
        pretrained: not supported: spikeforge does not download weights, and any
            truthy value is an error.
        model_kwargs: architecture options of the model (``stem``, ``pool``, ``head``...).

    Returns:
        Spiking activation: ``SpikingNetwork`` mapping ``[B, C, H, W]`` or
        ``[T, B, C, H, W]`` to ``[T, B, K]`` (``[B, K]`` with ``mean_over_time``).
        Event-frame sets yield ``[T, C, H, W]`` items: batch them time-first with
        their ``loader(...)`` (or ``collate_fn``), not a plain DataLoader, which
        stacks ``[B, T, ...]``. ANN activation: the plain network, ``[B, C, H, W] -> [B, K]``.
    """
    if pretrained:
        raise ValueError(f"pretrained={pretrained!r}: spikeforge does not download weights; train a model "
                         "(spikeforge train) and load its checkpoint with spikeforge.train.load_trained(path)")
    builder = _MODELS.get(name.lower()) if isinstance(name, str) else None
    if builder is None:
        raise ValueError(f"unknown model {name!r}: available models are {', '.join(list_models())}")
    act = activation_factory(neuron, neuron_kwargs)
    if bn_stats not in BN_STATS:
        raise ValueError(f"bn_stats must be one of {', '.join(BN_STATS)}, got {bn_stats!r}")
    if bn_stats == "per_step" and not act.spiking:
        raise ValueError(f"bn_stats='per_step' needs a spiking model: neuron={act.name!r} is not spiking")
    if name.lower() in _OWN_TIME:
        if mean_over_time:
            raise ValueError(f"model {name!r} runs its own time steps and has no [T, B, K] output: "
                             "mean_over_time does not apply")
        model = builder(act, num_classes=num_classes, timesteps=timesteps, **model_kwargs)
    else:
        model = builder(act, num_classes=num_classes, **model_kwargs)
        if act.spiking:
            model = SpikingNetwork(model, timesteps=timesteps, static_ndim=4, mean_over_time=mean_over_time)
    return set_bn_stats(model, "per_step") if bn_stats == "per_step" else model
