"""Surrogate shapes: formulas, derivatives against finite differences, unit integral."""

import math

import pytest
import torch

from spikeforge import surrogate as sg

SHAPES = [sg.Rectangle, sg.Triangle, sg.Sigmoid, sg.ATan, sg.Erf, sg.DSpike, sg.SuperSpike]
WIDTHS = [0.5, 1.0, 2.5]


def grid(lo=-4.0, hi=4.0, n=80001):
    return torch.linspace(lo, hi, n, dtype=torch.float64)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("w", WIDTHS)
def test_derivative_is_finite_difference_of_primitive(shape, w):
    # Central differences of F, away from the kinks of the piecewise shapes.
    x = torch.linspace(-3, 3, 601, dtype=torch.float64) + 1e-3
    wt = torch.tensor(w, dtype=torch.float64)
    eps = 1e-6
    fd = (shape.primitive(x + eps, wt) - shape.primitive(x - eps, wt)) / (2 * eps)
    kink = torch.zeros_like(x, dtype=torch.bool)
    for edge in {sg.Rectangle: (w / 2,), sg.Triangle: (0.0, w), sg.DSpike: (0.5,)}.get(shape, ()):
        kink |= (x.abs() - edge).abs() < 10 * eps
    torch.testing.assert_close(shape.derivative(x, wt)[~kink], fd[~kink], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("w", WIDTHS)
def test_width_derivative_is_finite_difference_in_width(shape, w):
    x = torch.linspace(-3, 3, 601, dtype=torch.float64) + 1e-3
    eps = 1e-6
    wp = torch.tensor(w + eps, dtype=torch.float64)
    wm = torch.tensor(w - eps, dtype=torch.float64)
    fd = (shape.primitive(x, wp) - shape.primitive(x, wm)) / (2 * eps)
    edge = {sg.Rectangle: w / 2, sg.Triangle: w}.get(shape)
    keep = torch.ones_like(x, dtype=torch.bool) if edge is None else (x.abs() - edge).abs() > 1e-4
    got = shape.width_derivative(x, torch.tensor(w, dtype=torch.float64))
    torch.testing.assert_close(got[keep], fd[keep], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("w", WIDTHS)
def test_primitive_rises_from_zero_to_one_and_derivative_integrates_to_one(shape, w):
    wt = torch.tensor(w, dtype=torch.float64)
    x = grid(-20, 20, 2_000_001)
    # Fundamental theorem on [-20, 20] (trapezoid error from the box edges ~ step size) ...
    integral = torch.trapezoid(shape.derivative(x, wt), x).item()
    assert integral == pytest.approx((shape.primitive(x[-1], wt) - shape.primitive(x[0], wt)).item(), abs=1e-4)
    # ... and F goes from 0 to 1, so the surrogate integrates to 1 over the real line
    # (SuperSpike, height 1 as published, rises to 2 / alpha).
    far = torch.tensor(1e9, dtype=torch.float64)
    top = 2 / w if shape is sg.SuperSpike else 1.0
    assert shape.primitive(-far, wt).item() == pytest.approx(0.0, abs=1e-8)
    assert shape.primitive(far, wt).item() == pytest.approx(top, abs=1e-8)


def test_formulas_at_known_points():
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    # Rectangle: height 1/width inside |x| < width/2.
    assert sg.Rectangle.derivative(t(0.49), t(1.0)).item() == 1.0
    assert sg.Rectangle.derivative(t(0.51), t(1.0)).item() == 0.0
    assert sg.Rectangle.derivative(t(0.0), t(2.5)).item() == pytest.approx(0.4)
    # Triangle (TET): (gamma - |x|)/gamma^2.
    assert sg.Triangle.derivative(t(0.25), t(0.5)).item() == pytest.approx(1.0)
    assert sg.Triangle.derivative(t(0.0), t(0.5)).item() == pytest.approx(2.0)
    # Sigmoid: alpha * s(1-s), alpha/4 at threshold.
    assert sg.Sigmoid.derivative(t(0.0), t(4.0)).item() == pytest.approx(1.0)
    # ATan: (alpha/2)/(1 + (pi/2 alpha x)^2).
    assert sg.ATan.derivative(t(0.0), t(2.0)).item() == pytest.approx(1.0)
    assert sg.ATan.derivative(t(1 / math.pi), t(2.0)).item() == pytest.approx(0.5)
    # DSpike: peak b/(2 tanh(b/2)), zero outside (v_th - 0.5, v_th + 0.5).
    b = 3.0
    assert sg.DSpike.derivative(t(0.0), t(b)).item() == pytest.approx(b / (2 * math.tanh(b / 2)))
    assert sg.DSpike.derivative(t(0.5001), t(b)).item() == 0.0
    assert sg.DSpike.derivative(t(-0.5001), t(b)).item() == 0.0
    # SuperSpike: 1 / (alpha |x| + 1)^2, height 1 at threshold.
    assert sg.SuperSpike.derivative(t(0.0), t(100.0)).item() == 1.0
    assert sg.SuperSpike.derivative(t(-1.0), t(1.0)).item() == pytest.approx(0.25)


def test_heaviside_strictness_and_non_finite_values():
    x = torch.tensor([-1.0, 0.0, 1.0, -math.inf, math.inf, math.nan])
    torch.testing.assert_close(sg.heaviside(x, strict=True), torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0, math.nan]),
                               equal_nan=True)
    torch.testing.assert_close(sg.heaviside(x, strict=False), torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, math.nan]),
                               equal_nan=True)


def test_spike_function_forward_is_step_and_backward_is_derivative():
    x = torch.linspace(-2, 2, 41, dtype=torch.float64, requires_grad=True)
    s = sg.Triangle(1.0)
    out = s(x)
    assert torch.equal(out.detach(), (x >= 0).double())
    out.sum().backward()
    torch.testing.assert_close(x.grad, sg.Triangle.derivative(x.detach(), torch.tensor(1.0, dtype=torch.float64)))


def test_width_fixed_learnable_and_settable():
    fixed = sg.Rectangle(1.0)
    assert not fixed.learnable and len(list(fixed.parameters())) == 0
    learn = sg.DSpike(3.0, learnable=True)
    assert learn.learnable and learn.width.requires_grad
    param = learn.width
    learn.set_width(5.0)
    assert learn.width is param and learn.width.item() == 5.0
    fixed.set_width(2.0)
    assert fixed.width.item() == 2.0
    assert "b=5" in repr(learn)


def test_invalid_width_is_rejected():
    with pytest.raises(ValueError, match="gamma must be > 0"):
        sg.Triangle(0.0)
