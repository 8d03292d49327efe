"""How rooms are shown and chosen (no network)."""

from __future__ import annotations

import io
import json

import pytest

from mitalk_p2p.core.errors import MitalkError
from mitalk_p2p.core.identity import Identity
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.discovery.joining import choose
from mitalk_p2p.discovery.mdns import RoomGone, RoomSeen
from mitalk_p2p.discovery.room_record import RoomRecord
from mitalk_p2p.discovery.rooms_view import change_line, event_record, pick, table


def _room(name: str, seed: int, listeners: int = 1, topic: str = "") -> RoomSeen:
    key = Identity.from_seed(bytes([seed]) * 32, "h").public_key
    record = RoomRecord(room_id=RoomId(bytes([seed]) * 16), name=name, host_key=key,
                        listeners=listeners, control_port=7000, topic=topic)  # fmt: skip
    return RoomSeen(record, f"{name} ({key.short})._mitalk._udp.local.", ("10.0.0.1",), 7001)


ROOMS = [_room("Jazz", 1, topic="late"), _room("Jazz", 2), _room("Poetry", 3, listeners=0)]


def test_lines_and_json_show_what_people_need() -> None:
    jazz = ROOMS[0]
    line = change_line(jazz)
    assert line.startswith("+ Jazz (late): 1 listener, host ")
    assert jazz.record.fingerprint in line and line.endswith("at 10.0.0.1:7000")
    assert change_line(RoomGone(jazz)).startswith("- Jazz") and "(gone)" in change_line(
        RoomGone(jazz)
    )
    record = event_record(RoomGone(jazz), 5.0)
    assert json.loads(json.dumps(record)) == record
    assert record["event"] == "room_gone" and record["control"] == ["10.0.0.1:7000"]
    assert record["media"] == ["10.0.0.1:7001"] and record["open"] is False
    assert "3 rooms on the LAN" in table(ROOMS) and " 3. Poetry" in table(ROOMS)


def test_pick_by_number_name_or_prefix() -> None:
    assert pick(ROOMS, "2") is ROOMS[1]
    assert pick(ROOMS, "poetry") is ROOMS[2]
    assert pick(ROOMS, "Po") is ROOMS[2]
    with pytest.raises(MitalkError, match="2 rooms are called 'jazz'; choose one by number"):
        pick(ROOMS, "jazz")
    with pytest.raises(MitalkError, match="no room number 4"):
        pick(ROOMS, "4")
    with pytest.raises(MitalkError, match="no room on the LAN is called 'Rock'"):
        pick(ROOMS, "Rock")


def test_choose_asks_again_after_a_bad_answer_and_needs_pick_when_not_asked() -> None:
    err = io.StringIO()
    answers = iter(["9", "Poetry"])
    assert choose(ROOMS, None, ask=lambda _prompt: next(answers), err=err) is ROOMS[2]
    assert "no room number 9" in err.getvalue()
    with pytest.raises(MitalkError, match="3 rooms found: choose one with --pick"):
        choose(ROOMS, None, ask=None, err=io.StringIO())
    assert choose(ROOMS[2:], None, ask=None, err=io.StringIO()) is ROOMS[2]
    with pytest.raises(MitalkError, match="no room chosen"):
        choose(ROOMS, None, ask=lambda _prompt: "", err=io.StringIO())
