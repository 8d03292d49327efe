"""State across restarts: a node with a state file, stopped and started again."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
import trio

from bootstrap.announcement import create_withdrawal
from bootstrap.registry import Registry, RegistryConfig, Stored
from bootstrap.server import BootstrapServer
from bootstrap.store import AnnouncementStore, StoreError
from mitalk_p2p.core.term import Term
from mitalk_p2p.runtime import bootstrap_client as client
from mitalk_p2p.runtime.bootstrap_client import BootstrapError
from tests.bootstrap import HOST, NOW, ROOM, make_announcement, room_id
from tests.bootstrap.nodes import WallClock, node_with_state


def rows(state: Path, table: str = "announcements") -> int:
    with sqlite3.connect(state) as db:
        count: int = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    db.close()
    return count


async def test_a_restart_loses_no_unexpired_announcement(tmp_path: Path) -> None:
    state = tmp_path / "node.sqlite"
    clock = WallClock()
    kept = make_announcement()
    gone = make_announcement(room=room_id(2), name="Jazz That Left")
    async with node_with_state(state, clock) as address:
        assert await client.announce(address, kept) == "added"
        assert await client.announce(address, gone) == "added"
        assert await client.withdraw(address, create_withdrawal(
            HOST, room_id=room_id(2), term=Term.first(), now=NOW + 1))
    clock.now = NOW + 10
    async with node_with_state(state, clock) as address:
        assert await client.lookup_id(address, ROOM) == kept
        assert await client.lookup_name(address, "jazz") == [kept]
        # The withdrawal was kept too: replaying the withdrawn announcement fails.
        with pytest.raises(BootstrapError) as caught:
            await client.announce(address, gone)
        assert caught.value.code == "withdrawn"


async def test_expired_announcements_are_gone_after_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "node.sqlite"
    clock = WallClock()
    async with node_with_state(state, clock) as address:
        await client.announce(address, make_announcement(lifetime=60))
        await client.announce(address, make_announcement(room=room_id(2), lifetime=600))
    assert rows(state) == 2
    clock.now = NOW + 60
    async with node_with_state(state, clock) as address:
        assert await client.lookup_id(address, ROOM) is None
        assert await client.lookup_id(address, room_id(2)) is not None
    assert rows(state) == 1


async def test_a_tampered_row_is_skipped_counted_and_never_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "node.sqlite"
    clock = WallClock()
    genuine = make_announcement(room=room_id(2), name="Other Room")
    async with node_with_state(state, clock) as address:
        await client.announce(address, make_announcement())
        await client.announce(address, genuine)
    with sqlite3.connect(state) as db:  # point the room somewhere else
        record = db.execute("SELECT record FROM announcements WHERE room_id = ?",
                            (ROOM.raw,)).fetchone()[0]
        forged = record.replace(b"192.0.2.1:4000", b"192.0.2.6:4000")
        assert forged != record
        db.execute("UPDATE announcements SET record = ? WHERE room_id = ?", (forged, ROOM.raw))
        db.execute("INSERT INTO announcements VALUES (?, 1, ?)", (room_id(3).raw, b"junk"))
    db.close()
    registry = Registry()
    with caplog.at_level(logging.WARNING, logger="bootstrap.store"), \
            AnnouncementStore.open(state) as store:
        report = store.restore(registry, NOW)
    assert (report.announcements, report.tampered) == (1, 2)
    assert registry.lookup_id(ROOM, NOW) is None
    assert registry.lookup_id(room_id(2), NOW) == genuine
    assert sum("tampered" in r.message for r in caplog.records) == 2
    assert rows(state) == 1


async def test_a_row_refused_for_a_passing_reason_is_kept_for_later(tmp_path: Path) -> None:
    state = tmp_path / "node.sqlite"
    clock = WallClock()
    async with node_with_state(state, clock) as address:
        for n in range(3):
            await client.announce(address, make_announcement(room=room_id(n)))
    small = Registry(RegistryConfig(max_rooms=2))
    with AnnouncementStore.open(state) as store:
        report = store.restore(small, NOW)
    assert (report.announcements, report.kept_aside) == (2, 1)
    assert rows(state) == 3
    async with node_with_state(state, clock) as address:  # default limits: all three
        assert len(await client.lookup_name(address, "jazz")) == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a database at all" * 40, "not a usable bootstrap state file"),
        (b"", None),  # an empty file is a new database
    ],
)
def test_a_file_that_is_not_a_state_file_is_one_clear_error(
    tmp_path: Path, content: bytes, message: str | None
) -> None:
    state = tmp_path / "node.sqlite"
    state.write_bytes(content)
    if message is None:
        AnnouncementStore.open(state).close()
        return
    with pytest.raises(StoreError, match=message) as caught:
        AnnouncementStore.open(state)
    assert str(state) in str(caught.value) and "\n" not in str(caught.value)


def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "other.sqlite"
    with sqlite3.connect(state) as db:
        db.execute("CREATE TABLE announcements (id INTEGER, text TEXT)")
    db.close()
    with pytest.raises(StoreError, match="unexpected announcements table"):
        AnnouncementStore.open(state)
    with sqlite3.connect(state) as db:  # left as it was
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0
        assert db.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
    db.close()
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 2")
    db.close()
    with pytest.raises(StoreError, match="written by a newer version"):
        AnnouncementStore.open(newer)
    with pytest.raises(StoreError, match=r"cannot open the state file .*: unable to open"):
        AnnouncementStore.open(tmp_path / "missing-directory" / "node.sqlite")


def test_the_sweep_deletes_what_has_expired(tmp_path: Path) -> None:
    state = tmp_path / "node.sqlite"
    with AnnouncementStore.open(state) as store:
        store.apply([Stored(make_announcement(lifetime=60)),
                     Stored(make_announcement(room=room_id(2), lifetime=600))])
        store.sweep(NOW + 60, horizon=NOW)
    assert rows(state) == 1


async def test_a_failing_write_is_logged_and_the_node_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = AnnouncementStore.open(tmp_path / "node.sqlite")
    store.close()  # every write now fails
    server = BootstrapServer(Registry(), clock=WallClock(), store=store)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(server.serve, "127.0.0.1:0")
        with caplog.at_level(logging.ERROR, logger="bootstrap.store"):
            assert await client.announce(address, make_announcement()) == "added"
        assert await client.lookup_id(address, ROOM) is not None
        assert server.statistics().store_errors == 1
        nursery.cancel_scope.cancel()
    assert any("could not write" in r.message for r in caplog.records)
