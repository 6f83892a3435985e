"""The neuron mapping: spikeforge's discrete-time recurrence <-> NIR's continuous-time LIF / IF nodes.

A spikeforge neuron advances by one step of length ``dt`` per input step
(``u`` starts at ``v_init``)::

    h_t = a u_{t-1} + b x_t            a = decay, b = input_scale
    s_t = H(h_t - v_th)                strict: h > v_th, else h >= v_th
    u_t = v_reset (hard) or h_t - v_th (soft) where s_t = 1, else h_t

NIR states its neurons as ODEs. Integrated with forward Euler at step ``dt``
(the discretisation snnTorch and Norse use when they read NIR)::

    nir.LIF:  tau dv/dt = (v_leak - v) + r I   ->  v_t = (1 - dt/tau) v_{t-1} + (dt r / tau) I_t
    nir.IF:       dv/dt = r I              ->  v_t = v_{t-1} + dt r I_t

so the two agree step for step with

    decay a < 1:  nir.LIF(tau = dt / (1 - a), r = b / (1 - a), v_leak = 0)
    decay a = 1:  nir.IF(r = b / dt)
    v_threshold = v_th if strict, else the largest float32 below v_th
                  (NIR fires on v > v_threshold; on float32 membranes that is v >= v_th)
    v_reset     = v_reset (hard reset), 0 (soft reset, see below)

What NIR cannot state goes into the node's metadata; :func:`node_to_neuron`
reads it back, other readers ignore it and then simulate a different neuron:

    "spikeforge.reset": "subtract"   soft reset (NIR only resets to v_reset)
    "spikeforge.v_init": float       non-zero initial membrane (NIR starts at 0)
    "spikeforge.v_th": float         threshold of a non-strict neuron (v >= v_th)

Parameters are written as float64 arrays of the layer's shape (one value per
neuron, batch excluded) so that the inverse mapping recovers the float32
decay and input scale exactly.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..core.neuron import IF, LIF, SpikingNeuron
from ..optional import require

if TYPE_CHECKING:
    import nir

__all__ = ["DEFAULT_DT", "neuron_to_node", "node_to_neuron", "check_dt", "load_nir"]

#: Default time step (seconds): the step snnTorch assumes when it reads a NIR graph.
DEFAULT_DT = 1e-4

RESET_KEY = "spikeforge.reset"
V_INIT_KEY = "spikeforge.v_init"
V_TH_KEY = "spikeforge.v_th"


def load_nir() -> ModuleType:
    """The ``nir`` package; :class:`~spikeforge.optional.MissingDependency` naming the extra if absent."""
    return require("nir", "NIR export/import")


def check_dt(dt) -> float:
    """``dt`` as a float; ValueError unless it is finite and > 0."""
    dt = float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a finite time step > 0, got {dt}")
    return dt


def _scalar(value) -> float:
    """A neuron parameter (float or learnable tensor) as a float."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def _below_float32(value: float) -> float:
    """The largest float32 strictly below ``value`` (as a float)."""
    return float(np.nextafter(np.float32(value), np.float32(-np.inf)))


def neuron_to_node(neuron: SpikingNeuron, shape: tuple[int, ...], dt: float, name: str) -> nir.NIRNode:
    """A ``nir.LIF`` (decay < 1) or ``nir.IF`` (decay = 1) equal to ``neuron`` at step ``dt``.

    ``shape`` is the shape of one sample at the neuron (batch excluded), e.g. ``(C, H, W)``.
    """
    nir = load_nir()
    decay, scale, v_th = _scalar(neuron.decay), _scalar(neuron.input_scale), _scalar(neuron.v_th)
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"cannot export neuron {name}: decay {decay} is outside [0, 1]")
    spec = neuron.spec
    if spec.delayed and not (spec.hard_reset and spec.v_reset == 0.0):
        raise ValueError(f"cannot export neuron {name}: reset_timing='next_step' with a soft or non-zero reset "
                         "has no NIR node (NIR resets at the step that fires)")
    metadata = {}
    if not spec.hard_reset:
        metadata[RESET_KEY] = "subtract"
    if neuron.v_init != 0.0:
        metadata[V_INIT_KEY] = float(neuron.v_init)
    threshold = v_th
    if not spec.strict:
        metadata[V_TH_KEY] = v_th
        threshold = _below_float32(v_th)
    v_reset = spec.v_reset if spec.hard_reset else 0.0

    def full(value: float) -> np.ndarray:
        return np.full(shape, value, dtype=np.float64)

    if decay == 1.0:
        return nir.IF(r=full(scale / dt), v_threshold=full(threshold), v_reset=full(v_reset), metadata=metadata)
    return nir.LIF(tau=full(dt / (1.0 - decay)), r=full(scale / (1.0 - decay)), v_leak=full(0.0),
                   v_threshold=full(threshold), v_reset=full(v_reset), metadata=metadata)


def _uniform(node: nir.NIRNode, field: str, name: str) -> float:
    """The single value of a per-neuron parameter array (spikeforge neurons share one per layer)."""
    values = np.asarray(getattr(node, field), dtype=np.float64)
    if values.size == 0 or not np.all(values == values.flat[0]):
        raise ValueError(f"cannot import node {name} ({type(node).__name__}): its {field} differs between "
                         "neurons, spikeforge neurons take one value per layer")
    return float(values.flat[0])


def node_to_neuron(node: nir.NIRNode, dt: float, name: str) -> SpikingNeuron:
    """The spikeforge :class:`~spikeforge.LIF` / :class:`~spikeforge.IF` that ``node`` describes at step ``dt``.

    The inverse of :func:`neuron_to_node`: ``decay = 1 - dt / tau``,
    ``input_scale = dt r / tau`` (LIF) or ``dt r`` (IF); the metadata keys of
    the module docstring restore soft reset, ``v_init`` and non-strict firing.
    """
    meta = node.metadata or {}
    soft = meta.get(RESET_KEY) == "subtract"
    kwargs = {"reset": "soft" if soft else "hard", "v_init": float(meta.get(V_INIT_KEY, 0.0)), "backend": "auto"}
    if V_TH_KEY in meta:
        kwargs.update(v_th=float(meta[V_TH_KEY]), strict=False)
    else:
        kwargs.update(v_th=_uniform(node, "v_threshold", name), strict=True)
    if not soft:
        kwargs["v_reset"] = _uniform(node, "v_reset", name)
    r = _uniform(node, "r", name)
    if isinstance(node, load_nir().IF):
        return IF(input_scale=dt * r, **kwargs)
    if _uniform(node, "v_leak", name) != 0.0:
        raise ValueError(f"cannot import node {name} (LIF): v_leak != 0 has no spikeforge equivalent")
    tau = _uniform(node, "tau", name)
    if not tau >= dt:
        raise ValueError(f"cannot import node {name} (LIF): tau={tau:g} is shorter than the time step dt={dt:g}")
    return LIF(decay=1.0 - dt / tau, input_scale=dt * r / tau, **kwargs)
