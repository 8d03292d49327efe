"""Moderator terms.

A term names one moderator's tenure.  It is a pair ``(epoch, rank)``: the room's
creator starts at ``1.0``; when the host goes, successor *k* claims
``(epoch + 1, k)``.  Because the claimant's rank is part of the term, two
successors that claim in two halves of a split claim *different* terms, so a
term can never have two moderators.  Terms order by epoch first, and within an
epoch the lower (better) rank wins, which is exactly the merge rule after a
partition heals.
"""

from __future__ import annotations

import functools

import attrs

from .errors import WireError
from .wire import Reader, Writer

MAX_RANK = 255


@functools.total_ordering
@attrs.frozen(order=False)
class Term:
    epoch: int
    rank: int = 0

    def __attrs_post_init__(self) -> None:
        if self.epoch < 1 or not 0 <= self.rank <= MAX_RANK:
            raise WireError(f"invalid term {self.epoch}.{self.rank}")

    @classmethod
    def first(cls) -> Term:
        return cls(1, 0)

    def successor(self, rank: int) -> Term:
        """The term that successor ``rank`` claims when this term's host is gone."""
        return Term(self.epoch + 1, rank)

    @property
    def _key(self) -> tuple[int, int]:
        return (self.epoch, -self.rank)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Term):
            return NotImplemented
        return self._key < other._key

    def encode(self, writer: Writer) -> None:
        writer.u32(self.epoch).u8(self.rank)

    @classmethod
    def decode(cls, reader: Reader) -> Term:
        return cls(reader.u32(), reader.u8())

    def __str__(self) -> str:
        return f"{self.epoch}.{self.rank}"
