"""Surrogate-gradient shapes (public alias of :mod:`spikeforge.core.surrogate`)."""

from .core.surrogate import *  # noqa: F401,F403
from .core.surrogate import __all__  # noqa: F401
