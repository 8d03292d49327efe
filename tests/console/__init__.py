"""Tests of the console's pure logic, and the rooms they run against.

Rooms are built by applying real operations to a :class:`RoomState`, with
the deterministic identities of ``tests/core/room_fixtures``; no network is
needed to parse a command or draw a table.
"""

from __future__ import annotations

import hashlib

import attrs

from mitalk_p2p.core.identity import PublicKey
from mitalk_p2p.core.ops import Admit, Op
from mitalk_p2p.core.roles import Role
from mitalk_p2p.core.room_state import RoomState

from ..core.room_fixtures import ROOM, person


@attrs.define
class Room:
    """A room state plus the keys of its members by label."""

    state: RoomState
    keys: dict[str, PublicKey]

    @property
    def host(self) -> PublicKey:
        return self.keys["Host"]

    def key(self, label: str) -> PublicKey:
        return self.keys[label]

    def apply(self, author: str | PublicKey, op: Op) -> None:
        """Apply ``op`` as the next log entry, authored by ``author``."""
        key = self.keys[author] if isinstance(author, str) else author
        self.state.apply(key, op, self.state.seq + 1)

    def admit(
        self,
        label: str,
        role: Role = Role.LISTENER,
        name: str | None = None,
        key: PublicKey | None = None,
    ) -> PublicKey:
        """Admit a member; ``name`` (default: ``label``) may repeat another's."""
        key = key or person(f"console:{label}").public_key
        self.keys[label] = key
        self.apply("Host", Admit(key, label if name is None else name, role, bytes(16)))
        return key


def build_room(
    *members: str | tuple[str, Role], room_name: str = "Garden room", host_name: str = "Host"
) -> Room:
    """A room hosted by ``Host`` (shown as ``host_name``) with ``members`` admitted in order."""
    host = person("console:Host").public_key
    room = Room(RoomState.create(ROOM, room_name, "", host, host_name), {"Host": host})
    for member in members:
        label, role = member if isinstance(member, tuple) else (member, Role.LISTENER)
        room.admit(label, role)
    return room


def key_from(seed: str) -> PublicKey:
    """A public key that needs no key pair (selectors only look at its bytes)."""
    return PublicKey(hashlib.blake2b(seed.encode(), digest_size=32).digest())


def is_one_safe_line(text: str) -> bool:
    """True if ``text`` is non-empty and prints as one line that cannot disturb a terminal."""
    return bool(text) and all(char.isprintable() or char in "\u200c\u200d" for char in text)
