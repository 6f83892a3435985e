"""Losses on per-step outputs ``[T, B, K]`` (time-first).

- SDT (standard direct training): cross-entropy of the time-averaged output.
- TET (Deng et al., ICLR 2022, "Temporal Efficient Training of Spiking Neural Network via Gradient
  Re-weighting"): ``(1 - lam) * mean_t CE(o_t, y) + lam * mean_t MSE(o_t, phi)``,
  where ``phi`` is a constant target for every logit (the paper uses ``phi = v_th = 1``).

A plain ANN output ``[B, K]`` is accepted as a single step.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["sdt_loss", "tet_loss", "SDTLoss", "TETLoss", "build_loss"]


def _as_steps(outputs: Tensor) -> Tensor:
    if outputs.dim() == 2:
        return outputs.unsqueeze(0)
    if outputs.dim() != 3:
        raise ValueError(f"expected outputs [T, B, K] or [B, K], got shape {tuple(outputs.shape)}")
    return outputs


def sdt_loss(outputs: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of ``mean_t outputs[t]``; outputs ``[T, B, K]``, target ``[B]``."""
    return F.cross_entropy(_as_steps(outputs).mean(0), target, label_smoothing=label_smoothing)


def tet_loss(outputs: Tensor, target: Tensor, lam: float = 0.05, phi: float = 1.0,
             label_smoothing: float = 0.0) -> Tensor:
    """TET loss of outputs ``[T, B, K]`` and target ``[B]``; ``lam = 0`` is the per-step cross-entropy average alone."""
    steps = _as_steps(outputs)
    t, b, k = steps.shape
    per_step_ce = F.cross_entropy(
        steps.reshape(t * b, k), target.repeat(t), label_smoothing=label_smoothing
    )  # mean over T*B == mean_t of per-step batch means
    if lam == 0.0:
        return per_step_ce
    return (1 - lam) * per_step_ce + lam * F.mse_loss(steps, steps.new_full((), phi).expand_as(steps))


class SDTLoss(nn.Module):
    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, outputs: Tensor, target: Tensor) -> Tensor:
        return sdt_loss(outputs, target, self.label_smoothing)


class TETLoss(nn.Module):
    def __init__(self, lam: float = 0.05, phi: float = 1.0, label_smoothing: float = 0.0):
        super().__init__()
        self.lam, self.phi, self.label_smoothing = lam, phi, label_smoothing

    def forward(self, outputs: Tensor, target: Tensor) -> Tensor:
        return tet_loss(outputs, target, self.lam, self.phi, self.label_smoothing)

    def extra_repr(self) -> str:
        return f"lam={self.lam}, phi={self.phi}"


def build_loss(name: str, **kwargs) -> nn.Module:
    """``"sdt"`` or ``"tet"`` by name (recipes use this)."""
    losses = {"sdt": SDTLoss, "tet": TETLoss}
    if name not in losses:
        raise ValueError(f"unknown loss {name!r}: expected one of {sorted(losses)}")
    return losses[name](**kwargs)
