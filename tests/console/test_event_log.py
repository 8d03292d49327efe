"""Core events as JSON records and as console lines."""

from __future__ import annotations

import json
import typing

import pytest

from mitalk_p2p.console.event_log import (
    ConsoleEvent,
    NameBook,
    describe_event,
    event_facts,
    event_to_json,
)
from mitalk_p2p.core.events import (
    JoinedRoom,
    JoinRefusedEvent,
    LeftRoom,
    MembersMerged,
    RoomChanged,
    TermStarted,
)
from mitalk_p2p.core.identity import PublicKey
from mitalk_p2p.core.jitter import Silence
from mitalk_p2p.core.media_events import (
    AudioOut,
    FrameReceived,
    ParentChanged,
    SenderKeyChanged,
)
from mitalk_p2p.core.media_frame import KeyGeneration
from mitalk_p2p.core.ops import (
    AcceptStage,
    Admit,
    DeclineStage,
    Demote,
    InviteToStage,
    Kick,
    Leave,
    LeaveReason,
    LowerHand,
    MoveToAudience,
    Mute,
    Op,
    Promote,
    RaiseHand,
    RevokeInvite,
    SelfMute,
    SetInfo,
    SetSuccessors,
    StepDown,
    TakeOver,
)
from mitalk_p2p.core.roles import Role
from mitalk_p2p.core.term import Term

from . import build_room, is_one_safe_line, key_from

HOST, ANA, BO = key_from("Host"), key_from("Ana"), key_from("Bo")
NAMES = {HOST: "Host", ANA: "Ana", BO: "Bo"}
NOW = 1_795_000_000.25


def names(key: PublicKey) -> str:
    return NAMES.get(key, f"@{key.short}")


def by(author: PublicKey, op: Op) -> RoomChanged:
    return RoomChanged(7, author, op)


CASES: list[tuple[ConsoleEvent, str, str | None]] = [
    (by(HOST, Admit(ANA, "Ana", Role.LISTENER, bytes(16))), "joined", "Ana joined as listener"),
    (by(ANA, Leave()), "left", "Ana left"),
    (by(ANA, RaiseHand()), "hand_raised", "Ana raised a hand"),
    (by(ANA, LowerHand()), "hand_lowered", "Ana lowered their hand"),
    (by(ANA, AcceptStage()), "stage_accepted", "Ana joined the stage"),
    (by(ANA, DeclineStage()), "stage_declined", "Ana declined the stage"),
    (by(ANA, StepDown()), "stepped_down", "Ana stepped down from the stage"),
    (by(ANA, SelfMute(True)), "mic_off", "Ana turned their mic off"),
    (by(ANA, SelfMute(False)), "mic_on", "Ana turned their mic on"),
    (
        by(HOST, InviteToStage(BO)),
        "invited_to_stage",
        "Bo was invited to the stage by Host",
    ),
    (
        by(HOST, MoveToAudience(BO)),
        "moved_to_audience",
        "Bo was moved to the audience by Host",
    ),
    (by(HOST, Mute(BO, True)), "muted", "Bo was muted by Host"),
    (by(HOST, Mute(BO, False)), "unmuted", "Bo was unmuted by Host"),
    (by(HOST, Kick(BO)), "kicked", "Bo was removed from the room by Host"),
    (by(HOST, Promote(BO)), "promoted", "Bo was made a co-moderator by Host"),
    (by(HOST, Demote(BO)), "demoted", "Bo was made a speaker again by Host"),
    (
        by(HOST, SetInfo("Garden", "plants\nand more")),
        "room_info_changed",
        "Host set the room name to “Garden” and the topic to “plants and more”",
    ),
    (by(HOST, RevokeInvite(bytes(range(16)))), "invite_revoked", "Host revoked an invite"),
    (by(HOST, SetSuccessors((ANA, BO))), "successors_set", None),
    (
        by(ANA, TakeOver(HOST, LeaveReason.SILENT)),
        "took_over",
        "Ana took over as host after Host went silent",
    ),
    (
        by(ANA, TakeOver(None, LeaveReason.LEFT)),
        "took_over",
        "Ana took over as host after the previous host left",
    ),
    (JoinedRoom(Term.first(), HOST), "entered_room", "you are in the room; Host is the host"),
    (
        JoinRefusedEvent("expired", "the invite expired"),
        "join_refused",
        "could not join (expired): the invite expired",
    ),
    (LeftRoom("left"), "left_room", "you left the room"),
    (LeftRoom("kicked"), "left_room", "you were removed from the room"),
    (
        LeftRoom("dropped"),
        "left_room",
        "you are no longer in the room (the new host's roster lacks you)",
    ),
    (LeftRoom("other"), "left_room", "you are no longer in the room (other)"),
    (TermStarted(Term(2, 1, 9), ANA), "term_started", "Ana is now the host (term 2.1)"),
    (
        MembersMerged(Term(2), (ANA, BO)),
        "members_merged",
        "after a split healed, these rejoined from term 2.0: Ana, Bo",
    ),
    (ParentChanged(ANA, "assigned"), "parent_changed", None),
    (
        ParentChanged(BO, "silent"),
        "parent_changed",
        "your audio relay went silent; now listening through Bo",
    ),
    (
        ParentChanged(None, "corrupt"),
        "parent_changed",
        "your audio relay sent bad frames; now listening through nobody yet",
    ),
    (SenderKeyChanged(KeyGeneration(3, 1), "rotation"), "sender_key_changed", None),
]


@pytest.mark.parametrize(("event", "name", "line"), CASES)
def test_every_event_kind_has_a_record_and_a_line(
    event: ConsoleEvent, name: str, line: str | None
) -> None:
    record = event_to_json(event, names, NOW)
    assert record is not None
    assert record["event"] == name and record["time"] == NOW
    assert json.loads(json.dumps(record)) == record
    assert describe_event(event, names) == line
    if line is not None:
        assert is_one_safe_line(line)


def test_every_operation_is_covered() -> None:
    covered = {type(event.op) for event, _, _ in CASES if isinstance(event, RoomChanged)}
    assert covered == set(typing.get_args(Op))


@pytest.mark.parametrize(
    "event", [AudioOut(ANA, Silence()), FrameReceived(ANA, 5, capture_time=1.0, arrived=1.1)]
)
def test_per_frame_media_events_are_neither_logged_nor_shown(event: ConsoleEvent) -> None:
    assert event_facts(event) is None
    assert event_to_json(event, names, NOW) is None
    assert describe_event(event, names) is None


def test_records_name_people_with_their_short_fingerprint() -> None:
    record = event_to_json(by(HOST, InviteToStage(BO)), names, NOW)
    assert record == {
        "event": "invited_to_stage",
        "time": NOW,
        "seq": 7,
        "actor": {"name": "Host", "fp": HOST.short},
        "target": {"name": "Bo", "fp": BO.short},
    }


def test_record_fields_of_the_richer_events() -> None:
    admit = event_to_json(by(HOST, Admit(ANA, "Ana", Role.SPEAKER, bytes(16))), names, NOW)
    assert admit is not None and admit["role"] == "speaker"
    assert admit["member"] == {"name": "Ana", "fp": ANA.short}
    merged = event_to_json(MembersMerged(Term(3), (ANA, BO)), names, NOW)
    assert merged is not None and merged["from_term"] == "3.0"
    assert merged["members"] == [{"name": "Ana", "fp": ANA.short}, {"name": "Bo", "fp": BO.short}]
    took = event_to_json(by(ANA, TakeOver(None, LeaveReason.LEFT)), names, NOW)
    assert took is not None and took["previous_host"] is None and took["reason"] == "left"
    revoked = event_to_json(by(HOST, RevokeInvite(bytes(16))), names, NOW)
    assert revoked is not None and revoked["invite"] == "00" * 16
    key = event_to_json(SenderKeyChanged(KeyGeneration(3, 1), "ratchet"), names, NOW)
    assert key is not None and key["generation"] == "3.1" and key["reason"] == "ratchet"


def test_long_member_lists_are_cut_in_lines_but_not_in_records() -> None:
    many = tuple(key_from(f"m{i}") for i in range(12))
    event = MembersMerged(Term(2), many)
    line = describe_event(event, names)
    assert line is not None and line.endswith("and 7 more")
    record = event_to_json(event, names, NOW)
    assert record is not None and isinstance(record["members"], list)
    assert len(record["members"]) == 12


def test_lines_stay_one_line_whatever_the_names() -> None:
    def hostile(key: PublicKey) -> str:
        return "Eve\n\x1b[2J\u202e"

    line = describe_event(by(ANA, Kick(BO)), hostile)
    assert line == "Eve [2J was removed from the room by Eve [2J"
    refused = describe_event(JoinRefusedEvent("bad", "line one\nline two"), hostile)
    assert refused == "could not join (bad): line one line two"


# --- names of members who left ---------------------------------------------------------------


def test_name_book_remembers_members_after_they_are_kicked() -> None:
    room = build_room("Ana", "Bo")
    book = NameBook()
    book.learn(room.state)
    kicked = room.key("Bo")
    room.apply("Host", Kick(kicked))
    book.learn(room.state)
    assert kicked not in room.state.members
    assert describe_event(RoomChanged(9, room.host, Kick(kicked)), book) == (
        "Bo was removed from the room by Host"
    )


def test_name_book_follows_roster_changes_and_admissions() -> None:
    room = build_room("Ana")
    book = NameBook()
    book.learn(room.state)
    late = room.admit("Late")
    book.learn(room.state)  # the same state object: only the change is read
    assert book(late) == "Late"
    other = build_room("Solo")
    book.learn(other.state)  # another state object: read in full
    assert book(other.key("Solo")) == "Solo" and book(room.key("Ana")) == "Ana"
    newcomer = key_from("newcomer")
    book.observe(by(HOST, Admit(newcomer, "Newcomer", Role.LISTENER, bytes(16))))
    book.observe(by(HOST, Kick(newcomer)))
    assert book(newcomer) == "Newcomer"
    stranger = key_from("stranger")
    assert book(stranger) == f"@{stranger.short}"
