"""The time convention: folding, encoders, the network wrapper and state scopes.

Public tensors are time-first, ``[T, B, ...]``. Inside a model, time is folded
into the batch (``[T*B, ...]``) so that ordinary ``torch.nn`` layers process
all steps at once; spiking neurons unfold it to run their recurrence.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .neuron import SpikingNeuron
from .temporal import TemporalLayer, TimeAware

__all__ = [
    "SpikingNetwork",
    "MembraneState",
    "state_scope",
    "neurons",
    "fold",
    "unfold",
    "direct_encode",
    "poisson_encode",
]


def neurons(model: nn.Module) -> list[SpikingNeuron]:
    """All spiking neurons in ``model``, in registration order."""
    return [m for m in model.modules() if isinstance(m, SpikingNeuron)]


def _temporal_layers(model: nn.Module) -> list[TemporalLayer]:
    """The layers of ``model`` that carry state over time (neurons, synapses)."""
    return [m for m in model.modules() if isinstance(m, TemporalLayer)]


def _time_aware(model: nn.Module) -> list[TimeAware]:
    """The modules of ``model`` that need ``T`` (temporal layers, per-step batch norms)."""
    return [m for m in model.modules() if isinstance(m, TimeAware)]


def fold(x: Tensor) -> Tensor:
    """``[T, B, ...] -> [T*B, ...]`` (a view)."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def unfold(x: Tensor, steps: int) -> Tensor:
    """``[T*B, ...] -> [T, B, ...]`` (a view)."""
    return x.reshape(steps, x.shape[0] // steps, *x.shape[1:])


def direct_encode(x: Tensor, steps: int) -> Tensor:
    """Repeat a static batch ``[B, ...]`` at every step: ``[T, B, ...]`` (no copy)."""
    return x.unsqueeze(0).expand(steps, *x.shape)


def poisson_encode(x: Tensor, steps: int, generator: torch.Generator | None = None) -> Tensor:
    """Rate code: spike with probability ``x`` (clamped to [0, 1]) at every step, ``[T, B, ...]``."""
    p = x.clamp(0.0, 1.0).unsqueeze(0).expand(steps, *x.shape)
    return torch.bernoulli(p, generator=generator)


class SpikingNetwork(nn.Module):
    """Runs a backbone containing spiking neurons over ``T`` steps; returns ``[T, B, ...]``.

    The backbone sees time folded into the batch, ``[T*B, ...]``, and the
    wrapper tells its neurons (every :class:`~spikeforge.core.temporal.TimeAware`
    module: per-step batch norms too) the current ``T`` for the duration of the call.

    Args:
        backbone: any ``nn.Module`` built from ordinary layers and spiking neurons.
        timesteps: ``T`` for static inputs; can be changed between calls.
        encoding: ``"direct"`` (the same input at every step) or ``"poisson"``
            (rate code) for static inputs.
        static_ndim: rank of a static input batch (4 for images ``[B, C, H, W]``).
            An input of one more dimension is a sequence and is passed as is,
            with ``T`` taken from its time dimension.
        input_layout: ``"TB"``: sequences are time-first ``[T, B, ...]`` (the
            library's layout); ``"BT"``: batch-first ``[B, T, ...]``, as a plain
            DataLoader stacks ``[T, ...]`` items (transposed on the way in).
            Outputs are time-first either way.
        mean_over_time: return the time average ``[B, K]`` instead of ``[T, B, K]``
            (for code written for ANNs: ``net(x).argmax(1)``, a cross-entropy on
            ``[B, K]``). Losses needing per-step outputs (TET) need it off.

    :meth:`step` runs one time step at a time for closed-loop use.
    """

    def __init__(self, backbone: nn.Module, timesteps: int = 4, encoding: str = "direct", static_ndim: int = 4,
                 input_layout: str = "TB", mean_over_time: bool = False):
        super().__init__()
        if encoding not in ("direct", "poisson"):
            raise ValueError(f"encoding must be 'direct' or 'poisson', got {encoding!r}")
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        if input_layout not in ("TB", "BT"):
            raise ValueError(f"input_layout must be 'TB' (time-first) or 'BT' (batch-first), got {input_layout!r}")
        self.backbone = backbone
        self.timesteps = int(timesteps)
        self.encoding = encoding
        self.static_ndim = static_ndim
        self.input_layout = input_layout
        self.mean_over_time = bool(mean_over_time)

    def encode(self, x: Tensor) -> Tensor:
        """Static ``[B, ...]`` or sequence (``[T, B, ...]``, or ``[B, T, ...]`` if batch-first) to ``[T, B, ...]``."""
        if x.dim() == self.static_ndim + 1:
            return x.transpose(0, 1) if self.input_layout == "BT" else x
        if x.dim() != self.static_ndim:
            raise ValueError(
                f"expected a static batch of rank {self.static_ndim} or a sequence of rank "
                f"{self.static_ndim + 1}, got shape {tuple(x.shape)}"
            )
        if self.encoding == "poisson":
            return poisson_encode(x, self.timesteps)
        return direct_encode(x, self.timesteps)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        """``[T, B, K]`` (``[B, K]`` with ``mean_over_time``) per output of the backbone (a tuple if it returns one)."""
        out = self._run(self.encode(x))
        if not self.mean_over_time:
            return out
        return tuple(o.mean(0) for o in out) if isinstance(out, tuple) else out.mean(0)

    def _run(self, seq: Tensor) -> Tensor | tuple[Tensor, ...]:
        """The backbone over a time-first sequence ``[T, B, ...]``: per-step outputs ``[T, B, ...]``."""
        steps = seq.shape[0]
        aware = _time_aware(self.backbone)
        previous = [m.timesteps for m in aware]
        for m in aware:
            m.timesteps = steps
        try:
            out = self.backbone(fold(seq))
        finally:
            for m, p in zip(aware, previous):
                m.timesteps = p
        if isinstance(out, tuple):  # e.g. (logits, auxiliary logits)
            return tuple(unfold(o, steps) for o in out)
        return unfold(out, steps)

    def step(self, x: Tensor, state: MembraneState | None = None,
             detach: bool = False) -> tuple[Tensor | tuple[Tensor, ...], MembraneState]:
        """One time step for closed-loop use: ``x`` is one static-rank step (``[B, C, H, W]``).

        ``state`` is the previous step's (``None``: start from every neuron's
        ``v_init``). Returns ``(output [B, K] of this step, new state)``; the state
        keeps its graph, so a loop of steps can be backpropagated (``detach=True``
        cuts it at every step, for endless loops with autograd on). Equal to one
        call on the stacked steps, in values and gradients, with batch norm in
        eval mode or with per-step statistics (:func:`~spikeforge.set_bn_stats`); a
        folded batch norm in training mode normalises over each step's batch alone here.
        """
        if x.dim() != self.static_ndim:
            raise ValueError(f"step expects one time step of rank {self.static_ndim}, got shape {tuple(x.shape)}")
        seq = poisson_encode(x, 1) if self.encoding == "poisson" else x.unsqueeze(0)
        new = MembraneState(carry=True, detach=detach)
        if state is not None:
            new._membranes.update(state._membranes)
        with _attached(self, new):
            out = self._run(seq)
        return (tuple(o[0] for o in out) if isinstance(out, tuple) else out[0]), new

    def extra_repr(self) -> str:
        layout = ", input_layout='BT'" if self.input_layout == "BT" else ""
        mean = ", mean_over_time=True" if self.mean_over_time else ""
        return f"timesteps={self.timesteps}, encoding={self.encoding!r}{layout}{mean}"


class MembraneState:
    """Final membrane potentials of the neurons (and currents of the synapses) in a :func:`state_scope`.

    ``state[neuron]`` is the membrane after the neuron's last call in the scope
    (shape of one time step, e.g. ``[B, C, H, W]``): the state its recurrence
    carries, ``u`` after the reset (``h`` before it with ``reset_timing="next_step"``).
    With ``carry=True`` the next call of that neuron starts from it instead of ``v_init``.
    """

    def __init__(self, carry: bool, detach: bool):
        self.carry = carry
        self.detach = detach
        self._membranes: dict[TemporalLayer, Tensor] = {}

    def __getitem__(self, neuron: TemporalLayer) -> Tensor:
        return self._membranes[neuron]

    def __setitem__(self, neuron: TemporalLayer, membrane: Tensor) -> None:
        """Set the membrane a neuron starts from at its next call (with ``carry``)."""
        self._membranes[neuron] = membrane

    def __contains__(self, neuron) -> bool:
        return neuron in self._membranes

    def __len__(self) -> int:
        return len(self._membranes)

    def clear(self) -> None:
        """Forget every stored membrane: the next calls start from ``v_init`` again."""
        self._membranes.clear()

    def initial(self, neuron: TemporalLayer, step_shape, default):
        """Membrane to start ``neuron`` from: the stored one, or ``default`` if none."""
        membrane = self._membranes.get(neuron)
        if membrane is None:
            return default
        if membrane.shape != step_shape:
            raise ValueError(
                f"carried membrane of shape {tuple(membrane.shape)} does not match the new input step "
                f"{tuple(step_shape)}: call state.clear() when the batch shape changes"
            )
        return membrane

    def store(self, neuron: TemporalLayer, membrane: Tensor) -> None:
        self._membranes[neuron] = membrane.detach() if self.detach else membrane


@contextmanager
def _attached(model: nn.Module, state: MembraneState):
    """Route every temporal layer of ``model`` through ``state`` for the duration of the block."""
    layers = _temporal_layers(model)
    for layer in layers:
        if layer._scope is not None:
            raise RuntimeError(f"{type(layer).__name__} is already inside a state_scope")
        layer._scope = state
    try:
        yield state
    finally:
        for layer in layers:
            layer._scope = None


def state_scope(model: nn.Module, carry: bool = True, detach: bool = True):
    """Record (and by default carry) membrane state across calls of ``model``'s neurons.

    Outside a scope every call starts from ``v_init``. Inside, each neuron's
    final membrane is kept in the yielded :class:`MembraneState`; with
    ``carry=True`` the next call continues from it (streaming, chunked long
    simulations). ``detach=False`` keeps the graph for BPTT across chunks.
    """
    return _attached(model, MembraneState(carry, detach))
