"""Every row of docs/migrating.md: a peer's neuron and the spikeforge call the page gives for it produce the
same spikes and the same input gradients on one random input ``[T=16, B=4, 64]`` (skipped per peer when the
peer is not installed).

Peers keep state between calls: SpikingJelly nodes are reset with ``functional.reset_net`` after each call,
snnTorch and Norse cells are stepped by hand from a fresh state.
"""


import pytest
import torch

import spikeforge as sf
from spikeforge.surrogate import ATan, Sigmoid, SuperSpike, Triangle

T, B, N = 16, 4, 64


def drive(scale: float) -> torch.Tensor:
    """Uniform input in ``[0, scale)``: scaled so that the neuron fires often but not always."""
    return torch.rand(T, B, N, generator=torch.Generator().manual_seed(0)) * scale


def assert_equivalent(peer, ours, x: torch.Tensor) -> None:
    """Same spikes, and the same gradient of a random readout of the spikes with respect to the input."""
    x_peer, x_ours = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    s_peer, s_ours = peer(x_peer), ours(x_ours)
    assert 0.05 < float(s_ours.detach().mean()) < 0.95
    assert torch.equal(s_peer.detach(), s_ours.detach())
    readout = torch.randn(s_ours.shape, generator=torch.Generator().manual_seed(1))
    (g_peer,) = torch.autograd.grad((s_peer * readout).sum(), x_peer)
    (g_ours,) = torch.autograd.grad((s_ours * readout).sum(), x_ours)
    assert float(g_ours.abs().max()) > 0
    torch.testing.assert_close(g_ours, g_peer, rtol=1e-4, atol=1e-5 * float(g_peer.abs().max()))


# --- SpikingJelly: multi-step nodes, state reset after each call -------------------------------------------

@pytest.fixture(scope="module")
def sj():
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, neuron, surrogate

    return neuron, surrogate, functional


def sj_runner(node, functional):
    def run(x):
        try:
            return node(x)
        finally:
            functional.reset_net(node)

    return run


@pytest.mark.parametrize("tau, decay_input, v_reset, scale", [
    (2.0, True, 0.0, 3.0),     # LIFNode() defaults
    (4.0, False, 0.0, 0.6),    # decay_input=False: the input is not scaled by 1/tau
    (2.0, True, None, 3.0),    # v_reset=None: soft reset (subtract the threshold)
])
def test_spikingjelly_lifnode(sj, tau, decay_input, v_reset, scale):
    neuron, _, functional = sj
    node = neuron.LIFNode(tau=tau, decay_input=decay_input, v_reset=v_reset, step_mode="m")
    ours = sf.LIF(decay=1 - 1 / tau, input_scale=1 / tau if decay_input else 1.0,
                  reset="hard" if v_reset is not None else "soft", surrogate=Sigmoid(4.0))
    assert_equivalent(sj_runner(node, functional), ours, drive(scale))


def test_spikingjelly_ifnode(sj):
    neuron, _, functional = sj
    assert_equivalent(sj_runner(neuron.IFNode(step_mode="m"), functional), sf.IF(surrogate=Sigmoid(4.0)), drive(1.0))


def test_spikingjelly_atan_surrogate(sj):
    neuron, surrogate, functional = sj
    node = neuron.LIFNode(surrogate_function=surrogate.ATan(), step_mode="m")
    ours = sf.LIF(decay=0.5, input_scale=0.5, surrogate=ATan(2.0))
    assert_equivalent(sj_runner(node, functional), ours, drive(3.0))


def test_spikingjelly_parametric_lifnode(sj):
    neuron, _, functional = sj
    init_tau = 2.0
    node = neuron.ParametricLIFNode(init_tau=init_tau, step_mode="m")
    ours = sf.ParametricLIF(decay=1 - 1 / init_tau, input_scale="complement", surrogate=Sigmoid(4.0))
    assert_equivalent(sj_runner(node, functional), ours, drive(3.0))
    # The learnable time constant too: SpikingJelly learns w with 1/tau = sigmoid(w), spikeforge the
    # logit of decay = 1 - 1/tau = sigmoid(-w), so their gradients are opposite.
    x = drive(3.0)
    node.w.grad = None
    sj_runner(node, functional)(x).sum().backward()
    ours(x).sum().backward()
    torch.testing.assert_close(ours.decay_logit.grad, -node.w.grad, rtol=1e-4, atol=1e-6)


# --- snnTorch: one step per call, membrane passed explicitly -----------------------------------------------

@pytest.fixture(scope="module")
def snntorch():
    return pytest.importorskip("snntorch")


def snntorch_runner(cell):
    def run(x):
        mem, spikes = torch.zeros_like(x[0]), []
        for x_t in x:
            spk, mem = cell(x_t, mem)
            spikes.append(spk)
        return torch.stack(spikes)

    return run


def test_snntorch_leaky_reset_to_zero(snntorch):
    beta = 0.5
    cell = snntorch.Leaky(beta=beta, reset_mechanism="zero")
    ours = sf.LIF(decay=beta, strict=True, detach_reset=True, surrogate=ATan(2.0))
    assert_equivalent(snntorch_runner(cell), ours, drive(1.5))


def test_snntorch_leaky_defaults(snntorch):
    beta = 0.5
    cell = snntorch.Leaky(beta=beta)
    ours = sf.LIF(decay=beta, reset="soft", reset_timing="next_step", strict=True, detach_reset=True,
                  surrogate=ATan(2.0))
    assert_equivalent(snntorch_runner(cell), ours, drive(1.5))


# --- Norse: cells stepped from a fresh state ---------------------------------------------------------------

@pytest.fixture(scope="module")
def norse():
    return pytest.importorskip("norse.torch")


def norse_runner(cell):
    def run(x):
        state, spikes = None, []
        for x_t in x:
            z, state = cell(x_t, state)
            spikes.append(z)
        return torch.stack(spikes)

    return run


# Norse 1.1's default surrogate ("super", alpha 100) computes 1 / (|x| + 1)^2 whatever its alpha: SuperSpike(1.0).
NORSE_METHODS = ["super", "triangle"]  # Norse's "triangle" with alpha 1 is spikeforge's default Triangle(1.0)


def norse_surrogate(method: str):
    return SuperSpike(1.0) if method == "super" else Triangle(1.0)


@pytest.mark.parametrize("method", NORSE_METHODS)
def test_norse_lifboxcell(norse, method):
    dt, tau_mem_inv = 1e-3, 100.0  # Norse's defaults
    p = norse.LIFBoxParameters() if method == "super" else norse.LIFBoxParameters(method=method, alpha=1.0)
    ours = sf.LIF(decay=1 - dt * tau_mem_inv, input_scale=dt * tau_mem_inv, strict=True,
                  surrogate=norse_surrogate(method))
    assert_equivalent(norse_runner(norse.LIFBoxCell(p, dt=dt)), ours, drive(3.0))


def exponential_filter(x: torch.Tensor, decay: float) -> torch.Tensor:
    """``c_t = decay c_{t-1} + x_t`` over dim 0, as one matrix product (lower-triangular powers of ``decay``)."""
    steps = torch.arange(x.shape[0])
    lag = steps[:, None] - steps[None, :]
    powers = torch.where(lag >= 0, decay ** lag.clamp(min=0).double(), 0.0).to(x.dtype)
    return torch.einsum("tk,k...->t...", powers, x)


@pytest.mark.parametrize("method", NORSE_METHODS)
def test_norse_lifcell_is_a_current_filter_then_lif(norse, method):
    dt, tau_syn_inv, tau_mem_inv = 1e-3, 200.0, 100.0  # Norse's defaults
    p = norse.LIFParameters() if method == "super" else norse.LIFParameters(method=method, alpha=1.0)
    cell = norse.LIFCell(p, dt=dt)
    lif = sf.LIF(decay=1 - dt * tau_mem_inv, input_scale=dt * tau_mem_inv, strict=True,
                 surrogate=norse_surrogate(method))
    assert_equivalent(norse_runner(cell), lambda x: lif(exponential_filter(x, 1 - dt * tau_syn_inv)), drive(1.5))
