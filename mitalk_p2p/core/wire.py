"""A canonical, length-checked binary encoding.

Every signed structure in the protocol is encoded with :class:`Writer` and read
back with :class:`Reader`.  The encoding is canonical by construction: fields
have a fixed order and a fixed width or an explicit length prefix, integers are
big-endian, and a reader refuses trailing bytes.  So a given value has exactly
one encoding, and signatures can be computed over it.
"""

from __future__ import annotations

import struct
from typing import Any

from .errors import LocalProtocolError, WireError

_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFF_FFFF
_U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Writer:
    """Appends fields to a growing buffer."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        return self._int(">B", value, 0xFF)

    def u16(self, value: int) -> Writer:
        return self._int(">H", value, _U16_MAX)

    def u32(self, value: int) -> Writer:
        return self._int(">I", value, _U32_MAX)

    def u64(self, value: int) -> Writer:
        return self._int(">Q", value, _U64_MAX)

    def boolean(self, value: bool) -> Writer:
        return self.u8(1 if value else 0)

    def fixed(self, value: bytes, length: int) -> Writer:
        if len(value) != length:
            raise LocalProtocolError(f"expected {length} bytes, got {len(value)}")
        self._parts.append(bytes(value))
        return self

    def blob(self, value: bytes) -> Writer:
        """Bytes with a u16 length prefix."""
        if len(value) > _U16_MAX:
            raise LocalProtocolError(f"blob of {len(value)} bytes is too long to encode")
        self.u16(len(value))
        self._parts.append(bytes(value))
        return self

    def blob32(self, value: bytes) -> Writer:
        """Bytes with a u32 length prefix, for large structures such as room snapshots."""
        if len(value) > _U32_MAX:
            raise LocalProtocolError(f"blob of {len(value)} bytes is too long to encode")
        self.u32(len(value))
        self._parts.append(bytes(value))
        return self

    def text(self, value: str) -> Writer:
        """UTF-8 text with a u16 byte-length prefix."""
        return self.blob(value.encode("utf-8"))

    def raw(self, value: bytes) -> Writer:
        """Bytes with no prefix: the last field of a structure, or fields already packed.

        The caller answers for the bytes' canonical layout, as a run of fixed-width
        or length-prefixed fields would be written one by one.
        """
        self._parts.append(bytes(value))
        return self

    def getvalue(self) -> bytes:
        return b"".join(self._parts)

    def _int(self, fmt: str, value: int, maximum: int) -> Writer:
        if not 0 <= value <= maximum:
            raise LocalProtocolError(f"integer {value} out of range 0..{maximum}")
        self._parts.append(struct.pack(fmt, value))
        return self


class Reader:
    """Consumes fields from a byte string, raising :class:`WireError` on any defect.

    ``what`` names the structure being decoded, for error messages.
    """

    __slots__ = ("_data", "_pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = memoryview(bytes(data))
        self._pos = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def u8(self) -> int:
        pos = self._pos
        if pos >= len(self._data):
            self._take(1)  # raises the truncation error
        self._pos = pos + 1
        return self._data[pos]

    def u16(self) -> int:
        return int(self.unpack(_U16)[0])

    def u32(self) -> int:
        return int(self.unpack(_U32)[0])

    def u64(self) -> int:
        return int(self.unpack(_U64)[0])

    def unpack(self, layout: struct.Struct) -> tuple[Any, ...]:
        """Several fixed-width fields at once, through a precompiled struct."""
        pos = self._pos
        end = pos + layout.size
        if end > len(self._data):
            self._take(layout.size)  # raises the truncation error
        self._pos = end
        return layout.unpack_from(self._data, pos)

    def boolean(self) -> bool:
        value = self.u8()
        if value > 1:
            raise WireError(f"{self.what}: boolean byte {value} is neither 0 nor 1")
        return value == 1

    def fixed(self, length: int) -> bytes:
        if length < 0:
            raise LocalProtocolError(f"cannot read a field of negative length {length}")
        pos = self._pos
        end = pos + length
        if end > len(self._data):
            self._take(length)  # raises the truncation error
        self._pos = end
        return self._data[pos:end].tobytes()

    def blob(self, max_length: int = _U16_MAX) -> bytes:
        length = self.u16()
        if length > max_length:
            raise WireError(f"{self.what}: field of {length} bytes exceeds limit {max_length}")
        return bytes(self._take(length))

    def blob32(self, max_length: int) -> bytes:
        length = self.u32()
        if length > max_length:
            raise WireError(f"{self.what}: field of {length} bytes exceeds limit {max_length}")
        return bytes(self._take(length))

    def text(self, max_length: int = _U16_MAX) -> str:
        data = self.blob(max_length)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise WireError(f"{self.what}: text field is not valid UTF-8") from None

    def rest(self) -> bytes:
        data = bytes(self._data[self._pos :])
        self._pos = len(self._data)
        return data

    def finish(self) -> None:
        """Refuse trailing bytes: the encoding is canonical only if fully consumed."""
        if self.remaining:
            raise WireError(f"{self.what}: {self.remaining} unexpected trailing bytes")

    def _take(self, length: int) -> memoryview:
        end = self._pos + length
        if end > len(self._data):
            raise WireError(
                f"{self.what}: truncated (needed {length} more bytes, {self.remaining} left)"
            )
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk
