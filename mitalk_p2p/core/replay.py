"""A sliding replay window over frame counters, after IPsec (RFC 4303, section 3.4.3)."""

from __future__ import annotations

import enum

import attrs

DEFAULT_WINDOW = 2048
"""Frames remembered behind the newest one (about 41 s of 20 ms frames)."""


class Freshness(enum.Enum):
    FRESH = "fresh"
    DUPLICATE = "duplicate"
    TOO_OLD = "too-old"


@attrs.define
class ReplayWindow:
    """Which counters near the newest one have been accepted.

    Bit *i* of ``_seen`` stands for counter ``highest - i``.  Checking and
    marking are separate so a frame is marked only after it proved authentic.
    """

    size: int = DEFAULT_WINDOW
    highest: int = -1
    _seen: int = 0

    def check(self, counter: int) -> Freshness:
        if counter > self.highest:
            return Freshness.FRESH
        offset = self.highest - counter
        if offset >= self.size:
            return Freshness.TOO_OLD
        return Freshness.DUPLICATE if (self._seen >> offset) & 1 else Freshness.FRESH

    def mark(self, counter: int) -> None:
        if counter > self.highest:
            shift = counter - self.highest
            self._seen = (
                ((self._seen << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            )
            self.highest = counter
        else:
            self._seen |= 1 << (self.highest - counter)
