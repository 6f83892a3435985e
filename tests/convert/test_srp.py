"""SRP: per-sample per-neuron masks, tau = 0 equals plain conversion, fresh theta/2 for the main run,
and evaluate_over_time."""

import pytest
import torch
from helpers import randomise, reference_logits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import spikeforge as sf
from spikeforge import models
from spikeforge.convert import QCFS, ScaledIF, evaluate_over_time, simulate, to_snn


@pytest.fixture(scope="module")
def ann():
    act = models.activation_factory("qcfs", {"levels": 4})
    net = nn.Sequential(
        models.layers.ConvBNAct(3, 6, act),
        nn.AvgPool2d(2),
        models.resnet.BasicBlock(6, 8, 1, act),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    return randomise(net, seed=7).double()


def test_tau_zero_is_plain_conversion(ann):
    images = torch.randn(5, 3, 6, 6, dtype=torch.float64)
    snn = to_snn(ann, timesteps=9)
    assert torch.equal(simulate(snn, images, 9, chunk=4, srp_tau=0), simulate(snn, images, 9, chunk=4))
    assert torch.allclose(simulate(snn, images, 9, srp_tau=0), snn(images), atol=1e-12, rtol=0)
    loader = DataLoader(TensorDataset(images, torch.arange(5) % 5), batch_size=2)
    plain = evaluate_over_time(snn, loader, timesteps=9, chunk=4)
    srp0 = evaluate_over_time(snn, loader, timesteps=9, chunk=4, srp_tau=0)
    assert plain.accuracy == srp0.accuracy and srp0.total_steps == list(range(1, 10))


def test_masks_are_per_sample_and_per_neuron(ann):
    torch.manual_seed(0)
    images = torch.randn(6, 3, 6, 6, dtype=torch.float64)
    snn = to_snn(ann, timesteps=4)
    out, masks = simulate(snn, images, 4, chunk=3, srp_tau=3, return_masks=True)
    cells = [m for m in snn.modules() if isinstance(m, ScaledIF)]
    assert set(masks) == set(cells)
    for cell in cells:
        m = masks[cell]
        assert m.shape[0] == 6 and set(m.unique().tolist()) <= {0.0, 1.0}
    first = masks[cells[0]]
    assert first.shape == (6, 6, 6, 6)
    assert not all(torch.equal(first[0], first[i]) for i in range(1, 6))  # differs across samples
    assert 0 < first.mean() < 1  # some but not all neurons silenced
    assert not any(c._forward_hooks for c in cells)  # no mask left behind


def test_srp_matches_independent_reference(ann):
    """Pre-run tau, mask = 1[v/theta > 1e-3], membranes back to theta/2, masked main run."""
    torch.manual_seed(1)
    images = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    snn = to_snn(ann, timesteps=5)
    for tau, chunk in [(2, 16), (5, 2)]:
        ref = reference_logits(ann, images, 7, srp_tau=tau)
        out = simulate(snn, images, 7, chunk=chunk, srp_tau=tau)
        assert torch.allclose(out, ref, atol=1e-10, rtol=0)


def test_main_run_restarts_from_half_threshold():
    """One neuron, constant input 0: plain IF never fires; after a pre-run, v is back at theta/2
    (a carried residual would fire at once). Hand-built [+big, -big] input: fires once, SRP silences it."""
    theta = 1.0
    net = nn.Sequential(nn.Flatten(), nn.Linear(1, 1, bias=False), QCFS(4, theta)).double()
    with torch.no_grad():
        net[1].weight.fill_(1.0)
    snn = to_snn(net, timesteps=4)
    x = torch.full((1, 1, 1, 1), 0.4, dtype=torch.float64)  # theta/2 + 0.4 < theta: no spike at step 1
    out, masks = simulate(snn, x, 1, srp_tau=1, return_masks=True)
    # after the pre-run v = 0.9 (> 0: kept); a carried membrane would give 1.3 >= theta -> spike at step 1
    assert out.item() == 0.0 and masks[next(iter(masks))].item() == 1.0
    # uneven input: spike at step 1 (0.5 + 0.8 >= 1), then strongly negative: residual < 0 -> silenced
    cell = [m for m in snn.modules() if isinstance(m, ScaledIF)][0]
    seq = torch.tensor([0.8, -2.0, 0.8, -2.0], dtype=torch.float64).view(4, 1, 1)
    with sf.state_scope(cell) as state:
        spikes = cell(seq)
        v = state[cell]
    assert spikes.sum().item() == theta and v.item() < 0


def test_evaluate_over_time_curve(ann):
    torch.manual_seed(2)
    images = torch.randn(8, 3, 6, 6, dtype=torch.float64)
    labels = torch.randint(0, 5, (8,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=3)
    snn = to_snn(ann, timesteps=1)
    res = evaluate_over_time(snn, loader, timesteps=6, chunk=4, srp_tau=2)
    logits = simulate(snn, images, 6, srp_tau=2)
    expected = [(logits[:t].sum(0).argmax(-1) == labels).double().mean().item() for t in range(1, 7)]
    assert res.accuracy == pytest.approx(expected)
    assert res.samples == 8 and res.srp_tau == 2 and res.total_steps == [3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("levels", [2, 4])
def test_constant_input_masks_and_main_run_equal_qcfs(levels):
    """Constant currents z: v(tau) = theta/2 + tau*z - n*theta with n = clamp(floor(1/2 + tau*z/theta), 0, tau).
    Masks follow v(tau) > 1e-3*theta (so only z <= 0 and the rare exact-fit z are silenced), and unmasked
    neurons reproduce the QCFS output at T = L."""
    g = torch.Generator().manual_seed(levels)
    theta = 1.5
    z = (torch.rand(3000, 8, generator=g, dtype=torch.float64) * 2.0 - 0.5) * theta
    net = nn.Sequential(nn.Flatten(), QCFS(levels, theta)).double()
    snn = sf.SpikingNetwork(to_snn(net).backbone, timesteps=levels, static_ndim=2)
    tau = levels
    out, masks = simulate(snn, z, levels, srp_tau=tau, return_masks=True)
    mask = next(iter(masks.values()))
    assert mask.shape == z.shape
    n = torch.floor(0.5 + tau * z / theta).clamp(0, tau)
    v = theta / 2 + tau * z - n * theta
    clear = (v / theta - 1e-3).abs() > 1e-9
    assert torch.equal(mask[clear], (v / theta > 1e-3).double()[clear])
    assert (mask[z > theta] == 1).all() and (mask[z < -theta / (2 * tau)] == 0).all()
    assert mask[(z > 0) & (z <= theta)].mean() > 0.99
    qcfs = net(z).detach()
    rate = out.mean(0)
    assert torch.allclose(rate[mask == 1], qcfs[mask == 1], atol=1e-12, rtol=0)
    assert (rate[mask == 0] == 0).all()
