"""Moderator terms.

A term names one moderator's tenure: ``(epoch, list_seq, rank)``.  The room's
creator starts at epoch 1.  When the host goes, successor *k* of the host's
signed successor list, written at log position *s*, claims
``(epoch + 1, s, k)``.

Every claimant holds a different term, so a term can never have two
moderators.  Two successors in the two halves of a split claim different ranks,
or claim from different successor lists (one side may hold a list the other
never received).  Terms order by epoch, then the fresher successor list, then
the better (lower) rank.  That order is the merge rule after a partition heals.
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
    list_seq: int = 0
    """Log position of the successor list this term was claimed from (0 for the first term)."""

    def __attrs_post_init__(self) -> None:
        if self.epoch < 1 or not 0 <= self.rank <= MAX_RANK or self.list_seq < 0:
            raise WireError(f"invalid term {self.epoch}.{self.rank}@{self.list_seq}")

    @classmethod
    def first(cls) -> Term:
        return cls(1, 0, 0)

    def successor(self, rank: int, list_seq: int) -> Term:
        """The term that successor ``rank`` of the list at ``list_seq`` claims after this one."""
        return Term(self.epoch + 1, rank, list_seq)

    @property
    def _key(self) -> tuple[int, int, int]:
        return (self.epoch, self.list_seq, -self.rank)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Term):
            return NotImplemented
        return self._key < other._key

    def encode(self, writer: Writer) -> None:
        writer.u32(self.epoch).u64(self.list_seq).u8(self.rank)

    @classmethod
    def decode(cls, reader: Reader) -> Term:
        epoch, list_seq, rank = reader.u32(), reader.u64(), reader.u8()
        return cls(epoch, rank, list_seq)

    def __str__(self) -> str:
        return f"{self.epoch}.{self.rank}"
