"""Where a run computes: the device, mixed precision, and the memory layout of weights and inputs."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["resolve_device", "autocast", "place_model", "input_format"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device



def autocast(device: torch.device, enabled: bool):
    """Mixed precision for ``device``: float16 autocast on CUDA (with loss scaling in the trainer),
    bfloat16 on a CPU with native bfloat16 (e.g. AVX-512 BF16/AMX), off elsewhere."""
    if device.type == "cpu":
        enabled = enabled and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)
    return torch.autocast(device.type, enabled=enabled and device.type == "cuda")  # the loss scaler is CUDA's



def place_model(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """``model`` on ``device``; with ``channels_last`` its 2D convolutions' weights in that layout
    (3D convolutions, as in the stereo networks, keep theirs)."""
    model = model.to(device)
    if channels_last:
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.to(memory_format=torch.channels_last)
    return model



def input_format(channels_last: bool):
    """The memory format for an input batch: ``channels_last`` for images ``[B, C, H, W]`` when asked."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return lambda images: layout if images.dim() == 4 else torch.preserve_format
