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
    wrapper tells its neurons the current ``T`` for the duration of the call.

    Args:
        backbone: any ``nn.Module`` built from ordinary layers and spiking neurons.
        timesteps: ``T`` for static inputs; can be changed between calls.
        encoding: ``"direct"`` (the same input at every step) or ``"poisson"``
            (rate code) for static inputs.
        static_ndim: rank of a static input batch (4 for images ``[B, C, H, W]``).
            An input of one more dimension is a sequence ``[T, B, ...]`` and
            is passed as is, with ``T`` taken from its first dimension.
    """

    def __init__(self, backbone: nn.Module, timesteps: int = 4, encoding: str = "direct", static_ndim: int = 4):
        super().__init__()
        if encoding not in ("direct", "poisson"):
            raise ValueError(f"encoding must be 'direct' or 'poisson', got {encoding!r}")
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        self.backbone = backbone
        self.timesteps = int(timesteps)
        self.encoding = encoding
        self.static_ndim = static_ndim

    def encode(self, x: Tensor) -> Tensor:
        """Static ``[B, ...]`` or sequence ``[T, B, ...]`` to a sequence ``[T, B, ...]``."""
        if x.dim() == self.static_ndim + 1:
            return x
        if x.dim() != self.static_ndim:
            raise ValueError(
                f"expected a static batch of rank {self.static_ndim} or a sequence of rank "
                f"{self.static_ndim + 1}, got shape {tuple(x.shape)}"
            )
        if self.encoding == "poisson":
            return poisson_encode(x, self.timesteps)
        return direct_encode(x, self.timesteps)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        """``[T, B, K]`` per output of the backbone (a tuple if the backbone returns one)."""
        seq = self.encode(x)
        steps = seq.shape[0]
        cells = neurons(self.backbone)
        previous = [n.time_steps for n in cells]
        for n in cells:
            n.time_steps = steps
        try:
            out = self.backbone(fold(seq))
        finally:
            for n, p in zip(cells, previous):
                n.time_steps = p
        if isinstance(out, tuple):  # e.g. (logits, auxiliary logits)
            return tuple(unfold(o, steps) for o in out)
        return unfold(out, steps)

    def extra_repr(self) -> str:
        return f"timesteps={self.timesteps}, encoding={self.encoding!r}"


class MembraneState:
    """Final membrane potentials of the neurons in a :func:`state_scope`.

    ``state[neuron]`` is the membrane after the neuron's last call in the scope
    (shape of one time step, e.g. ``[B, C, H, W]``). With ``carry=True`` the
    next call of that neuron starts from it instead of ``v_init``.
    """

    def __init__(self, carry: bool, detach: bool):
        self.carry = carry
        self.detach = detach
        self._membranes: dict[SpikingNeuron, Tensor] = {}

    def __getitem__(self, neuron: SpikingNeuron) -> Tensor:
        return self._membranes[neuron]

    def __setitem__(self, neuron: SpikingNeuron, membrane: Tensor) -> None:
        """Set the membrane a neuron starts from at its next call (with ``carry``)."""
        self._membranes[neuron] = membrane

    def __contains__(self, neuron) -> bool:
        return neuron in self._membranes

    def __len__(self) -> int:
        return len(self._membranes)

    def clear(self) -> None:
        """Forget every stored membrane: the next calls start from ``v_init`` again."""
        self._membranes.clear()

    def initial(self, neuron: SpikingNeuron, step_shape, default):
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

    def store(self, neuron: SpikingNeuron, membrane: Tensor) -> None:
        self._membranes[neuron] = membrane.detach() if self.detach else membrane


@contextmanager
def state_scope(model: nn.Module, carry: bool = True, detach: bool = True):
    """Record (and by default carry) membrane state across calls of ``model``'s neurons.

    Outside a scope every call starts from ``v_init``. Inside, each neuron's
    final membrane is kept in the yielded :class:`MembraneState`; with
    ``carry=True`` the next call continues from it (streaming, chunked long
    simulations). ``detach=False`` keeps the graph for BPTT across chunks.
    """
    state = MembraneState(carry, detach)
    cells = neurons(model)
    for n in cells:
        if n._scope is not None:
            raise RuntimeError(f"{type(n).__name__} is already inside a state_scope")
        n._scope = state
    try:
        yield state
    finally:
        for n in cells:
            n._scope = None
