"""Room identifiers."""

from __future__ import annotations

import attrs

from .errors import WireError

ROOM_ID_SIZE = 16


@attrs.frozen(order=True)
class RoomId:
    """A room's 16-byte random identifier, shown as 32 hex digits."""

    raw: bytes = attrs.field()

    @raw.validator
    def _check_length(self, _attribute: object, value: bytes) -> None:
        if len(value) != ROOM_ID_SIZE:
            raise WireError(f"room id must be {ROOM_ID_SIZE} bytes, got {len(value)}")

    @classmethod
    def from_hex(cls, text: str) -> RoomId:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise WireError(f"room id {text!r} is not hexadecimal") from None
        return cls(raw)

    @property
    def hex(self) -> str:
        return self.raw.hex()

    def __str__(self) -> str:
        return self.hex

    def __repr__(self) -> str:
        return f"RoomId({self.hex[:12]}…)"
