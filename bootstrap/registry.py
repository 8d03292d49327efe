"""The bootstrap node's registry of announced rooms: sans-I/O, with ``now`` passed in.

One entry per room id.  The registry checks a signature before it keeps
anything, and orders two announcements of a room by term, then by expiry.

Who may replace a stored announcement
=====================================

The entry for a room is held by its stored announcement's host ``H`` and signer
``S`` (``S`` is ``H`` itself or a moderator announcing for it).

* At the same term, the new announcement must name the same host ``H``
  (``term-conflict`` otherwise) and be signed by ``H`` or ``S``
  (``not-authorized`` otherwise): anybody else claiming to moderate for ``H``
  cannot redirect the room.
* At a strictly higher term, the same signers may renew for ``H``; any other
  key must be the new announcement's own host, signing for itself
  (``not-host-signed`` otherwise).  A host succession is announced by the new host.
* A lower term is refused (``stale-term``).

What remains: the node cannot check a succession, since that needs the room's
signed state, so any key can still claim a room id it has not seen before, or
take one over by signing a higher term as its own host.  Such an entry only
misdirects: joining stays safe, because a joiner's handshake checks the host key
it reaches against its invite and the room's signed state, and a client keeps a
lookup's addresses as hints only.  It lasts until its expiry (at most
:attr:`RegistryConfig.max_lifetime`) unless renewed.

Every refusal raises :class:`RegistryError` with a stable :class:`Refusal` code and
is counted in :meth:`Registry.statistics`.  Times are unix seconds.

With ``record_changes`` set, every accepted change is also queued as a
:data:`Change` for :meth:`Registry.take_changes`, so that a driver can persist it.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping
from typing import NoReturn

import attrs

from mitalk_p2p.core.errors import RemoteProtocolError
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.term import Term

from .announcement import Announcement, Withdrawal


class Refusal(enum.StrEnum):
    """Why the registry refused a record.  The values are part of the wire protocol."""

    BAD_SIGNATURE = "bad-signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    """Issued (or withdrawn) further in the future than the allowed clock skew."""
    BAD_LIFETIME = "bad-lifetime"
    STALE_TERM = "stale-term"
    TERM_CONFLICT = "term-conflict"
    """Same term as the stored announcement, but another host: one of them is forged."""
    WITHDRAWN = "withdrawn"
    """Issued before the room's last withdrawal: a replay."""
    STALE_WITHDRAWAL = "stale-withdrawal"
    """Signed before the stored announcement was issued: a replay."""
    NOT_AUTHORIZED = "not-authorized"
    NOT_HOST_SIGNED = "not-host-signed"
    """A new host took over a room without signing its announcement itself."""
    REGISTRY_FULL = "registry-full"
    TOO_MANY_ADDRESSES = "too-many-addresses"


class RegistryError(RemoteProtocolError):
    """A record the registry refused; ``code`` is stable, the message is for people."""

    def __init__(self, code: Refusal, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __repr__(self) -> str:
        return f"RegistryError({self.code.value!r}, {str(self)!r})"


class Outcome(enum.Enum):
    """What an accepted announcement did."""

    ADDED = "added"
    REPLACED = "replaced"
    KEPT = "kept"
    """Same term, no later expiry: the stored announcement stays (a harmless repeat)."""


@attrs.frozen
class Stored:
    """A change: ``announcement`` is now the room's entry."""

    announcement: Announcement


@attrs.frozen
class Withdrawn:
    """A change: the room's entry was removed by ``withdrawal``, which is remembered."""

    withdrawal: Withdrawal


Change = Stored | Withdrawn


@attrs.frozen
class RegistryConfig:
    max_rooms: int = 10_000
    """Rooms stored at once; a new room beyond this is refused with ``registry-full``."""
    max_addresses: int = 8
    """Addresses one announcement may list."""
    max_results: int = 20
    """Rooms one name lookup returns at most."""
    max_lifetime: int = 3600
    """Seconds from issue to expiry an announcement may claim, so a dead room lapses."""
    clock_skew: int = 60
    """Seconds a record may be dated in the future, for signers whose clocks run fast."""


@attrs.frozen
class RegistryStatistics:
    rooms: int
    announcements_accepted: int
    announcements_kept: int
    withdrawals: int
    withdrawals_remembered: int
    """Recent withdrawals kept to refuse replays of the announcements they ended."""
    lookups: int
    expired: int
    refused: Mapping[str, int]
    """Refusals by :class:`Refusal` code."""


@attrs.frozen
class _Tombstone:
    term: Term
    withdrawn_at: int


@attrs.define
class _Entry:
    announcement: Announcement
    folded_name: str


@attrs.define
class Registry:
    config: RegistryConfig = attrs.Factory(RegistryConfig)
    record_changes: bool = False
    """Queue every accepted change for :meth:`take_changes`."""
    _changes: list[Change] = attrs.Factory(list)
    _rooms: dict[RoomId, _Entry] = attrs.Factory(dict)
    _tombstones: dict[RoomId, _Tombstone] = attrs.Factory(dict)
    _refused: Counter[str] = attrs.Factory(Counter)
    _accepted: int = 0
    _kept: int = 0
    _withdrawals: int = 0
    _lookups: int = 0
    _expired: int = 0

    # --- changes -------------------------------------------------------------------

    def announce(self, announcement: Announcement, now: float) -> Outcome:
        """Store ``announcement`` if it is authentic, current and no older than the stored one."""
        ann = announcement
        config = self.config
        if len(ann.addresses) > config.max_addresses:
            self._refuse(Refusal.TOO_MANY_ADDRESSES,
                         f"{len(ann.addresses)} addresses, at most {config.max_addresses} allowed")
        if ann.expires_at <= now:
            self._refuse(Refusal.EXPIRED, "the announcement has already expired")
        if ann.issued_at > now + config.clock_skew:
            self._refuse(Refusal.NOT_YET_VALID, "the announcement is dated in the future")
        if ann.expires_at - ann.issued_at > config.max_lifetime:
            self._refuse(Refusal.BAD_LIFETIME,
                         f"announcements may last at most {config.max_lifetime} s")
        if not ann.verify():
            self._refuse(Refusal.BAD_SIGNATURE, "the announcement's signature does not match")
        tombstone = self._tombstones.get(ann.room_id)
        if (tombstone is not None and ann.term <= tombstone.term
                and ann.issued_at < tombstone.withdrawn_at):
            self._refuse(Refusal.WITHDRAWN, "the room was withdrawn after this was issued")
        entry = self._rooms.get(ann.room_id)
        if entry is None:
            if len(self._rooms) >= config.max_rooms:
                self.expire(now)
            if len(self._rooms) >= config.max_rooms:
                self._refuse(Refusal.REGISTRY_FULL,
                             f"this node already holds {config.max_rooms} rooms")
            outcome = Outcome.ADDED
        else:
            stored = entry.announcement
            self._check_succession(stored, ann)
            if ann.term == stored.term and ann.expires_at <= stored.expires_at:
                self._kept += 1
                return Outcome.KEPT
            outcome = Outcome.REPLACED
        self._rooms[ann.room_id] = _Entry(ann, ann.name.casefold())
        self._tombstones.pop(ann.room_id, None)
        self._accepted += 1
        if self.record_changes:
            self._changes.append(Stored(ann))
        return outcome

    def withdraw(self, withdrawal: Withdrawal, now: float) -> bool:
        """Remove the room's announcement if the host (or its signer) withdrew it.

        Returns False when there was nothing to remove.  Remembers the withdrawal
        long enough that a replayed older announcement is refused.
        """
        w = withdrawal
        if w.withdrawn_at > now + self.config.clock_skew:
            self._refuse(Refusal.NOT_YET_VALID, "the withdrawal is dated in the future")
        if not w.verify():
            self._refuse(Refusal.BAD_SIGNATURE, "the withdrawal's signature does not match")
        entry = self._rooms.get(w.room_id)
        if entry is None:
            return False
        stored = entry.announcement
        if w.signer not in (stored.host, stored.signer):
            self._refuse(Refusal.NOT_AUTHORIZED,
                         "only the room's host or the announcement's signer may withdraw it")
        if w.term < stored.term:
            self._refuse(Refusal.STALE_TERM,
                         f"term {w.term} is older than the stored term {stored.term}")
        if w.withdrawn_at < stored.issued_at:
            self._refuse(Refusal.STALE_WITHDRAWAL,
                         "the withdrawal predates the stored announcement")
        del self._rooms[w.room_id]
        self._remember_withdrawal(w)
        self._withdrawals += 1
        if self.record_changes:
            self._changes.append(Withdrawn(w))
        return True

    def restore_withdrawal(self, withdrawal: Withdrawal, now: float) -> bool:
        """Remember a withdrawal accepted before a restart, so its replays stay refused.

        Only the signature is checked (who may withdraw was checked when it was
        accepted).  Returns False when it is too old to matter any more.
        """
        if not withdrawal.verify():
            self._refuse(Refusal.BAD_SIGNATURE, "the withdrawal's signature does not match")
        if withdrawal.withdrawn_at < self.tombstone_horizon(now):
            return False
        self._remember_withdrawal(withdrawal)
        return True

    def take_changes(self) -> list[Change]:
        """The changes queued since the last call (see ``record_changes``), oldest first."""
        changes, self._changes = self._changes, []
        return changes

    def expire(self, now: float) -> int:
        """Drop announcements that have expired and withdrawals too old to matter."""
        gone = [room for room, entry in self._rooms.items()
                if entry.announcement.expires_at <= now]
        for room in gone:
            del self._rooms[room]
        self._expired += len(gone)
        horizon = self.tombstone_horizon(now)
        for room in [r for r, t in self._tombstones.items() if t.withdrawn_at < horizon]:
            del self._tombstones[room]
        return len(gone)

    # --- queries -------------------------------------------------------------------

    def lookup_id(self, room_id: RoomId, now: float) -> Announcement | None:
        self._lookups += 1
        entry = self._rooms.get(room_id)
        if entry is None or entry.announcement.expires_at <= now:
            return None
        return entry.announcement

    def lookup_name(self, text: str, now: float, *, limit: int | None = None) -> list[Announcement]:
        """Live rooms whose name contains ``text`` (ignoring case), most listeners first."""
        self._lookups += 1
        limit = self.config.max_results if limit is None else min(limit, self.config.max_results)
        needle = text.casefold()
        found = [
            entry.announcement
            for entry in self._rooms.values()
            if needle in entry.folded_name and entry.announcement.expires_at > now
        ]
        found.sort(key=lambda a: (-a.listener_count, a.name.casefold(), a.room_id))
        return found[: max(0, limit)]

    def __len__(self) -> int:
        return len(self._rooms)

    def statistics(self) -> RegistryStatistics:
        return RegistryStatistics(
            rooms=len(self._rooms),
            announcements_accepted=self._accepted,
            announcements_kept=self._kept,
            withdrawals=self._withdrawals,
            withdrawals_remembered=len(self._tombstones),
            lookups=self._lookups,
            expired=self._expired,
            refused=dict(self._refused),
        )

    def tombstone_horizon(self, now: float) -> float:
        """Withdrawals made before this may be forgotten: nothing they ended is still valid."""
        return now - self.config.max_lifetime - self.config.clock_skew

    # --- internals -----------------------------------------------------------------

    def _check_succession(self, stored: Announcement, ann: Announcement) -> None:
        """Refuse ``ann`` unless it may replace ``stored`` (see the module docstring)."""
        if ann.term < stored.term:
            self._refuse(Refusal.STALE_TERM,
                         f"term {ann.term} is older than the stored term {stored.term}")
        holders = (stored.host, stored.signer)
        if ann.term == stored.term:
            if ann.host != stored.host:
                self._refuse(Refusal.TERM_CONFLICT,
                             f"term {ann.term} already belongs to another host")
            if ann.signer not in holders:
                self._refuse(Refusal.NOT_AUTHORIZED,
                             "only the room's host or the announcement's signer may renew it")
        elif not (ann.host == stored.host and ann.signer in holders) and ann.signer != ann.host:
            self._refuse(Refusal.NOT_HOST_SIGNED,
                         "a room taken over at a higher term must be announced by its new host")

    def _refuse(self, code: Refusal, message: str) -> NoReturn:
        self._refused[code.value] += 1
        raise RegistryError(code, message)

    def _remember_withdrawal(self, w: Withdrawal) -> None:
        if len(self._tombstones) >= self.config.max_rooms:
            oldest = next(iter(self._tombstones))
            del self._tombstones[oldest]
        self._tombstones[w.room_id] = _Tombstone(w.term, w.withdrawn_at)
