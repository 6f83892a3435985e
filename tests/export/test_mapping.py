"""The neuron mapping against NIR's ODEs: closed-form spike times, an independent NIR-node simulator,
parameter round trips and import errors."""

import math

import numpy as np
import pytest
import torch

import spikeforge as sf

nir = pytest.importorskip("nir")
from spikeforge.export import neuron_to_node, node_to_neuron  # noqa: E402


def euler_steps_to_first_spike(node, current: float, dt: float) -> tuple[int, float]:
    """First step n with v_n > v_threshold, from the closed form of the NIR LIF ODE under forward Euler
    (v_0 = 0, constant current I): v_n = r I (1 - (1 - dt/tau)^n). Returns (n, smallest |v_n - v_th|)."""
    tau, r, v_th = float(node.tau[0]), float(node.r[0]), float(node.v_threshold[0])
    margin = math.inf
    for n in range(1, 10_000):
        v = r * current * (1 - (1 - dt / tau) ** n)
        margin = min(margin, abs(v - v_th))
        if v > v_th:
            return n, margin
    raise AssertionError("no spike")


@pytest.mark.parametrize("dt", [1e-4, 1e-3])
@pytest.mark.parametrize("decay, input_scale, current", [(0.5, 1.0, 0.6), (0.8, "complement", 1.5), (0.9, 1.0, 0.15)])
def test_lif_under_constant_current_fires_when_the_euler_ode_predicts(dt, decay, input_scale, current):
    neuron = sf.LIF(decay=decay, input_scale=input_scale, v_th=1.0, strict=True)
    node = neuron_to_node(neuron, (1,), dt, "lif")
    assert isinstance(node, nir.LIF) and float(node.tau[0]) == pytest.approx(dt / (1 - decay))
    period, margin = euler_steps_to_first_spike(node, current, dt)
    assert margin > 1e-4  # far from float32 rounding: the comparison below is exact
    steps = 4 * period + 1
    spikes = neuron(torch.full((steps, 1), current))[:, 0]
    expected = torch.zeros(steps)
    expected[period - 1::period] = 1  # hard reset to 0: the same climb starts again after each spike
    assert torch.equal(spikes, expected)


@pytest.mark.parametrize("dt", [1e-4, 1e-2])
def test_converted_if_neuron_counts_match_the_integrator(dt):
    """QCFS's IF (soft reset, v_init = theta/2, v >= theta): after n steps of constant current I the NIR
    integrator dv/dt = r I has gained n dt r I, so it has fired floor((n dt r I + theta/2) / theta) times."""
    theta, current = 0.8, 0.23
    neuron = sf.IF(v_th=theta, reset="soft", v_init=theta / 2, strict=False)
    node = neuron_to_node(neuron, (1,), dt, "if")
    assert isinstance(node, nir.IF)
    assert node.metadata == {"spikeforge.reset": "subtract", "spikeforge.v_init": theta / 2, "spikeforge.v_th": theta}
    steps = 40
    counts = neuron(torch.full((steps, 1), current))[:, 0].cumsum(0)
    gain = dt * float(node.r[0]) * current
    expected = torch.tensor([math.floor((n * gain + theta / 2) / theta) for n in range(1, steps + 1)],
                            dtype=counts.dtype)
    assert torch.equal(counts, expected)


def test_non_strict_threshold_is_written_one_float32_below():
    neuron = sf.LSGLIF()  # fires on v >= 0.5
    node = neuron_to_node(neuron, (3,), 1e-4, "lsg")
    written = np.float32(node.v_threshold[0])
    assert written < np.float32(0.5) and np.nextafter(written, np.float32(1)) == np.float32(0.5)
    at_threshold = np.float32(0.5)
    assert at_threshold > written  # NIR's strict comparison fires where spikeforge's v >= v_th does


def simulate_nir_node(node, currents: np.ndarray, dt: float) -> np.ndarray:
    """NIR LIF / IF semantics stepped with forward Euler in float32: v > v_threshold fires, v -> v_reset."""
    f32 = np.float32
    if isinstance(node, nir.LIF):
        a, b = f32(1 - dt / node.tau), f32(dt * node.r / node.tau)
    else:
        a, b = f32(np.ones_like(node.r)), f32(dt * node.r)
    v = np.zeros(currents.shape[1:], dtype=f32)
    spikes = []
    for x in currents.astype(f32):
        v = a * v + b * x
        s = v > f32(node.v_threshold)
        v = np.where(s, f32(node.v_reset), v)
        spikes.append(s.astype(f32))
    return np.stack(spikes)


@pytest.mark.parametrize("dt", [1e-4, 1e-3])
@pytest.mark.parametrize("make", [
    lambda: sf.LIF(decay=0.5, v_th=1.0, strict=True),
    lambda: sf.LIF(decay=0.25, input_scale=0.5, v_th=0.3, v_reset=-0.2, strict=True),
    lambda: sf.LSGLIF(),
    lambda: sf.ParametricLIF(decay=0.7, input_scale="complement"),
    lambda: sf.IF(v_th=0.6, strict=True),
])
def test_hard_reset_neurons_spike_like_an_independent_nir_simulation(dt, make):
    neuron = make()
    x = torch.randn(30, 4, 5, generator=torch.Generator().manual_seed(3)) + 0.4
    node = neuron_to_node(neuron, (4, 5), dt, "n")
    assert not node.metadata.get("spikeforge.reset")
    with torch.no_grad():
        ours = neuron(x).numpy()
    theirs = simulate_nir_node(node, x.numpy(), dt)
    assert ours.sum() > 10 and np.array_equal(ours, theirs)


@pytest.mark.parametrize("dt", [1e-4, 1e-3, 1.0])
@pytest.mark.parametrize("make", [
    lambda: sf.LIF(decay=0.2, input_scale=0.3, v_th=0.7, v_reset=-0.1, strict=True),
    lambda: sf.LIF(decay=0.0, v_th=0.5),
    lambda: sf.IF(v_th=1.7, reset="soft", v_init=0.85),
    lambda: sf.LSGLIF(),
    lambda: sf.ParametricLIF(decay=0.37, input_scale="complement", reset="soft"),
])
def test_node_to_neuron_inverts_neuron_to_node(dt, make):
    neuron = make()
    back = node_to_neuron(neuron_to_node(neuron, (2,), dt, "n"), dt, "n")
    def f32(value):
        return np.float32(value.detach() if isinstance(value, torch.Tensor) else value)

    assert f32(back.decay) == f32(neuron.decay) and f32(back.input_scale) == f32(neuron.input_scale)
    assert (back.v_th, back.v_init) == (float(neuron.v_th), neuron.v_init)
    assert (back.spec.hard_reset, back.spec.strict) == (neuron.spec.hard_reset, neuron.spec.strict)
    if neuron.spec.hard_reset:
        assert back.spec.v_reset == neuron.spec.v_reset
    x = torch.randn(25, 3, 2, generator=torch.Generator().manual_seed(0)) + 0.5
    with torch.no_grad():
        assert torch.equal(back(x), neuron(x))


def test_import_rejects_what_spikeforge_neurons_cannot_express():
    ones = np.ones(3)
    leak = nir.LIF(tau=ones * 1e-3, r=ones, v_leak=ones * 0.1, v_threshold=ones)
    with pytest.raises(ValueError, match="node layer7 .*v_leak"):
        node_to_neuron(leak, 1e-4, "layer7")
    varied = nir.LIF(tau=np.array([1e-3, 2e-3, 1e-3]), r=ones, v_leak=0 * ones, v_threshold=ones)
    with pytest.raises(ValueError, match="node lif2 .*tau differs"):
        node_to_neuron(varied, 1e-4, "lif2")
    fast = nir.LIF(tau=ones * 1e-5, r=ones, v_leak=0 * ones, v_threshold=ones)
    with pytest.raises(ValueError, match="tau=1e-05 is shorter than the time step"):
        node_to_neuron(fast, 1e-4, "lif3")
    with pytest.raises(ValueError, match="decay 1.5"):
        neuron_to_node(sf.LIF(decay=1.5), (1,), 1e-4, "bad")
