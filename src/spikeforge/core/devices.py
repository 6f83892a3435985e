"""Device facts the rest of the package needs in more than one place."""

from __future__ import annotations

import torch

__all__ = ["sum_dtype"]


def sum_dtype(device: torch.device) -> torch.dtype:
    """The dtype for metric sums accumulated over an epoch on ``device``: float64, except on Apple's
    MPS, which has none (float32 counts stay exact up to 2**24 there)."""
    return torch.float32 if device.type == "mps" else torch.float64
