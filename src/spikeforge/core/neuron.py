"""Spiking neuron modules: LIF, IF and parametric LIF on one general recurrence.

A neuron called on a time-first tensor ``[T, ...]`` runs the recurrence of
:mod:`spikeforge.core.kernels.spec` over dim 0, starting from ``v_init``, and
returns spikes of the same shape. Inside a model wrapped by
:class:`spikeforge.SpikingNetwork`, time is folded into the batch
(``[T*B, ...]``) and the wrapper sets ``timesteps`` so the neuron can unfold it.
No state survives a call unless a :func:`spikeforge.state_scope` asks for it.
The neuron emits ``output_scale * s_t`` (1.0 by default: plain 0/1 spikes).

The recurrence, per step ``t`` (``u`` starts at ``v_init``)::

    h_t = decay * u_{t-1} + input_scale * x_t
    s_t = H(h_t - v_th)                        strict: >, default: >=
    u_t = h_t (1 - s_t) + v_reset s_t          reset="hard"
    u_t = h_t - v_th s_t                       reset="soft"

With ``reset_timing="next_step"`` (snnTorch's ``Leaky``) a spike is reset at the
next step, after the leak, so the reset is not multiplied by the decay; the
state carried between steps is ``h`` itself (``h`` starts at ``v_init``, and a
``v_init`` at or above threshold is reset at the first step)::

    h_t = decay * h_{t-1} + input_scale * x_t - v_th s_{t-1}                          reset="soft"
    h_t = v_reset + input_scale * x_t if s_{t-1} else decay * h_{t-1} + input_scale * x_t   reset="hard"

A hard reset to ``v_reset = 0`` gives the same spikes and gradients with either timing
(only the carried state differs: ``u`` or ``h``).

Non-finite membranes follow IEEE arithmetic, identically in every backend, so that a
divergence shows up in the loss instead of vanishing into silence:

- ``+inf`` and ``-inf`` compare like huge values: ``+inf`` fires, ``-inf`` does not. The
  hard reset *replaces* the membrane, so ``+inf`` fires once and restarts from ``v_reset``;
  the soft reset subtracts, so ``+inf - v_th = +inf`` fires at every step.
- A NaN membrane emits a NaN spike (not 0), and stays NaN (NaN is never reset), so every
  later spike of that neuron is NaN too and so is any loss computed from them. The
  recorded ``spike_counts`` count only the spikes equal to 1.

Inputs: float32/float64 run as they are; float16/bfloat16, integer and bool inputs run in
float32 (spikes in float16/bfloat16 for half-precision inputs, else float32); complex inputs
are refused. An empty batch (``[T, 0, ...]``) gives empty spikes; an empty time axis
(``T = 0``) is refused, as it is almost always a wrong time dimension.

For closed-loop use (one frame at a time) each neuron also steps explicitly:
``state = neuron.initial_state(x0)``, then ``s, state = neuron.step(x_t, state)``.

Conventions of the papers, as constructor arguments:

- TET / SpikeDHS iterative LIF: ``LIF(decay=0.5 or 0.2, v_th=1.0 or 0.5, reset="hard", strict=True)``.
- SpikingJelly ``LIFNode(tau)``: ``LIF(decay=1 - 1/tau, input_scale=1/tau, surrogate=Sigmoid(4.0))``.
- snnTorch ``Leaky(beta)``: ``LIF(decay=beta, reset="soft", reset_timing="next_step", strict=True,
  detach_reset=True, surrogate=ATan(2.0))``.
- QCFS / SRP converted IF: ``IF(v_th=lam, reset="soft", v_init=lam / 2, output_scale=lam)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .kernels import BACKENDS, NeuronSpec, compute_dtype, run_multistep
from .kernels.fused import forward_loop
from .packing import mark_spikes
from .surrogate import Rectangle, Surrogate, Triangle, build_surrogate
from .temporal import TemporalLayer

__all__ = ["SpikingNeuron", "LIF", "IF", "ParametricLIF", "LSGLIF"]


def _plain(value):
    """A parameter value without its graph (tensors detached, floats as they are)."""
    return value.detach() if isinstance(value, Tensor) else value


def _logit(p: float) -> float:
    if not 0.0 < p < 1.0:
        raise ValueError(f"a learnable decay must lie strictly between 0 and 1, got {p}")
    return math.log(p / (1.0 - p))


class SpikingNeuron(TemporalLayer):
    """Multi-step spiking neuron; see the module docstring for the recurrence.

    Args:
        decay: leak factor per step (1.0 = no leak). Learnable (as
            ``sigmoid(decay_logit)``) with ``learn_decay=True``.
        input_scale: factor on the input current, or ``"complement"`` for
            ``1 - decay`` (SpikingJelly's ``decay_input=True``).
        v_th: firing threshold; learnable with ``learn_threshold=True``.
        reset: ``"hard"`` (to ``v_reset``) or ``"soft"`` (subtract ``v_th``).
        reset_timing: ``"now"`` (the step that fires) or ``"next_step"`` (after the
            next step's leak, as snnTorch; see the module docstring).
        detach_reset: stop the gradient through the spike in the reset.
        strict: fire on ``v > v_th`` instead of ``v >= v_th``.
        v_init: membrane potential before the first step (with ``reset_timing="next_step"``
            reset at the first step if at or above ``v_th``).
        surrogate: a :class:`~spikeforge.surrogate.Surrogate`, a shape name or a
            mapping such as ``{"name": "dspike", "b": 3.0}`` (default ``Triangle(1.0)``).
        backend: ``"auto"`` (fastest available), ``"triton"`` (CUDA), ``"cpu"``, ``"fused"`` or ``"reference"``.
        record_rate: keep per-step spike counts of the last call for analysis.
        output_scale: factor on the emitted spikes (``output_scale * s``), applied after the recurrence;
            a converted ANN layer emits its threshold this way. Spike counts and rates count the 0/1 spikes.
    """

    def __init__(
        self,
        decay: float = 0.5,
        input_scale: float | str = 1.0,
        v_th: float = 1.0,
        reset: str = "hard",
        v_reset: float = 0.0,
        detach_reset: bool = False,
        strict: bool = False,
        v_init: float = 0.0,
        surrogate: Surrogate | str | dict | None = None,
        learn_decay: bool = False,
        learn_threshold: bool = False,
        backend: str = "auto",
        record_rate: bool = True,
        reset_timing: str = "now",
        output_scale: float = 1.0,
    ):
        super().__init__()
        if reset not in ("hard", "soft"):
            raise ValueError(f"reset must be 'hard' or 'soft', got {reset!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
        if isinstance(input_scale, str) and input_scale != "complement":
            raise ValueError(f"input_scale must be a number or 'complement', got {input_scale!r}")
        self.surrogate = Triangle(1.0) if surrogate is None else build_surrogate(surrogate)
        self.spec = NeuronSpec(type(self.surrogate), reset == "hard", float(v_reset), bool(detach_reset), bool(strict),
                               reset_timing)
        if learn_decay:
            self.decay_logit = nn.Parameter(torch.tensor(_logit(float(decay))))
        else:
            self._decay = float(decay)
        self.input_scale_mode = input_scale
        self.v_th = nn.Parameter(torch.tensor(float(v_th))) if learn_threshold else float(v_th)
        self.v_init = float(v_init)
        self.backend = backend
        self.record_rate = record_rate
        self.output_scale = float(output_scale)
        self.spike_counts: Tensor | None = None  # [T] spikes per step in the last call
        self.neurons_per_step = 0
        self.record_window = False  # set True to measure window_fraction (costs one extra forward pass)
        self.window_fraction: float | None = None

    @property
    def decay(self):
        """Leak factor: a float, or a tensor when learnable."""
        if hasattr(self, "decay_logit"):
            return torch.sigmoid(self.decay_logit)
        return self._decay

    @property
    def input_scale(self):
        if self.input_scale_mode == "complement":
            return 1.0 - self.decay
        return float(self.input_scale_mode)

    @property
    def firing_rate(self) -> float | None:
        """Mean spikes per neuron per step in the last call (None before any call or after an empty batch)."""
        if self.spike_counts is None or self.neurons_per_step == 0:
            return None
        return float(self.spike_counts.sum()) / (self.neurons_per_step * len(self.spike_counts))

    def surrogate_width(self):
        """The surrogate width used by this call (subclasses may derive it: see :class:`LSGLIF`)."""
        return self.surrogate.width

    @property
    def initial_value(self) -> float:
        """The membrane before the first step (``v_init``)."""
        return self.v_init

    def forward(self, x: Tensor, width: Tensor | float | None = None) -> Tensor:
        """``output_scale *`` spikes of ``x`` (``[T, B, ...]``, or ``[T*B, ...]`` inside a :class:`SpikingNetwork`).

        ``width``: surrogate width for this call only, instead of the neuron's own
        (SpikeDHS nodes route each input group's gradient through its own width).
        The state carried by :func:`state_scope` and :meth:`step` is the membrane
        (``u`` after the reset; ``h`` before it with ``reset_timing="next_step"``).
        """
        return self._scoped(x, width=width)

    def _run(self, seq: Tensor, v_init, width=None) -> tuple[Tensor, Tensor]:
        """The recurrence over ``seq[T, ...]`` from ``v_init``: ``(output_scale * spikes, final state)``; records
        rates."""
        spikes, state, counts = run_multistep(
            seq, self.spec, self.decay, self.input_scale, self.v_th,
            self.surrogate_width() if width is None else width, v_init, self.backend,
        )
        if self.record_window:
            self.window_fraction = self._window_fraction(seq, v_init)
        return self._emit(spikes, counts), state

    def _emit(self, spikes: Tensor, counts: Tensor | None) -> Tensor:
        """What a call returns for the kernel's ``spikes[T, ...]`` (``counts[T]``: spikes per step, or None when
        the kernel did not count): ``output_scale * spikes``; records rates."""
        if self.record_rate:
            if counts is None:  # the kernel did not count on the way: one reduction pass (NaN spikes uncounted)
                with torch.no_grad():
                    counts = spikes.detach().reshape(spikes.shape[0], -1).nansum(1)
            self.spike_counts = counts
            self.neurons_per_step = spikes[0].numel()
        if self.output_scale != 1.0:
            return spikes * self.output_scale
        mark_spikes(spikes)  # 0, 1 or NaN: saved for backward as bits under pack_spikes
        return spikes

    @torch.no_grad()
    def _window_fraction(self, seq: Tensor, v_init) -> float:
        """Fraction of membrane values ``h`` (all steps and units) where the surrogate is non-zero.

        LSG's gradient-blocking measure: outside the window no gradient passes.
        Recomputes the membrane with one gradient-free forward pass.
        """
        seq = seq.detach().to(compute_dtype(seq.dtype))
        _, h, _, _ = forward_loop(seq, self.spec, _plain(self.decay), _plain(self.input_scale),
                                  _plain(self.v_th), _plain(v_init), keep_h=True)
        inside = self.spec.surrogate.derivative(h - _plain(self.v_th), _plain(self.surrogate_width())) > 0
        return inside.float().mean().item()

    def extra_repr(self) -> str:
        reset = "soft" if not self.spec.hard_reset else f"hard(v_reset={self.spec.v_reset:g})"
        decay = "learnable" if hasattr(self, "decay_logit") else f"{self._decay:g}"
        v_th = "learnable" if isinstance(self.v_th, Tensor) else f"{self.v_th:g}"
        timing = ", reset_timing=next_step" if self.spec.delayed else ""
        scale = f", output_scale={self.output_scale:g}" if self.output_scale != 1.0 else ""
        return (
            f"decay={decay}, input_scale={self.input_scale_mode}, v_th={v_th}, reset={reset}{timing}, "
            f"detach_reset={self.spec.detach_reset}, strict={self.spec.strict}, v_init={self.v_init:g}, "
            f"backend={self.backend}{scale}"
        )


class LIF(SpikingNeuron):
    """Leaky integrate-and-fire neuron (all keywords of :class:`SpikingNeuron`)."""


class IF(SpikingNeuron):
    """Integrate-and-fire neuron: no leak (``decay = 1``)."""

    def __init__(self, v_th: float = 1.0, **kwargs):
        for key in ("decay", "learn_decay"):
            if key in kwargs:
                raise TypeError(f"IF has no leak: '{key}' is not accepted (use LIF)")
        super().__init__(decay=1.0, v_th=v_th, **kwargs)


class ParametricLIF(SpikingNeuron):
    """LIF with a learnable per-layer decay ``sigmoid(decay_logit)`` (PLIF, LSG's trainable decay)."""

    def __init__(self, decay: float = 0.5, **kwargs):
        if kwargs.pop("learn_decay", True) is not True:
            raise TypeError("ParametricLIF always learns its decay (use LIF for a fixed one)")
        super().__init__(decay=decay, learn_decay=True, **kwargs)


class LSGLIF(ParametricLIF):
    """Learnable surrogate gradient LIF (LSG, Lian et al., IJCAI 2023).

    A per-layer learnable decay ``beta = sigmoid(b)`` (initial 0.2) and a
    rectangular surrogate whose width is tied to it, ``alpha = 2 v_th
    sqrt(1 + beta^2)`` (1.0198 at initialisation with ``v_th = 0.5``). The width
    is recomputed at every call without a gradient of its own: ``b`` learns
    through the dynamics and the surrogate only. Firing is ``v >= v_th`` and the
    reset is hard to 0 with the gradient through it, as the paper's STBP.
    """

    def __init__(self, decay: float = 0.2, v_th: float = 0.5, **kwargs):
        surrogate = build_surrogate(kwargs.pop("surrogate", Rectangle(1.0)))
        if not isinstance(surrogate, Rectangle):
            raise TypeError("LSGLIF ties the width of a Rectangle surrogate; got " + type(surrogate).__name__)
        super().__init__(decay=decay, v_th=v_th, surrogate=surrogate, **kwargs)

    def surrogate_width(self) -> Tensor:
        with torch.no_grad():
            return 2 * torch.sqrt(1 + self.decay**2) * self.v_th
