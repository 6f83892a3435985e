"""Spikes saved for backward as bits: a ``saved_tensors_hooks`` packer that touches no model code.

A spiking network's activations are 0/1 spikes, yet the layer after each neuron (a convolution, a
linear layer) saves them in float32 for its weight gradient, and a neuron kernel may keep them too.
Inside :class:`pack_spikes`, every tensor autograd saves that holds spikes is stored as two bit
planes instead (1/16 of float32, 1/8 of bfloat16) and decoded when the backward needs it, with
exactly the values that were saved, so the gradients are bit-identical to the unpacked path.

Which tensors hold spikes is never decided from their values: a tensor is packed only if it is

- the spikes of a neuron kernel as the kernel saves them (output 0 of
  :class:`~spikeforge.core.kernels.fused.Multistep`), or
- a tensor marked with :func:`mark_spikes` (:class:`~spikeforge.core.neuron.SpikingNeuron` marks what it
  returns when ``output_scale == 1``) and not modified in place since,

or a view of either with its dtype (a convolution sees ``[T*B, C, H, W]`` views of a neuron's
``[T, B, C, H, W]`` output). Every other saved tensor is kept as it is. Spikes are 0, 1 or NaN (a NaN
membrane emits a NaN spike, see :mod:`spikeforge.core.neuron`): the planes hold ``value != 0`` and
``value is NaN``, so all three come back (a NaN as the default NaN, without its payload bits).

A spike tensor is packed once, however often it is saved (the kernel and the next layer save the
same one): the planes are kept on the tensor beside its version counter. Decoding returns the saved
view's own sizes and strides over a decoded copy of the whole tensor.

Use it around the forward of a training step; the backward may run inside or outside (each saved
tensor keeps its decoder)::

    with pack_spikes():
        loss = criterion(model(x), y)
    loss.backward()

or let :class:`pack_spikes_in` enter it for every forward of one module (what
:class:`~spikeforge.runtime.fit.FitLoop` does when the recipe sets ``memory.pack_spikes: true``).
That keeps it out of everything around the module, and it matters in distributed training: the
hooks are Python objects, and torch hands the autograd state of the launching thread (these hooks
included) to the worker thread of every collective; a collective that times out finishes on its
worker at interpreter exit, cannot release the hooks without the interpreter, and aborts the
process ("terminate called without an active exception"). DDP's gradient all-reduce (in backward)
and buffer broadcast (before the wrapped module's forward) run outside the module's forward; a
``SyncBatchNorm`` inside it still launches its collectives with the hooks active.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import torch
from torch import Tensor

from .kernels import bits as codec
from .kernels.fused import Multistep

__all__ = ["pack_spikes", "pack_spikes_in", "mark_spikes", "holds_spikes"]

#: Attribute of a tensor marked by :func:`mark_spikes`: its version counter when it was marked.
_MARK = "_spikeforge_spikes"
#: Attribute of a packed spike tensor: ``(version counter when packed, _Planes)``.
_PACKED = "_spikeforge_packed"
#: Index of the most significant byte of an element (sign and top exponent bits) in its bytes.
_TOP = -1 if sys.byteorder == "little" else 0
#: In that byte, of every floating dtype: 0 has neither bit, 1 has bit 5 and not 6, NaN has both
#: (float32, bfloat16, float64: 0x00, 0x3f, 0x7f or 0xff; float16: 0x00, 0x3c, 0x7e or 0xfe).
_NONZERO_BIT, _NAN_BIT = 5, 6


class _Planes(NamedTuple):
    """A whole tensor (its storage, in storage order) as bits: ``bits[2, m]`` uint8 with ``m = ceil(n / 8)``,
    plane 0 ``value != 0`` and plane 1 ``value is NaN``, element ``i`` at bit ``i // m`` of byte ``i % m``
    (eight runs of ``m`` elements, one per bit: both ways are then whole-tensor operations)."""

    bits: Tensor
    numel: int
    dtype: torch.dtype


class _Saved(NamedTuple):
    """A saved view of a packed tensor: the planes, and the view's sizes, strides and storage offset."""

    planes: _Planes
    size: torch.Size
    stride: tuple[int, ...]
    offset: int


def _root(t: Tensor) -> Tensor:
    """The tensor ``t`` is a view of (``t`` itself when it is not a view): it owns the memory."""
    return t if t._base is None else t._base


def _covers_root(t: Tensor) -> bool:
    """Whether ``t`` holds every element of its root's memory: its dtype, as many elements as the root,
    which fills its storage, and no two elements of ``t`` at one place."""
    root = _root(t)
    if t.dtype != root.dtype or t.numel() != root.numel() or root.storage_offset() != 0:
        return False
    if root.untyped_storage().nbytes() != root.numel() * root.element_size():
        return False
    expected = 1  # non-overlapping and dense: the strides, sorted, are the running products of the sizes
    for size, stride in sorted(((n, s) for n, s in zip(t.shape, t.stride()) if n != 1), key=lambda d: d[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def mark_spikes(t: Tensor) -> Tensor:
    """Mark ``t`` (any shape) as holding only 0, 1 or NaN, so that :class:`pack_spikes` stores it, or
    any view of its memory in its dtype, as bits when autograd saves it; returns ``t``.

    The mark goes on the memory's owner (``t`` or the tensor it is a view of) with its version
    counter: an in-place change afterwards unmarks it. A ``t`` that is only part of its memory (a
    slice of a larger tensor) is not marked.
    """
    if _covers_root(t):
        root = _root(t)
        setattr(root, _MARK, root._version)
    return t


def _spikes_of(t: Tensor) -> Tensor | None:
    """The root of ``t`` when ``t`` holds spikes (see the module doc for what counts), else None."""
    root = _root(t)
    if t.dtype != root.dtype or root.numel() == 0:
        return None
    if getattr(root, _MARK, None) == root._version:
        return root
    node = t.grad_fn  # the kernel saving its own spikes, before the neuron could mark them
    if node is not None and getattr(node, "_forward_cls", None) is Multistep and t.output_nr == 0 and _covers_root(t):
        return root
    return None


def holds_spikes(t: Tensor) -> bool:
    """Whether :class:`pack_spikes` stores ``t`` as bits when autograd saves it."""
    return _spikes_of(t) is not None


def _encode(root: Tensor) -> _Planes:
    """The planes of ``root``'s storage, all spikes (see :func:`_covers_root`): in one compiled pass on the
    CPU (:mod:`.kernels.bits`), else with torch operations (scratch memory: two bytes per element, the
    top bytes, then one plane's bits at a time)."""
    n, size = root.numel(), root.element_size()
    if root.device.type == "cpu" and codec.load_codec() is not None:
        storage = root.as_strided((n,), (1,)).view(torch.uint8)
        return _Planes(codec.encode(storage, n, size, size - 1 if _TOP == -1 else 0), n, root.dtype)
    return _encode_with_torch(root)


def _encode_with_torch(root: Tensor) -> _Planes:
    """:func:`_encode` with torch operations (any device)."""
    n, size = root.numel(), root.element_size()
    m = -(-n // 8)
    top = torch.empty(8, m, dtype=torch.uint8, device=root.device)  # eight whole runs (a zero tail)
    top.view(-1)[n:] = 0
    top.view(-1)[:n] = root.as_strided((n,), (1,)).view(torch.uint8).view(n, size)[:, _TOP]  # storage order
    runs = _bit_of_run(root.device)
    bits = torch.empty(2, m, dtype=torch.uint8, device=root.device)
    for plane, flag in enumerate((_NONZERO_BIT, _NAN_BIT)):
        flags = (top >> flag).bitwise_and_(1).bitwise_left_shift_(runs)  # [8, m], distinct bits: the sum is their or
        torch.sum(flags, 0, dtype=torch.uint8, out=bits[plane])
    return _Planes(bits, n, root.dtype)


def _decode(planes: _Planes) -> Tensor:
    """The tensor ``planes`` encode, flat (``[numel]``, their dtype): compiled on the CPU, else with torch
    operations, where whether there are NaN spikes is read on the host (one synchronisation per decoded
    tensor on CUDA)."""
    if planes.bits.device.type == "cpu" and codec.load_codec() is not None:
        return codec.decode(planes.bits, planes.numel, planes.dtype)
    return _decode_with_torch(planes)


def _decode_with_torch(planes: _Planes) -> Tensor:
    """:func:`_decode` with torch operations (any device)."""
    runs = _bit_of_run(planes.bits.device)

    def plane(i: int) -> Tensor:  # [numel] uint8, 0 or 1
        return (planes.bits[i] >> runs).bitwise_and_(1).view(-1)[: planes.numel]

    values = plane(0).to(planes.dtype)
    if planes.bits[1].any():  # NaN spikes (a diverging network): one more pass
        values.masked_fill_(plane(1).view(torch.bool), float("nan"))
    return values


def _bit_of_run(device) -> Tensor:
    """``[8, 1]`` uint8: the bit of each run of elements."""
    return torch.arange(8, dtype=torch.uint8, device=device).view(8, 1)


def _pack(t: Tensor):
    root = _spikes_of(t)
    if root is None:
        return t
    version, planes = getattr(root, _PACKED, (None, None))
    if version != root._version:
        planes = _encode(root)
        setattr(root, _PACKED, (root._version, planes))
    return _Saved(planes, t.size(), t.stride(), t.storage_offset())


def _unpack(saved):
    if isinstance(saved, Tensor):
        return saved
    return _decode(saved.planes).as_strided(saved.size, saved.stride, saved.offset)


class pack_spikes(torch.autograd.graph.saved_tensors_hooks):
    """Context manager: inside, autograd saves spike tensors as bits (see the module doc); nests and
    composes with other hooks as ``torch.autograd.graph.saved_tensors_hooks`` does (the innermost wins)."""

    def __init__(self):
        super().__init__(_pack, _unpack)


class pack_spikes_in:
    """Context manager: while it is open, every forward of ``module`` runs inside :class:`pack_spikes`
    (entered by a forward pre-hook, left by a forward hook that runs even when the forward raises);
    nothing outside that forward does (see the module doc for why this matters under DDP). For one
    thread's forwards at a time."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self._open: list[pack_spikes] = []  # one per forward in progress (a module may run inside itself)
        self._handles = []

    def _enter(self, module, args) -> None:
        context = pack_spikes()
        context.__enter__()
        self._open.append(context)

    def _leave(self, module, args, output) -> None:
        self._open.pop().__exit__(None, None, None)

    def __enter__(self) -> "pack_spikes_in":
        # the pre-hook runs first, so that a pre-hook that raises after it still finds it open (the forward
        # hook runs in any case)
        self._handles = [self.module.register_forward_pre_hook(self._enter, prepend=True),
                         self.module.register_forward_hook(self._leave, always_call=True)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
