"""Symbolic evaluation of surrogate shapes into C expressions.

A surrogate's ``derivative(x, w, ops)`` is plain arithmetic on ``x`` and ``w``
plus a few functions from ``ops``. Calling it with :class:`CExpr` symbols and
the :data:`C_OPS` namespace returns the C source of the same expression, so the
compiled CPU kernel uses the shape's one Python definition.
"""

from __future__ import annotations

from types import SimpleNamespace

__all__ = ["CExpr", "C_OPS", "c_expression"]


def _lit(value) -> "CExpr":
    if isinstance(value, CExpr):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return CExpr(f"((real){float(value)!r})")
    raise TypeError(f"cannot use {type(value).__name__} in a C expression")


class CExpr:
    """A C expression of type ``real`` (``float`` or ``double``), built by arithmetic."""

    def __init__(self, code: str):
        self.code = code

    def _bin(self, op: str, other, reverse: bool = False) -> "CExpr":
        a, b = (_lit(other), self) if reverse else (self, _lit(other))
        return CExpr(f"({a.code} {op} {b.code})")

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
        return CExpr(f"(-{self.code})")

    def __lt__(self, o):
        return CCond(f"({self.code} < {_lit(o).code})")

    def __gt__(self, o):
        return CCond(f"({self.code} > {_lit(o).code})")


class CCond:
    """A C boolean expression (only usable through ``ops.mask``)."""

    def __init__(self, code: str):
        self.code = code


def _call(name: str):
    return lambda x: CExpr(f"{name}({_lit(x).code})")


#: The shapes' math namespace in C (``<tgmath.h>`` picks float or double versions).
C_OPS = SimpleNamespace(
    abs=_call("fabs"),
    maximum0=lambda x: CExpr(f"fmax({_lit(x).code}, (real)0)"),
    mask=lambda cond, like: CExpr(f"({cond.code} ? (real)1 : (real)0)"),
    tanh=_call("tanh"),
    exp=_call("exp"),
    sigmoid=lambda x: CExpr(f"((real)1 / ((real)1 + exp(-{_lit(x).code})))"),
)


def c_expression(function, x: str = "x", w: str = "w") -> str:
    """C source of ``function(x, w, ops)`` for the named C variables."""
    return function(CExpr(x), CExpr(w), C_OPS).code
