"""The QCFS activation (quantization-clip-floor-shift) of the source ANN.

Bu et al., "Optimal ANN-SNN Conversion for High-accuracy and Ultra-low-latency
Spiking Neural Networks" (ICLR 2022).

For a pre-activation ``z`` and a per-layer trainable scalar ``lam``::

    h(z) = lam * clamp(floor(z * L / lam + 1/2) / L, 0, 1)

i.e. ``z / lam`` rounded half-up to the grid ``1/L``, clipped to ``[0, 1]`` and
scaled back by ``lam``: ``h`` takes the ``L + 1`` values ``k * lam / L``.

Gradients (the paper's math, floor applied before the clamp):

- ``floor`` passes the gradient straight through (identity);
- the clamp passes the gradient on the closed interval ``[0, 1]``, so with ``u = z / lam`` the window where
  gradient flows is ``-1/(2L) <= u < 1 + 1/(2L)`` (the rounded value lies in ``[0, L]``);
- ``dh/dz = 1`` inside the window, 0 outside;
- ``dh/dlam = q - u = (h - z) / lam`` inside, ``1`` above the window, ``0`` below
  (plain autograd through ``lam * q(z / lam)``).

Positivity of ``lam``: the forward uses ``max(lam, eps)`` with a straight-through
gradient (the parameter still receives its full gradient, so a threshold that was
pushed to or below ``eps`` can recover). :attr:`QCFS.threshold` is the value
actually used, and the one conversion copies into the IF neuron.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["QCFS", "floor_ste"]


class _FloorSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


class _ClampMinSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, low: float) -> Tensor:
        return x.clamp(min=low)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def floor_ste(x: Tensor) -> Tensor:
    """``floor(x)`` forward, identity gradient (straight-through estimator)."""
    return _FloorSTE.apply(x)


class QCFS(nn.Module):
    """Quantization-clip-floor-shift activation: ``[N, ...] -> [N, ...]`` (same shape).

    Args:
        levels: ``L``, the number of quantisation steps (output has ``L + 1`` values).
        threshold: initial ``lam`` (the clip value; becomes the IF threshold
            after conversion). The QCFS code bases use 8.0; too small an initial
            value can drive it negative (QCFS issue #10).
        eps: lower bound applied to ``lam`` in the forward (see module docstring).

    Attributes:
        lam: the trainable scalar (shape ``[1]``); it receives weight decay like
            any weight in the shipped recipes.
    """

    def __init__(self, levels: int = 4, threshold: float = 8.0, eps: float = 1e-3):
        super().__init__()
        levels = int(levels)
        if levels < 1:
            raise ValueError(f"QCFS levels must be >= 1, got {levels}")
        if not threshold > 0:
            raise ValueError(f"QCFS threshold must be > 0, got {threshold}")
        self.levels = levels
        self.eps = float(eps)
        self.lam = nn.Parameter(torch.tensor([float(threshold)]))

    def positive_lam(self) -> Tensor:
        """``max(lam, eps)`` with the gradient of ``lam`` passed straight through."""
        return _ClampMinSTE.apply(self.lam, self.eps)

    @property
    def threshold(self) -> float:
        """The clip value used by the forward (``max(lam, eps)``), as a float."""
        return max(float(self.lam.detach()), self.eps)

    def forward(self, z: Tensor) -> Tensor:
        lam = self.positive_lam()
        levels = self.levels
        q = floor_ste(z / lam * levels + 0.5) / levels
        # clamp to [0, 1] with gradient 1 on the closed interval (torch.clamp's gradient is 0 at the bounds)
        inside = (q >= 0.0) & (q <= 1.0)
        q = torch.where(inside, q, q.detach().clamp(0.0, 1.0))
        return lam * q

    def extra_repr(self) -> str:
        return f"levels={self.levels}, lam={float(self.lam.detach()):.4g}"
