"""Console lines become the right operation, or one clear line saying what is wrong."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mitalk_p2p.console.commands import (
    COMMAND_NAMES,
    HELP_TEXT,
    MAX_COMPLETIONS,
    ConsoleCommand,
    ConsoleError,
    LeaveRoom,
    LocalQuery,
    NoCommand,
    QueryKind,
    RoomAction,
    complete,
    parse_command,
    resolve_member,
)
from mitalk_p2p.console.status import compact_fingerprint
from mitalk_p2p.core.errors import MitalkError
from mitalk_p2p.core.identity import PublicKey
from mitalk_p2p.core.ops import (
    AcceptStage,
    DeclineStage,
    Demote,
    InviteToStage,
    Kick,
    LowerHand,
    MoveToAudience,
    Mute,
    Op,
    Promote,
    RaiseHand,
    SelfMute,
    StepDown,
)
from mitalk_p2p.core.roles import Role

from . import Room, build_room, is_one_safe_line, key_from


def garden() -> Room:
    return build_room(
        ("Ana", Role.SPEAKER),
        ("Bo", Role.SPEAKER),
        "Cy",
        "Ana Maria",
        "Anabel",
        ("Dee", Role.MODERATOR),
    )


ROOM = garden()


def parse(line: str, room: Room = ROOM, me: str = "Host") -> ConsoleCommand:
    return parse_command(line, room.state, room.key(me))


def action(line: str, room: Room = ROOM, me: str = "Host") -> RoomAction:
    command = parse(line, room, me)
    assert isinstance(command, RoomAction), command
    return command


def error(line: str, room: Room | None = ROOM, me: str = "Host") -> str:
    """The message of the ConsoleError ``line`` raises, checked to be one printable line."""
    with pytest.raises(ConsoleError) as caught:
        parse_command(line, room.state if room else None, ROOM.key(me))
    message = str(caught.value)
    assert is_one_safe_line(message), repr(message)
    return message


# --- every command ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "op"),
    [
        ("/hand", RaiseHand()),
        ("/lower", LowerHand()),
        ("/accept", AcceptStage()),
        ("/decline", DeclineStage()),
        ("/stage Cy", InviteToStage(ROOM.key("Cy"))),
        ("/audience Bo", MoveToAudience(ROOM.key("Bo"))),
        ("/mute Ana", Mute(ROOM.key("Ana"), True)),
        ("/unmute Ana", Mute(ROOM.key("Ana"), False)),
        ("/kick Cy", Kick(ROOM.key("Cy"))),
        ("/promote Bo", Promote(ROOM.key("Bo"))),
        ("/demote Dee", Demote(ROOM.key("Dee"))),
    ],
)
def test_room_commands_build_their_operation(line: str, op: Op) -> None:
    assert action(line).op == op


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("/hand", "raise your hand"),
        ("/stage Cy", "invite Cy"),
        ("/kick Cy", "kick Cy (@"),
        ("/demote Dee", "demote Dee"),
    ],
)
def test_descriptions_say_what_will_happen_and_to_whom(line: str, words: str) -> None:
    assert words in action(line).description


@pytest.mark.parametrize(
    ("line", "kind"),
    [(f"/{kind.value}", kind) for kind in QueryKind],
)
def test_local_queries(line: str, kind: QueryKind) -> None:
    assert parse(line) == LocalQuery(kind)


@pytest.mark.parametrize("line", ["/leave", "/quit", "/QUIT", "  /leave  "])
def test_leave_and_its_alias(line: str) -> None:
    assert parse(line) == LeaveRoom()


@pytest.mark.parametrize("line", ["", "   ", "\n", "# a script comment", "   #/kick Ana"])
def test_blank_lines_and_comments_do_nothing(line: str) -> None:
    assert parse(line) == NoCommand()


def test_command_words_ignore_case_and_surrounding_space() -> None:
    assert action("  /HAND \n").op == RaiseHand()
    assert action("/Kick\tCy").op == Kick(ROOM.key("Cy"))


def test_permissions_are_left_to_the_core() -> None:
    # A listener may type a moderator's command; the core refuses it when acted on.
    assert action("/kick Bo", me="Cy").op == Kick(ROOM.key("Bo"))


# --- aiming at yourself -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "op"),
    [
        ("/mute", SelfMute(True)),
        ("/unmute", SelfMute(False)),
        ("/audience", StepDown()),
        ("/mute Bo", SelfMute(True)),
        ("/unmute bo", SelfMute(False)),
        ("/audience Bo", StepDown()),
    ],
)
def test_mute_and_audience_aimed_at_yourself_use_the_member_operations(line: str, op: Op) -> None:
    assert action(line, me="Bo").op == op


def test_kicking_yourself_is_refused_here() -> None:
    message = error("/kick Host")
    assert "cannot kick yourself" in message and "/leave" in message


# --- names ---------------------------------------------------------------------------


def test_exact_name_wins_over_longer_names_it_starts() -> None:
    assert action("/kick ana").op == Kick(ROOM.key("Ana"))


def test_a_unique_prefix_is_enough() -> None:
    assert action("/kick anab").op == Kick(ROOM.key("Anabel"))
    assert action("/kick De").op == Kick(ROOM.key("Dee"))


def test_names_with_spaces_take_the_rest_of_the_line() -> None:
    assert action("/kick Ana Maria").op == Kick(ROOM.key("Ana Maria"))
    assert action("/kick    ana    MARIA   ").op == Kick(ROOM.key("Ana Maria"))
    assert action("/stage Ana M").op == InviteToStage(ROOM.key("Ana Maria"))


def test_names_from_peers_are_matched_as_displayed() -> None:
    room = build_room()
    bidi = room.admit("bidi", name="Ev\u202ee")
    tabbed = room.admit("tabbed", name="Zed\tZero")
    assert action("/kick Eve", room).op == Kick(bidi)
    assert action("/kick zed zero", room).op == Kick(tabbed)


# --- fingerprints -----------------------------------------------------------------------


def test_select_by_short_fingerprint_in_any_case_and_with_dashes() -> None:
    bo = ROOM.key("Bo")
    assert action(f"/kick @{bo.short}").op == Kick(bo)
    assert action(f"/kick @{bo.short.lower()}").op == Kick(bo)
    assert action(f"/kick @{bo.fingerprint}").op == Kick(bo)
    assert action(f"/kick @ {bo.fingerprint[:9]}").op == Kick(bo)


def test_select_by_hex_of_the_public_key() -> None:
    cy = ROOM.key("Cy")
    assert action(f"/kick @{cy.raw.hex()[:6]}").op == Kick(cy)
    assert action(f"/kick @{cy.raw.hex()[:8].upper()}").op == Kick(cy)


def colliding_keys() -> tuple[PublicKey, PublicKey]:
    """Two keys whose fingerprints start with the same four characters."""
    seen: dict[str, PublicKey] = {}
    for i in itertools.count():
        key = key_from(f"collide:{i}")
        first = compact_fingerprint(key)[:4]
        if first in seen:
            return seen[first], key
        seen[first] = key
    raise AssertionError("unreachable")


def test_a_shared_short_fingerprint_is_ambiguous_and_longer_tags_pick_one() -> None:
    room = build_room()
    one, two = colliding_keys()
    room.admit("one", name="Sam", key=one)
    room.admit("two", name="Sam", key=two)
    message = error(f"/kick @{one.short}", room)
    assert "matches 2 members" in message
    listed = message.partition("members:")[2]
    tags = re.findall(r"@[A-Z2-7]+", listed)
    assert all(len(tag) > 5 for tag in tags) and len(set(tags[:2])) == 2
    picked = {action(f"/kick {tag}", room).op for tag in tags[:2]}
    assert picked == {Kick(one), Kick(two)}


def test_the_tag_suggested_for_a_duplicate_name_selects_that_member() -> None:
    room = build_room("Cy")
    twin = room.admit("twin", name="cy")
    message = error("/stage CY", room)
    assert "“CY” matches 2 members" in message and "pick one by fingerprint" in message
    tags = re.findall(r"@[A-Z2-7]{4,}", message.partition("members:")[2])
    chosen = {action(f"/stage {tag}", room).op for tag in tags[:2]}
    assert chosen == {InviteToStage(room.key("Cy")), InviteToStage(twin)}


# --- errors ------------------------------------------------------------------------------


def test_unknown_command_suggests_the_closest() -> None:
    message = error("/hnd")
    assert "unknown command /hnd" in message and "did you mean /hand?" in message
    assert "did you mean /kick?" in error("/kik Ana")


def test_unknown_command_without_a_close_one_points_to_help() -> None:
    message = error("/xyzzy")
    assert "unknown command /xyzzy" in message and "/help" in message
    assert "did you mean" not in message
    assert "unknown command /" in error("/")


def test_a_line_without_a_slash_is_refused() -> None:
    assert error("hello everyone") == "lines must start with /; type /help"


@pytest.mark.parametrize("command", ["/stage", "/kick", "/promote", "/demote"])
def test_missing_name(command: str) -> None:
    message = error(command)
    assert f"{command} needs a member" in message and "NAME" in message


def test_no_such_member_suggests_a_close_name() -> None:
    message = error("/kick Anna M")
    assert "no member named “Anna M”" in message and "did you mean Ana Maria?" in message


def test_no_such_member_without_a_close_name() -> None:
    message = error("/kick Zoltan")
    assert "no member named “Zoltan”" in message and "/who" in message


def test_a_prefix_shared_by_several_names_lists_them_with_fingerprints() -> None:
    message = error("/kick an")
    assert "“an” matches 3 members" in message
    for label in ("Ana", "Ana Maria", "Anabel"):
        assert f"{label} @{ROOM.key(label).short}" in message
    assert "pick one by fingerprint, e.g. @" in message


def test_a_long_list_of_candidates_is_cut_with_a_count() -> None:
    room = build_room(*(f"Guest {i}" for i in range(9)))
    message = error("/kick guest", room)
    assert "matches 9 members" in message and "and 4 more" in message


def test_extra_argument_to_a_command_that_takes_none() -> None:
    message = error("/hand now please")
    assert message == "/hand takes no argument, but got “now please”"
    assert "/who takes no argument" in error("/who Ana")


@pytest.mark.parametrize("line", ["/hand", "/kick Ana", "/who", "/tree", "/mute"])
def test_not_in_a_room_yet(line: str) -> None:
    assert "not in a room yet" in error(line, room=None)


@pytest.mark.parametrize("line", ["/help", "/stats", "/leave"])
def test_commands_that_work_before_joining(line: str) -> None:
    assert not isinstance(parse_command(line, None, ROOM.host), RoomAction)


def test_fingerprint_selector_errors() -> None:
    assert "too short" in error("/kick @ab")
    assert "at least 4" in error("/kick @")
    assert "nobody in the room has fingerprint @0000" in error("/kick @0000")


def test_console_errors_are_mitalk_errors() -> None:
    assert issubclass(ConsoleError, MitalkError)


def test_hostile_input_still_gives_one_line() -> None:
    message = error("/kick Zed\x1b[2J\u202e\r\nrm")
    assert "\n" not in message and "\x1b" not in message and "\u202e" not in message


@given(st.text(max_size=60))
def test_any_line_parses_or_fails_with_one_printable_line(line: str) -> None:
    try:
        parse_command(line, ROOM.state, ROOM.host)
    except ConsoleError as exc:
        assert is_one_safe_line(str(exc))


# --- completion and help -------------------------------------------------------------------


def test_complete_command_names() -> None:
    assert complete("/", ROOM.state) == list(COMMAND_NAMES)
    assert complete("/k", ROOM.state) == ["/kick"]
    assert complete("/DE", ROOM.state) == ["/decline", "/demote"]
    assert complete("/q", None) == ["/quit"]
    assert complete("hello", ROOM.state) == []


def test_complete_member_names_as_whole_lines() -> None:
    assert complete("/kick an", ROOM.state) == ["/kick Ana", "/kick Ana Maria", "/kick Anabel"]
    assert complete("/Stage ana m", ROOM.state) == ["/stage Ana Maria"]
    assert complete("/kick ", ROOM.state)[0] == "/kick Ana"
    assert complete("/kick q", ROOM.state) == []


def test_complete_fingerprints_after_an_at_sign() -> None:
    bo = ROOM.key("Bo")
    assert complete(f"/kick @{bo.short.lower()}", ROOM.state) == [
        f"/kick @{compact_fingerprint(bo)}"
    ]


def test_nothing_to_complete_after_commands_without_names_or_outside_a_room() -> None:
    assert complete("/hand ", ROOM.state) == []
    assert complete("/nope a", ROOM.state) == []
    assert complete("/kick a", None) == []


def test_completions_are_capped() -> None:
    room = build_room(*(f"Guest {i:03}" for i in range(MAX_COMPLETIONS + 10)))
    assert len(complete("/kick gu", room.state)) == MAX_COMPLETIONS


def test_completed_lines_parse() -> None:
    lines = complete("/promote ", ROOM.state)
    assert len(lines) == len(ROOM.state.members)
    for line in lines:
        assert isinstance(parse(line), RoomAction)


def test_help_lists_every_command() -> None:
    for name in COMMAND_NAMES:
        assert name in HELP_TEXT
    assert "@fingerprint" in HELP_TEXT


def test_resolve_member_is_usable_on_its_own() -> None:
    assert resolve_member(" cy ", ROOM.state).key == ROOM.key("Cy")
