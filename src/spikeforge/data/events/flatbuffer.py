"""Just enough of the FlatBuffers wire format to read AEDAT 4 headers and packets.

A table starts with an ``int32`` offset back to its vtable; the vtable is
``uint16`` vtable size, ``uint16`` table size, then one ``uint16`` offset per
field (0 = field absent, use the schema default). Tables, vectors and strings
are referenced by ``uint32`` offsets relative to where the offset is stored; a
vector or string starts with its ``uint32`` length. Every read is bounds
checked and raises :class:`FlatBufferError` with the position inside the buffer.
"""

from __future__ import annotations

import struct

__all__ = ["FlatBufferError", "FlatTable"]


class FlatBufferError(ValueError):
    """A flatbuffer read out of bounds or a malformed structure; ``position`` is inside the buffer."""

    def __init__(self, position: int, problem: str) -> None:
        super().__init__(problem)
        self.position = position


def _unpack(fmt: str, buf: bytes, pos: int):
    size = struct.calcsize(fmt)
    if pos < 0 or pos + size > len(buf):
        raise FlatBufferError(pos, f"reference to byte {pos} outside the {len(buf)}-byte flatbuffer")
    return struct.unpack_from(fmt, buf, pos)[0]


class FlatTable:
    """One table of a flatbuffer ``buf`` at byte ``pos``; fields are read by their schema index."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        vtable = pos - _unpack("<i", buf, pos)
        vtable_size = _unpack("<H", buf, vtable)
        if vtable_size < 4 or vtable_size % 2:
            raise FlatBufferError(vtable, f"malformed vtable of {vtable_size} bytes")
        self._slots = [_unpack("<H", buf, vtable + 4 + 2 * i) for i in range((vtable_size - 4) // 2)]

    @classmethod
    def root(cls, buf: bytes, identifier: bytes) -> FlatTable:
        """The root table of ``buf``, after checking its 4-byte file identifier."""
        found = buf[4:8]
        if found != identifier:
            raise FlatBufferError(4, f"flatbuffer identifier {found!r}, expected {identifier!r}")
        return cls(buf, _unpack("<I", buf, 0))

    def _field(self, index: int) -> int | None:
        offset = self._slots[index] if index < len(self._slots) else 0
        return self.pos + offset if offset else None

    def _target(self, index: int) -> int | None:
        field = self._field(index)
        return None if field is None else field + _unpack("<I", self.buf, field)

    def scalar(self, index: int, fmt: str, default):
        """A scalar field in ``struct`` format ``fmt`` (e.g. ``"<q"``), or ``default`` if absent."""
        field = self._field(index)
        return default if field is None else _unpack(fmt, self.buf, field)

    def vector(self, index: int) -> tuple[int, int]:
        """(byte position of the first element, element count) of a vector field; (0, 0) if absent."""
        start = self._target(index)
        return (0, 0) if start is None else (start + 4, _unpack("<I", self.buf, start))

    def string(self, index: int) -> str:
        """A string field ('' if absent)."""
        start, length = self.vector(index)
        if start + length > len(self.buf):
            raise FlatBufferError(start, f"string of {length} bytes runs past the end of the flatbuffer")
        return self.buf[start : start + length].decode("utf-8", errors="replace")
