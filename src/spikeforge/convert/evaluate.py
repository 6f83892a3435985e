"""Simulating a converted SNN over time and its accuracy after every step, optionally with SRP.

Long simulations run in chunks of ``chunk`` steps inside a
:func:`spikeforge.state_scope` that carries every membrane from one chunk to the
next, so memory depends on the chunk length, not on ``T``. Because the network
is causal and feed-forward, chunked and one-shot simulation give the same
per-step outputs. One run of ``T`` steps gives the accuracy after every ``t <= T``,
read from the cumulative sum of the logits (the evaluation of Bu et al., ICLR 2022).
SRP (:mod:`spikeforge.convert.srp`) adds a pre-run and a masked main run with ``srp_tau > 0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import Tensor, nn

from ..core.time import direct_encode, state_scope
from ..runtime.progress import Progress
from .conversion import ScaledIF, scaled_neurons
from .srp import apply_masks, srp_masks

__all__ = ["simulate", "evaluate_over_time", "OverTime"]


def _run(snn: nn.Module, images: Tensor, steps: int, chunk: int) -> list[Tensor]:
    """Run ``steps`` steps of direct input in chunks (the caller holds the state scope)."""
    outs = []
    for start in range(0, steps, chunk):
        n = min(chunk, steps - start)
        outs.append(snn(direct_encode(images, n)))
    return outs


@torch.no_grad()
def simulate(
    snn: nn.Module, images: Tensor, timesteps: int, chunk: int = 16, srp_tau: int = 0, return_masks: bool = False
):
    """Per-step outputs ``[T, B, K]`` of a converted SNN on a static batch ``images``.

    Args:
        snn: the :class:`~spikeforge.SpikingNetwork` from :func:`~spikeforge.convert.to_snn`.
        images: ``[B, C, H, W]`` (fed at every step).
        timesteps: ``T`` (main-run steps).
        chunk: steps simulated per call; membranes are carried between chunks.
        srp_tau: SRP pre-run length ``tau`` (0: plain conversion; see :mod:`spikeforge.convert.srp`).
        return_masks: also return the SRP masks ``{ScaledIF: [B, ...] tensor}`` (empty when ``tau = 0``).
    """
    if timesteps < 1 or chunk < 1 or srp_tau < 0:
        raise ValueError(f"need timesteps >= 1, chunk >= 1, srp_tau >= 0; got {timesteps}, {chunk}, {srp_tau}")
    neurons = scaled_neurons(snn)
    if not neurons:
        raise ValueError("the network has no ScaledIF neurons: convert it with spikeforge.convert.to_snn")
    masks: dict[ScaledIF, Tensor] = {}
    with state_scope(snn, carry=True, detach=True) as state:
        if srp_tau > 0:
            _run(snn, images, srp_tau, chunk)
            masks = srp_masks(state, neurons)
            state.clear()  # every membrane restarts from v_init = theta / 2
        with apply_masks(masks):
            out = torch.cat(_run(snn, images, timesteps, chunk), dim=0)
    return (out, masks) if return_masks else out


@dataclass
class OverTime:
    """Accuracy of an SNN after every step.

    Attributes:
        accuracy: ``accuracy[t - 1]`` = top-1 of argmax of the logits summed over the first ``t`` main-run steps.
        srp_tau: SRP pre-run length (0: plain conversion).
        samples: number of test inputs.
    """

    accuracy: list[float]
    srp_tau: int = 0
    samples: int = 0
    timesteps: list[int] = field(default_factory=list)

    @property
    def total_steps(self) -> list[int]:
        """Latency per input for each entry of :attr:`accuracy`: ``tau + t``."""
        return [self.srp_tau + t for t in self.timesteps]

    def at(self, t: int) -> float:
        """Accuracy after ``t`` main-run steps (1-based)."""
        return self.accuracy[t - 1]

    # behaves like the list of accuracies
    def __len__(self) -> int:
        return len(self.accuracy)

    def __getitem__(self, index):
        return self.accuracy[index]

    def __iter__(self):
        return iter(self.accuracy)


@torch.no_grad()
def evaluate_over_time(
    snn: nn.Module,
    loader: Iterable,
    timesteps: int,
    chunk: int = 16,
    srp_tau: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> OverTime:
    """Top-1 accuracy after each of ``t = 1..timesteps`` steps over ``loader`` of ``(images, labels)``.

    One causal run of ``timesteps`` steps per batch gives the whole curve. With
    ``srp_tau > 0`` each batch is first pre-run for ``srp_tau`` steps (SRP).
    ``progress``: report on stderr (:class:`~spikeforge.runtime.progress.Progress`: a live bar on a
    terminal, a plain line each tenth of the batches and every minute in a log).
    """
    snn.eval()
    correct = torch.zeros(timesteps, dtype=torch.long)
    seen = 0
    desc = f"convert T={timesteps}" + (f" srp tau={srp_tau}" if srp_tau else "")
    for images, labels in Progress(loader, desc, enabled=progress, per_step=getattr(loader, "batch_size", None)):
        if device is not None:
            images, labels = images.to(device), labels.to(device)
        out = simulate(snn, images, timesteps, chunk=chunk, srp_tau=srp_tau)
        pred = out.cumsum(0).argmax(-1)  # [T, B]
        correct += (pred == labels.unsqueeze(0)).sum(1).cpu()
        seen += labels.numel()
    accuracy = (correct.double() / max(seen, 1)).tolist()
    return OverTime(accuracy, srp_tau=srp_tau, samples=seen, timesteps=list(range(1, timesteps + 1)))
