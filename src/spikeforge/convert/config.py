"""The conversion recipe: :class:`ConversionConfig`, how ``spikeforge convert`` tests a QCFS ANN as an IF SNN.

The checkpoint brings the network and its data; the recipe says which time steps to report, whether to
add SRP, and how to run the test set. Recipe loading and overrides are :mod:`spikeforge.runtime.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..runtime.config import apply_overrides, at_least, check, from_dict, load_recipe

__all__ = ["ConversionConfig", "timestep_sweep", "build_conversion_config"]


def timestep_sweep(key: str, values: list[int]) -> list[int]:
    """``values`` sorted and unique; a one-line ConfigError naming ``key`` unless they are one or more integers >= 1."""
    check(key, values, len(values) > 0, "a non-empty list of time steps")
    for i, t in enumerate(values):
        at_least(f"{key}[{i}]", t, 1)
    return sorted(set(values))


@dataclass
class ConversionConfig:
    """A QCFS ANN converted to IF neurons and tested after each of ``timesteps`` steps (one simulation of
    ``max(timesteps)`` steps per batch yields them all), with SRP too when ``srp_tau > 0``."""

    timesteps: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])  # T values reported
    srp_tau: int = 0  # SRP pre-run steps before each batch (latency srp_tau + T); 0: no SRP
    bn: str = "keep"  # keep: batch norm applied at every step | fold: folded into the preceding conv/linear
    limit: int | None = None  # test on the first N test images (None: all)
    batch_size: int | None = None  # None: the checkpoint recipe's data.eval_batch_size (else data.batch_size)
    chunk: int = 16  # time steps simulated per call (memory)
    description: str = ""

    def __post_init__(self):
        self.timesteps = timestep_sweep("timesteps", self.timesteps)
        at_least("srp_tau", self.srp_tau, 0)
        check("bn", self.bn, self.bn in ("keep", "fold"), "keep or fold")
        at_least("limit", self.limit, 1, optional=True)
        at_least("batch_size", self.batch_size, 1, optional=True)
        at_least("chunk", self.chunk, 1)


def build_conversion_config(recipe: str | None = None, overrides: list[str] | None = None) -> ConversionConfig:
    """Recipe + ``key=value`` overrides -> validated :class:`ConversionConfig` (no recipe: the defaults)."""
    return from_dict(ConversionConfig, apply_overrides(load_recipe(recipe), overrides or []))
