"""Optional packages, imported only inside the functions that need them.

``require("nir", "nir", "spikeforge export")`` returns the ``nir`` module, or raises
:class:`MissingDependency` with one line naming the extra to install. The command line turns
that error into its message and exit code 2.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingDependency", "EXTRAS", "require"]

#: The ``pip install "spikeforge[EXTRA]"`` extra that brings each optional package.
EXTRAS = {
    "nir": "nir",
    "h5py": "events",
    "lz4": "events",
    "zstandard": "events",
    "aedat": "events",
    "scipy": "events",
    "matplotlib": "plot",
    "tensorboard": "tensorboard",
}


class MissingDependency(ImportError):
    """An optional package a feature needs is not installed (one-line message naming the extra)."""


def require(module: str, feature: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` (a dotted name such as ``"lz4.frame"``) for ``feature``, or raise
    :class:`MissingDependency` saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        extra = extra or EXTRAS.get(top)
        hint = f'pip install "spikeforge[{extra}]"' if extra else f"pip install {top}"
        raise MissingDependency(f"{feature} needs the '{top}' package: {hint}") from err
