"""Roles in a room, ordered by authority."""

from __future__ import annotations

import enum

from .errors import WireError


class Role(enum.IntEnum):
    """A member's role.  A higher value carries more authority.

    ``HOST`` is the moderator of the current term: the room's creator, or the
    successor that took over.  ``MODERATOR`` is a co-moderator.
    """

    LISTENER = 0
    SPEAKER = 1
    MODERATOR = 2
    HOST = 3

    @classmethod
    def from_wire(cls, value: int) -> Role:
        try:
            return cls(value)
        except ValueError:
            raise WireError(f"unknown role code {value}") from None

    @classmethod
    def parse(cls, text: str) -> Role:
        """Parse a role name typed by a person (``listener``, ``speaker``, ``moderator``)."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(r.name.lower() for r in cls)
            raise ValueError(f"unknown role {text!r}; expected one of {names}") from None

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def holds_floor(self) -> bool:
        """Whether this role may send audio."""
        return self >= Role.SPEAKER

    @property
    def moderates(self) -> bool:
        return self >= Role.MODERATOR
