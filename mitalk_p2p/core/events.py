"""Events a replica reports to its driver, named in the past tense."""

from __future__ import annotations

import attrs

from .identity import PublicKey
from .ops import Op
from .term import Term


@attrs.frozen
class RoomChanged:
    """Log entry ``seq`` applied ``op`` on behalf of ``author``."""

    seq: int
    author: PublicKey
    op: Op


@attrs.frozen
class JoinedRoom:
    term: Term
    host: PublicKey


@attrs.frozen
class JoinRefusedEvent:
    problem: str
    message: str


@attrs.frozen
class LeftRoom:
    """This replica is no longer a member.

    ``reason`` is ``"left"``, ``"kicked"``, or ``"dropped"`` (absent from the
    snapshot of a newer term; a merge may re-admit it).
    """

    reason: str


@attrs.frozen
class TermStarted:
    term: Term
    host: PublicKey


@attrs.frozen
class MembersMerged:
    """After a partition healed, members of the losing branch were re-admitted."""

    from_term: Term
    members: tuple[PublicKey, ...]


Event = RoomChanged | JoinedRoom | JoinRefusedEvent | LeftRoom | TermStarted | MembersMerged
