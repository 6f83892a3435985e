"""Fixtures shared by every test folder."""

import pytest
import torch

from spikeforge import models


@pytest.fixture
def build_on_meta():
    """Build a model without allocating or initialising real weights (fast, for parameter counts)."""

    def build(name: str, **kwargs):
        with torch.device("meta"):
            return models.create(name, **kwargs)

    return build


@pytest.fixture(autouse=True)
def _single_thread():
    """Test tensors are tiny: one intra-op thread is faster, and a busy 2-core machine then cannot
    stall them in thread barriers (seen: 30x slower forwards with 2 threads under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def plots_expected() -> bool:
    """Whether runs write their PNG plots here: exactly when matplotlib is installed (it is optional)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(params=["openmp", "thread pool"])
def two_kernel_threads(request, monkeypatch):
    """Two intra-op threads, so that the compiled CPU kernels split their elements into two ranges, run either
    in one call over both ranges (as on OpenMP's threads) or one call per range on the host's thread pool: both
    of the host's paths, whichever the libraries were built for."""
    from spikeforge.core.kernels import bits, cpu, host

    run = host.parallel
    for module in (cpu, bits):
        monkeypatch.setattr(module, "parallel",
                            lambda function, ranges, arguments, openmp: run(function, ranges, arguments,
                                                                            request.param == "openmp"))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield request.param
    torch.set_num_threads(threads)
