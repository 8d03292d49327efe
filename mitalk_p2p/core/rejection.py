"""Why a replica refused an input.  Every refusal is counted in ``statistics()``."""

from __future__ import annotations

import enum

from .errors import RemoteProtocolError


class RejectReason(enum.Enum):
    MALFORMED = "malformed"
    WRONG_ROOM = "wrong_room"
    FORGED = "forged"
    REPLAYED = "replayed"
    STALE_TERM = "stale_term"
    OUT_OF_ORDER = "out_of_order"
    UNAUTHORIZED = "unauthorized"
    INVALID = "invalid"
    NOT_MEMBER = "not_member"


class Rejected(RemoteProtocolError):
    """A well-formed message that the room's rules refuse."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
