"""QCFS activation: quantised values, half-up rounding, gradients, positive threshold, zoo registration."""

import pytest
import torch

from spikeforge import models
from spikeforge.convert import QCFS


def _qcfs(levels=4, lam=2.0):
    act = QCFS(levels=levels, threshold=lam)
    return act


@pytest.mark.parametrize("levels", [1, 2, 4, 8])
def test_forward_values_are_levels(levels):
    torch.manual_seed(0)
    lam = 1.7
    act = _qcfs(levels, lam)
    z = torch.randn(5000) * 2 * lam
    out = act(z).detach()
    k = torch.round(out / (lam / levels))
    assert torch.allclose(out, lam * (k / levels), atol=1e-6, rtol=0)
    assert k.min() >= 0 and k.max() <= levels
    # reference: round half up of z/lam on a grid 1/L, clipped to [0, 1]
    ref = lam * torch.clamp(torch.floor(z / lam * levels + 0.5) / levels, 0, 1)
    assert torch.equal(out, ref)
    assert (out[z > lam * (1 + 0.5 / levels)] == lam).all()
    assert (out[z < -lam * 0.5 / levels] == 0).all()


def test_half_up_rounding_at_bin_edges():
    act = _qcfs(4, 8.0)  # bin width 2, edges at 1, 3, 5, 7
    z = torch.tensor([1.0, 3.0, 5.0, 7.0, 0.999, 2.999, -1.0, 9.0])
    out = act(z).detach()
    assert out.tolist() == [2.0, 4.0, 6.0, 8.0, 0.0, 2.0, 0.0, 8.0]


def test_gradient_wrt_input_is_straight_through_inside_window():
    act = _qcfs(4, 2.0)
    z = torch.tensor([-1.0, -0.2, 0.3, 1.1, 1.9, 2.2, 3.0], requires_grad=True)
    act(z).sum().backward()
    # floor-then-clamp: window -1/(2L) <= u < 1 + 1/(2L), u = z / lam -> z in [-0.25, 2.25)
    assert z.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_gradient_wrt_lambda_matches_finite_differences():
    """Autograd's dh/dlam equals the finite difference of the straight-through linearisation
    (floor(x) replaced by x - frac(x0), frozen at the evaluation point), away from bin edges;
    outside the window (where h is truly smooth in lam) it equals the plain finite difference."""
    levels, lam0 = 4, 2.0
    z = torch.linspace(-1.0, 4.0, 401, dtype=torch.float64)
    x0 = z / lam0 * levels + 0.5
    z = z[(x0 - x0.round()).abs() > 0.05]  # away from bin edges
    x0 = z / lam0 * levels + 0.5
    frac = x0 - torch.floor(x0)
    inside = (torch.floor(x0) >= 0) & (torch.floor(x0) <= levels)
    weights = torch.rand(z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    act = QCFS(levels, lam0).double()
    (act(z) * weights).sum().backward()
    grad = act.lam.grad.item()

    def linearised(lam):
        q = (z / lam * levels + 0.5 - frac) / levels
        return (weights * lam * torch.where(inside, q, torch.floor(x0).clamp(0, levels) / levels)).sum().item()

    h = 1e-6
    fd = (linearised(lam0 + h) - linearised(lam0 - h)) / (2 * h)
    assert grad == pytest.approx(fd, rel=1e-6)

    def true_outside(lam):
        with torch.no_grad():
            act.lam.fill_(lam)
            return (act(z) * weights)[~inside].sum().item()

    fd_out = (true_outside(lam0 + h) - true_outside(lam0 - h)) / (2 * h)
    act.lam.grad = None
    act.lam.data.fill_(lam0)
    (act(z) * weights)[~inside].sum().backward()
    assert act.lam.grad.item() == pytest.approx(fd_out, rel=1e-6)
    # closed form from the spec: (h - z) / lam inside the window, 1 above it, 0 below
    with torch.no_grad():
        hz = act(z)
        closed = torch.where(inside, (hz - z) / lam0, (z > lam0).double())
    assert grad == pytest.approx((closed * weights).sum().item(), rel=1e-9)


def test_lambda_guarded_positive():
    act = QCFS(4, 1.0)
    with torch.no_grad():
        act.lam.fill_(-0.5)
    z = torch.tensor([0.5, 10.0], requires_grad=True)
    out = act(z)
    assert torch.isfinite(out).all() and (out >= 0).all()
    assert act.threshold == pytest.approx(act.eps)
    assert out[1].item() == pytest.approx(act.eps)
    out.sum().backward()
    assert act.lam.grad.item() > 0  # still receives gradient: it can recover
    with pytest.raises(ValueError):
        QCFS(4, 0.0)


def test_zoo_activation_registered():
    net = models.create("cifar_cnn", 10, neuron="qcfs", neuron_kwargs={"levels": 8, "threshold": 4.0}, width=4)
    acts = [m for m in net.modules() if isinstance(m, QCFS)]
    assert len(acts) == 7 and all(a.levels == 8 and a.threshold == 4.0 for a in acts)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in models.create("vgg11", 10, neuron="qcfs").modules())
    with pytest.raises(ValueError, match="max"):
        models.create("vgg11", 10, neuron="qcfs", pool="max")
    default = models.create("digits_cnn", 10, neuron="qcfs")
    assert all(a.levels == 4 and a.threshold == 8.0 for a in default.modules() if isinstance(a, QCFS))
