"""A bootstrap node's state on disk (stdlib ``sqlite3``), so a restart loses no announcement.

The file holds the signed bytes of every stored announcement and of recent
withdrawals (which keep replays of withdrawn rooms out), one row per room each.
Nothing read back is trusted: :func:`restore` decodes each row and gives it to
the registry again, which checks its signature and its times as it would a new
one.  A row that fails (tampered, undecodable, expired, or superseded by a
withdrawal) is logged, counted and deleted; one refused for a passing reason
(the registry is full, or the clock went back) is logged and kept for next time.

Writes are single small transactions in WAL mode with ``synchronous=NORMAL``:
tens of microseconds, cheap enough for the trio thread, and durable across a
crash of the process (though not necessarily of the machine).
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import attrs

from mitalk_p2p.core.errors import MitalkError, WireError
from mitalk_p2p.core.ids import RoomId

from .announcement import Announcement, Withdrawal
from .registry import Change, Refusal, Registry, RegistryError, Stored, Withdrawn

logger = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS announcements (
    room_id BLOB PRIMARY KEY,
    expires_at INTEGER NOT NULL,
    record BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS withdrawals (
    room_id BLOB PRIMARY KEY,
    withdrawn_at INTEGER NOT NULL,
    record BLOB NOT NULL
);
"""


class StoreError(MitalkError):
    """The state file cannot be used.  ``str()`` is one line naming the file."""


@attrs.frozen
class RestoreReport:
    """What :func:`restore` made of the state file."""

    announcements: int
    """Announcements back in the registry."""
    withdrawals: int
    """Withdrawals remembered again."""
    expired: int
    """Rows dropped because their time had passed."""
    tampered: int
    """Rows dropped because they did not decode or their signature did not match."""
    superseded: int
    """Announcement rows dropped because a stored withdrawal ended them."""
    kept_aside: int
    """Rows the registry refused for now (full, or dated in its future), kept on disk."""

    def __str__(self) -> str:
        return (f"{self.announcements} announcements and {self.withdrawals} withdrawals back; "
                f"dropped {self.expired} expired, {self.tampered} tampered and "
                f"{self.superseded} withdrawn; {self.kept_aside} kept aside")


@attrs.define(eq=False)
class AnnouncementStore:
    """An open state file.  Close it with :meth:`close` (or use it as a context manager)."""

    path: Path
    _db: sqlite3.Connection = attrs.field(repr=False)
    errors: int = 0
    """Writes that failed (logged): the node keeps serving from memory."""

    @classmethod
    def open(cls, path: Path | str) -> AnnouncementStore:
        """Open or create the state file; :class:`StoreError` if it is not usable."""
        path = Path(path)
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the state file {path}: {exc}") from None
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"the state file {path} was written by a newer version "
                                 f"(schema {version}); use another file")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"the state file {path} is damaged ({check}); "
                                 "move it away to start afresh")
            cls._check_columns(db, path)  # before changing anything in a foreign file
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"the state file {path} is not a usable bootstrap state file "
                             f"({exc}); move it away to start afresh") from None
        except StoreError:
            db.close()
            raise
        return cls(path, db)

    @staticmethod
    def _check_columns(db: sqlite3.Connection, path: Path) -> None:
        expected = {
            "announcements": ["room_id", "expires_at", "record"],
            "withdrawals": ["room_id", "withdrawn_at", "record"],
        }
        for table, columns in expected.items():
            found = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
            if found and found != columns:  # a missing table is created afterwards
                raise StoreError(f"the state file {path} has an unexpected {table} table "
                                 f"({', '.join(found)}); move it away to start afresh")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> AnnouncementStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- writing -----------------------------------------------------------------

    def apply(self, changes: Iterable[Change]) -> None:
        """Write the registry's changes in one transaction.  Failures are logged, not raised."""
        changes = list(changes)
        if not changes:
            return
        try:
            with self._transaction():
                for change in changes:
                    self._write(change)
        except sqlite3.Error as exc:
            self.errors += 1
            logger.error("could not write %d changes to %s: %s", len(changes), self.path, exc)

    def sweep(self, now: float, horizon: float) -> None:
        """Delete announcements expired at ``now`` and withdrawals made before ``horizon``."""
        try:
            with self._transaction():
                self._db.execute("DELETE FROM announcements WHERE expires_at <= ?", (int(now),))
                self._db.execute("DELETE FROM withdrawals WHERE withdrawn_at < ?", (int(horizon),))
        except sqlite3.Error as exc:
            self.errors += 1
            logger.error("could not sweep %s: %s", self.path, exc)

    def _write(self, change: Change) -> None:
        db = self._db
        match change:
            case Stored(ann):
                db.execute("INSERT OR REPLACE INTO announcements VALUES (?, ?, ?)",
                           (ann.room_id.raw, ann.expires_at, ann.to_bytes()))
                db.execute("DELETE FROM withdrawals WHERE room_id = ?", (ann.room_id.raw,))
            case Withdrawn(w):
                db.execute("DELETE FROM announcements WHERE room_id = ?", (w.room_id.raw,))
                db.execute("INSERT OR REPLACE INTO withdrawals VALUES (?, ?, ?)",
                           (w.room_id.raw, w.withdrawn_at, w.to_bytes()))

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    # --- reading -----------------------------------------------------------------

    def _rows(self, table: str) -> list[tuple[bytes, bytes]]:
        return [(bytes(room), bytes(record)) for room, record in
                self._db.execute(f"SELECT room_id, record FROM {table} ORDER BY rowid")]

    def restore(self, registry: Registry, now: float) -> RestoreReport:
        """Load the state file into ``registry``, checking every row as a new record.

        Withdrawals go first, so that an announcement they ended cannot come back.
        Raises :class:`StoreError` only if the file cannot be read at all.
        """
        try:
            withdrawals = self._rows("withdrawals")
            announcements = self._rows("announcements")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the state file {self.path}: {exc}") from None
        tally: Counter[str] = Counter()
        for table, rows, load in (("withdrawals", withdrawals, _restore_withdrawal),
                                  ("announcements", announcements, _restore_announcement)):
            dropped = []
            for room, record in rows:
                verdict = load(registry, room, record, now)
                tally[f"{table}:{verdict}"] += 1
                if verdict in _DROPPED:
                    dropped.append(room)
            self._delete_quietly(table, dropped)
        registry.take_changes()  # all of it is on disk already
        return RestoreReport(
            announcements=tally["announcements:restored"],
            withdrawals=tally["withdrawals:restored"],
            expired=tally["announcements:expired"] + tally["withdrawals:expired"],
            tampered=tally["announcements:tampered"] + tally["withdrawals:tampered"],
            superseded=tally["announcements:superseded"],
            kept_aside=tally["announcements:kept"],
        )

    def _delete_quietly(self, table: str, rooms: list[bytes]) -> None:
        if not rooms:
            return
        try:
            with self._transaction():
                self._db.executemany(f"DELETE FROM {table} WHERE room_id = ?",
                                     [(room,) for room in rooms])
        except sqlite3.Error as exc:
            self.errors += 1
            logger.error("could not delete %d stale rows from %s: %s", len(rooms), self.path, exc)


@attrs.define
class _Transaction:
    db: sqlite3.Connection

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


_DROPPED: Final = frozenset({"expired", "tampered", "superseded"})
"""Verdicts on a stored row that make it worthless for good."""


def _restore_withdrawal(registry: Registry, room: bytes, record: bytes, now: float) -> str:
    try:
        withdrawal = Withdrawal.from_bytes(record)
        if withdrawal.room_id != RoomId(room):
            raise WireError("the record names another room than its row")
        return "restored" if registry.restore_withdrawal(withdrawal, now) else "expired"
    except (WireError, RegistryError) as exc:
        logger.warning("skipped the tampered withdrawal row %s: %s", room.hex(), exc)
        return "tampered"


def _restore_announcement(registry: Registry, room: bytes, record: bytes, now: float) -> str:
    try:
        ann = Announcement.from_bytes(record)
        if ann.room_id != RoomId(room):
            raise WireError("the record names another room than its row")
        registry.announce(ann, now)
    except WireError as exc:
        logger.warning("skipped the tampered announcement row %s: %s", room.hex(), exc)
        return "tampered"
    except RegistryError as exc:
        if exc.code is Refusal.EXPIRED:
            return "expired"
        if exc.code is Refusal.BAD_SIGNATURE:
            logger.warning("skipped the tampered announcement row %s: %s", room.hex(), exc)
            return "tampered"
        if exc.code is Refusal.WITHDRAWN:
            return "superseded"
        logger.warning("kept aside the stored announcement of room %s: %s", room.hex(), exc)
        return "kept"
    return "restored"
