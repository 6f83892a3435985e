"""Symbolic evaluation of surrogate shapes into C and Triton expressions.

A surrogate's ``derivative(x, w, ops)`` is plain arithmetic on ``x`` and ``w``
plus a few functions from ``ops``. Calling it with symbols of a target language
(:class:`CExpr`, :class:`TritonExpr`) and that target's namespace (:data:`C_OPS`,
:data:`TRITON_OPS`) returns the source of the same expression, so the compiled
kernels use the shape's one Python definition.
"""

from __future__ import annotations

from types import SimpleNamespace

__all__ = ["Expr", "CExpr", "TritonExpr", "C_OPS", "TRITON_OPS", "c_expression", "triton_expression"]


class Expr:
    """An expression of a target language, built by arithmetic; subclasses spell the numbers."""

    language = ""

    def __init__(self, code: str):
        self.code = code

    @staticmethod
    def number(value: float) -> str:
        raise NotImplementedError

    @classmethod
    def of(cls, value) -> "Expr":
        """``value`` as an expression of this language (a symbol, or an int or float literal)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(cls.number(float(value)))
        raise TypeError(f"cannot use {type(value).__name__} in a {cls.language} expression")

    def _bin(self, op: str, other, reverse: bool = False) -> "Expr":
        a, b = (self.of(other), self) if reverse else (self, self.of(other))
        return type(self)(f"({a.code} {op} {b.code})")

    def __add__(self, o):
        return self._bin("+", o)

    def __radd__(self, o):
        return self._bin("+", o, True)

    def __sub__(self, o):
        return self._bin("-", o)

    def __rsub__(self, o):
        return self._bin("-", o, True)

    def __mul__(self, o):
        return self._bin("*", o)

    def __rmul__(self, o):
        return self._bin("*", o, True)

    def __truediv__(self, o):
        return self._bin("/", o)

    def __rtruediv__(self, o):
        return self._bin("/", o, True)

    def __neg__(self):
        return type(self)(f"(-{self.code})")

    def __lt__(self, o):
        return Cond(f"({self.code} < {self.of(o).code})")

    def __gt__(self, o):
        return Cond(f"({self.code} > {self.of(o).code})")


class Cond:
    """A boolean expression (only usable through ``ops.mask``)."""

    def __init__(self, code: str):
        self.code = code


class CExpr(Expr):
    """A C expression of type ``real`` (``float`` or ``double``)."""

    language = "C"

    @staticmethod
    def number(value: float) -> str:
        return f"((real){value!r})"


class TritonExpr(Expr):
    """A Triton expression on blocks of the kernel's dtype (Python literals take that dtype)."""

    language = "Triton"

    @staticmethod
    def number(value: float) -> str:
        return repr(value)


def _call(cls: type[Expr], name: str):
    return lambda x: cls(f"{name}({cls.of(x).code})")


#: The shapes' math namespace in C (``<tgmath.h>`` picks float or double versions).
C_OPS = SimpleNamespace(
    abs=_call(CExpr, "fabs"),
    maximum0=lambda x: CExpr(f"fmax({CExpr.of(x).code}, (real)0)"),
    mask=lambda cond, like: CExpr(f"({cond.code} ? (real)1 : (real)0)"),
    tanh=_call(CExpr, "tanh"),
    exp=_call(CExpr, "exp"),
    sigmoid=lambda x: CExpr(f"((real)1 / ((real)1 + exp(-{CExpr.of(x).code})))"),
)

#: The shapes' math namespace in Triton (``triton.language as tl``; ``_tanh`` is defined by the
#: generated module, as Triton has no tanh outside libdevice, which its interpreter lacks).
TRITON_OPS = SimpleNamespace(
    abs=_call(TritonExpr, "tl.abs"),
    maximum0=lambda x: TritonExpr(f"tl.maximum({TritonExpr.of(x).code}, 0.0)"),
    mask=lambda cond, like: TritonExpr(f"{cond.code}.to({TritonExpr.of(like).code}.dtype)"),
    tanh=_call(TritonExpr, "_tanh"),
    exp=_call(TritonExpr, "tl.exp"),
    sigmoid=lambda x: TritonExpr(f"(1.0 / (1.0 + tl.exp(-{TritonExpr.of(x).code})))"),
)


def c_expression(function, x: str = "x", w: str = "w") -> str:
    """C source of ``function(x, w, ops)`` for the named C variables."""
    return function(CExpr(x), CExpr(w), C_OPS).code


def triton_expression(function, x: str = "x", w: str = "w") -> str:
    """Triton source of ``function(x, w, ops)`` for the named variables."""
    return function(TritonExpr(x), TritonExpr(w), TRITON_OPS).code
