"""Surrogate-gradient shapes.

A surrogate is a *shape* plus one width-like parameter ``w`` (a width, a
temperature or a sharpness, depending on the shape). The forward pass of a
spiking neuron is always the Heaviside step of ``x = v - v_th``; the backward
pass replaces the step's derivative with the derivative of a smooth
*primitive* ``F(x; w)`` that rises from 0 to 1 around the threshold.

Each shape is defined once, as three plain functions that every kernel uses:

- ``primitive(x, w)``: the smooth stand-in for ``H(x)`` (torch tensors; the
  reference kernel's smooth mode runs it forward, for finite-difference checks);
- ``derivative(x, w, ops=TORCH)``: ``dF/dx``, the surrogate gradient itself;
- ``width_derivative(x, w, ops=TORCH)``: ``dF/dw``, used when ``w`` is learnable.

The two derivatives are written against a small math namespace ``ops``
(``abs``, ``maximum0``, ``mask``, ``tanh``, ``exp``, ``sigmoid`` and the
arithmetic operators): with :data:`TORCH` they compute on tensors (fused torch
kernel), with :class:`spikeforge.core.kernels.codegen.CExpr` or ``TritonExpr`` symbols
they emit the expression compiled into the CPU kernel or the Triton kernels.

A learnable width therefore receives the gradient it would have if the
primitive were the forward function at the operating point the spiking
forward reached (the same straight-through convention used for ``x``).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import Tensor, nn

__all__ = [
    "TORCH",
    "Surrogate",
    "Rectangle",
    "Triangle",
    "Sigmoid",
    "ATan",
    "Erf",
    "DSpike",
    "SuperSpike",
    "heaviside",
    "SpikeFunction",
    "spike",
    "build_surrogate",
]


#: The math namespace of the shapes' derivatives, on torch tensors.
TORCH = SimpleNamespace(
    abs=torch.abs,
    maximum0=lambda x: torch.clamp(x, min=0.0),
    mask=lambda condition, like: condition.to(like.dtype),
    tanh=torch.tanh,
    exp=torch.exp,
    sigmoid=torch.sigmoid,
)


def heaviside(x: Tensor, strict: bool = False) -> Tensor:
    """Step function in the dtype of ``x``: ``x > 0`` if strict, else ``x >= 0``; NaN where ``x`` is NaN."""
    steps = (x > 0 if strict else x >= 0).to(x.dtype)
    return steps.masked_fill_(x.isnan(), float("nan")) if x.is_floating_point() else steps


class Surrogate(nn.Module):
    """Base class: holds the width ``w`` as a buffer (fixed) or a parameter (learnable).

    Subclasses name their parameter (``param_name``) and define the three
    static functions of the shape. ``w`` can be changed from outside between
    calls with ``surrogate.set_width(value)`` (DGS does this).
    """

    param_name = "width"

    def __init__(self, value: float, learnable: bool = False):
        super().__init__()
        value = float(value)
        if not value > 0:
            raise ValueError(f"{type(self).__name__}: {self.param_name} must be > 0, got {value}")
        tensor = torch.tensor(value, dtype=torch.get_default_dtype())
        if learnable:
            self.width = nn.Parameter(tensor)
        else:
            self.register_buffer("width", tensor)

    @property
    def learnable(self) -> bool:
        return isinstance(self.width, nn.Parameter)

    def set_width(self, value: float) -> None:
        """Set ``w`` in place (keeps parameter identity, so optimisers stay valid)."""
        with torch.no_grad():
            self.width.fill_(float(value))

    def forward(self, x: Tensor, strict: bool = False) -> Tensor:
        """Spike ``H(x)`` with this surrogate's gradient, for ``x = v - v_th``."""
        return spike(x, self, strict)

    def extra_repr(self) -> str:
        return f"{self.param_name}={float(self.width.detach()):g}" + (", learnable=True" if self.learnable else "")

    # The shape: overridden by every subclass.
    @staticmethod
    def primitive(x: Tensor, w: Tensor) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def derivative(x, w, ops=TORCH):
        raise NotImplementedError

    @staticmethod
    def width_derivative(x, w, ops=TORCH):
        raise NotImplementedError


class SpikeFunction(torch.autograd.Function):
    """``H(x)`` forward (:func:`heaviside`); backward, the shape's derivative formulas
    ``dF/dx`` and ``dF/dw`` evaluated at ``x``, exactly as written (also at the kinks)."""

    @staticmethod
    def forward(ctx, x: Tensor, w, shape: type[Surrogate], strict: bool) -> Tensor:
        """``x``: any shape; ``w``: a float or a tensor broadcastable to ``x``."""
        tensor_w = isinstance(w, Tensor)
        ctx.shape, ctx.w = shape, None if tensor_w else w
        ctx.save_for_backward(x, w if tensor_w else None)
        return heaviside(x, strict)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, w = ctx.saved_tensors
        w = ctx.w if w is None else w
        grad_x = grad * ctx.shape.derivative(x, w) if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (grad * ctx.shape.width_derivative(x, w)).sum_to_size(w.shape)
        return grad_x, grad_w, None, None


def spike(x: Tensor, surrogate: Surrogate, strict: bool = False) -> Tensor:
    """``H(x)`` in the forward pass, the surrogate's ``derivative`` (and ``width_derivative``) backward."""
    return SpikeFunction.apply(x, surrogate.width, type(surrogate), strict)


class Rectangle(Surrogate):
    """Box of height ``1/width`` on ``|x| < width/2`` (LSG's rectangular surrogate)."""

    param_name = "width"

    def __init__(self, width: float = 1.0, learnable: bool = False):
        super().__init__(width, learnable)

    @staticmethod
    def primitive(x, w):
        return torch.clamp(x / w + 0.5, 0.0, 1.0)

    @staticmethod
    def derivative(x, w, ops=TORCH):
        return ops.mask(ops.abs(x) < w / 2, x) / w

    @staticmethod
    def width_derivative(x, w, ops=TORCH):
        return ops.mask(ops.abs(x) < w / 2, x) * (-x / (w * w))


class Triangle(Surrogate):
    """``max(0, gamma - |x|) / gamma^2``: TET's triangle ("ZIF") surrogate."""

    param_name = "gamma"

    def __init__(self, gamma: float = 1.0, learnable: bool = False):
        super().__init__(gamma, learnable)

    @staticmethod
    def primitive(x, w):
        a = torch.clamp(x, -w, w)
        half = (w - a.abs()) ** 2 / (2 * w * w)
        return torch.where(a < 0, half, 1.0 - half)

    @staticmethod
    def derivative(x, w, ops=TORCH):
        return ops.maximum0(w - ops.abs(x)) / (w * w)

    @staticmethod
    def width_derivative(x, w, ops=TORCH):
        return -x * ops.maximum0(w - ops.abs(x)) / (w * w * w)


class Sigmoid(Surrogate):
    """Derivative of ``sigmoid(alpha x)`` (SpikingJelly's meaning of alpha)."""

    param_name = "alpha"

    def __init__(self, alpha: float = 4.0, learnable: bool = False):
        super().__init__(alpha, learnable)

    @staticmethod
    def primitive(x, w):
        return torch.sigmoid(w * x)

    @staticmethod
    def derivative(x, w, ops=TORCH):
        s = ops.sigmoid(w * x)
        return w * s * (1 - s)

    @staticmethod
    def width_derivative(x, w, ops=TORCH):
        s = ops.sigmoid(w * x)
        return x * s * (1 - s)


class ATan(Surrogate):
    """``(alpha/2) / (1 + (pi/2 alpha x)^2)`` (SpikingJelly's meaning of alpha)."""

    param_name = "alpha"

    def __init__(self, alpha: float = 2.0, learnable: bool = False):
        super().__init__(alpha, learnable)

    @staticmethod
    def primitive(x, w):
        return torch.atan(math.pi / 2 * w * x) / math.pi + 0.5

    @staticmethod
    def derivative(x, w, ops=TORCH):
        a = math.pi / 2 * w * x
        return (w / 2) / (1 + a * a)

    @staticmethod
    def width_derivative(x, w, ops=TORCH):
        a = math.pi / 2 * w * x
        return (x / 2) / (1 + a * a)


class Erf(Surrogate):
    """Gaussian ``alpha/sqrt(pi) exp(-(alpha x)^2)``, primitive ``erfc(-alpha x)/2``."""

    param_name = "alpha"

    def __init__(self, alpha: float = 2.0, learnable: bool = False):
        super().__init__(alpha, learnable)

    @staticmethod
    def primitive(x, w):
        return torch.erfc(-w * x) / 2

    @staticmethod
    def derivative(x, w, ops=TORCH):
        a = w * x
        return w / math.sqrt(math.pi) * ops.exp(-(a * a))

    @staticmethod
    def width_derivative(x, w, ops=TORCH):
        a = w * x
        return x / math.sqrt(math.pi) * ops.exp(-(a * a))


class DSpike(Surrogate):
    """SpikeDHS's Dspike: ``b (1 - tanh^2(b x)) / (2 tanh(b/2))`` on ``|x| < 1/2``.

    The support is fixed to half a unit either side of the threshold (the
    published ``(0, 1)`` window around ``v_th = 0.5``); it integrates to 1 for
    every temperature ``b``. Large ``b`` is peaky, small ``b`` close to a box.
    """

    param_name = "b"

    def __init__(self, b: float = 3.0, learnable: bool = False):
        super().__init__(b, learnable)

    @staticmethod
    def primitive(x, w):
        inner = torch.clamp(x, -0.5, 0.5)
        return torch.tanh(w * inner) / (2 * torch.tanh(w / 2)) + 0.5

    @staticmethod
    def derivative(x, w, ops=TORCH):
        inside = ops.mask(ops.abs(x) < 0.5, x)
        t = ops.tanh(w * x)
        return inside * w * (1 - t * t) / (2 * ops.tanh(w / 2))

    @staticmethod
    def width_derivative(x, w, ops=TORCH):
        inside = ops.mask(ops.abs(x) < 0.5, x)
        t = ops.tanh(w * x)
        th = ops.tanh(w / 2)
        return inside * (x * (1 - t * t) / (2 * th) - t * (1 - th * th) / (4 * th * th))


class SuperSpike(Surrogate):
    """``1 / (alpha |x| + 1)^2`` (Zenke & Ganguli 2018), height 1 at the threshold.

    Primitive ``1/alpha + x / (alpha |x| + 1)``: it rises from 0 to ``2 / alpha``, so
    unlike the other shapes the surrogate integrates to ``2 / alpha``, not 1 (the
    published form; Norse's ``method="super"``, whose 1.1 backward uses alpha = 1
    whatever its ``alpha``).
    """

    param_name = "alpha"

    def __init__(self, alpha: float = 1.0, learnable: bool = False):
        super().__init__(alpha, learnable)

    @staticmethod
    def primitive(x, w):
        return 1 / w + x / (w * x.abs() + 1)

    @staticmethod
    def derivative(x, w, ops=TORCH):
        a = w * ops.abs(x) + 1
        return 1 / (a * a)

    @staticmethod
    def width_derivative(x, w, ops=TORCH):
        a = w * ops.abs(x) + 1
        return -1 / (w * w) - x * ops.abs(x) / (a * a)


SHAPES: dict[str, type[Surrogate]] = {
    cls.__name__.lower(): cls for cls in (Rectangle, Triangle, Sigmoid, ATan, Erf, DSpike, SuperSpike)
}


def build_surrogate(spec) -> Surrogate:
    """A surrogate from an instance, a name (``"triangle"``) or a mapping (``{"name": "dspike", "b": 3}``).

    Mappings are what recipes hold: ``name`` plus the shape's own keyword
    (``width``, ``gamma``, ``alpha`` or ``b``) and optionally ``learnable``.
    """
    if isinstance(spec, Surrogate):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise TypeError(f"surrogate must be a Surrogate, a shape name or a mapping with 'name', got {spec!r}")
    kwargs = dict(spec)
    name = str(kwargs.pop("name")).lower()
    if name not in SHAPES:
        raise ValueError(f"unknown surrogate {name!r}: expected one of {', '.join(SHAPES)}")
    try:
        return SHAPES[name](**kwargs)
    except TypeError as err:
        raise TypeError(f"surrogate {name}: {err}") from None
