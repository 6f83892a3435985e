"""Independent step-by-step reference simulation for converted networks (test helper)."""

import copy

import torch
from torch import nn

from spikeforge.convert import QCFS


class StepIF(nn.Module):
    """One IF step per call with an explicit membrane: charge, fire on v >= theta, subtract theta."""

    def __init__(self, theta: float):
        super().__init__()
        self.theta = theta
        self.v = None
        self.mask = None

    def forward(self, x):
        if self.v is None:
            self.v = torch.full_like(x, self.theta / 2)
        self.v = self.v + x
        spike = (self.v >= self.theta).to(x.dtype)
        self.v = self.v - spike * self.theta
        out = spike * self.theta
        return out if self.mask is None else out * self.mask


def reference_model(ann: nn.Module) -> tuple[nn.Module, list[StepIF]]:
    ref = copy.deepcopy(ann).eval()
    cells = []

    def swap(module):
        for name, child in list(module.named_children()):
            if isinstance(child, QCFS):
                cell = StepIF(child.threshold)
                cells.append(cell)
                setattr(module, name, cell)
            else:
                swap(child)

    swap(ref)
    return ref, cells


@torch.no_grad()
def reference_logits(ann: nn.Module, images: torch.Tensor, steps: int, srp_tau: int = 0) -> torch.Tensor:
    """Per-step logits ``[T, B, K]``: a Python loop over t calling the network once per step."""
    ref, cells = reference_model(ann)
    for _ in range(srp_tau):
        ref(images)
    if srp_tau:
        for c in cells:
            c.mask = (c.v / c.theta > 1e-3).to(images.dtype)
            c.v = None  # back to theta / 2
    return torch.stack([ref(images) for _ in range(steps)])


def randomise(model: nn.Module, seed: int = 0, lam_range=(0.5, 2.0)) -> nn.Module:
    """Random BN statistics/affine and random QCFS thresholds, so folding and thresholds matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
            elif isinstance(m, QCFS):
                lo, hi = lam_range
                m.lam.fill_(lo + (hi - lo) * torch.rand(1, generator=g).item())
    return model.eval()
