"""What people type: command-line argument types, keys, room ids, roles and console commands."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Iterator

from bootstrap import command as bootstrap_command
from mitalk_p2p import room_cli
from mitalk_p2p.arg_types import bounded_int
from mitalk_p2p.console.commands import ConsoleError, parse_command
from mitalk_p2p.core.errors import MitalkError, WireError
from mitalk_p2p.core.identity import PublicKey
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.roles import Role
from mitalk_p2p.core.room_state import Member, RoomState

from . import Check, Target, expect

ROOM = RoomId(bytes(range(16)))
ME = PublicKey(bytes([1]) * 32)
NAMES = ("Ana", "Bo", "Cy", "Ana Maria", "Anabel", "Dee", "Ünï 日本")


def one_safe_line(text: str) -> bool:
    return bool(text) and all(char.isprintable() or char in "\u200c\u200d" for char in text)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def argument_type(parse: Callable[[str], object]) -> Check:
    """An argparse ``type=``: a value, or :class:`argparse.ArgumentTypeError` only."""

    def check(data: bytes) -> None:
        try:
            parse(_text(data))
        except argparse.ArgumentTypeError as error:
            expect("\n" not in str(error), "an argument error of more than one line")

    return check


def check_duration(data: bytes) -> None:
    try:
        seconds = room_cli.duration(_text(data))
    except argparse.ArgumentTypeError:
        return
    expect(1 <= seconds <= 366 * 86400, f"duration {seconds} out of range was accepted")
    expect(room_cli.duration(f"{seconds}s") == seconds, "a duration does not round-trip")


def check_room_id(data: bytes) -> None:
    try:
        room = RoomId.from_hex(_text(data))
    except WireError:
        return
    expect(RoomId.from_hex(room.hex) == room, "a room id does not round-trip")


def check_role(data: bytes) -> None:
    try:
        role = Role.parse(_text(data))
    except ValueError:
        return
    expect(Role.parse(role.label) is role, "a role does not round-trip")


def check_key(data: bytes) -> None:
    try:
        key = room_cli._parse_key(_text(data))
    except MitalkError as error:
        expect("\n" not in str(error), "a key error of more than one line")
        return
    expect(room_cli._parse_key(key.raw.hex()) == key, "a key does not round-trip")


@functools.cache
def room_state() -> RoomState:
    state = RoomState.create(ROOM, "Garden", "", ME, "Host")
    for number, name in enumerate(NAMES, start=1):
        key = PublicKey(bytes([number + 1]) * 32)
        state.members[key] = Member(key, name, Role.SPEAKER if number % 2 else Role.LISTENER,
                                    joined_seq=number)
    return state


def check_console(data: bytes) -> None:
    for state in (room_state(), None):
        try:
            parse_command(_text(data), state, ME)
        except ConsoleError as error:
            expect(one_safe_line(str(error)), f"console error {str(error)!r} is not one line")


PARSERS: tuple[tuple[str, Check], ...] = (
    ("duration", check_duration),
    ("address", argument_type(room_cli.address)),
    ("bootstrap-node", argument_type(room_cli.bootstrap_node)),
    ("role-option", argument_type(room_cli.role)),
    ("seconds", argument_type(room_cli.seconds)),
    ("ip-address", argument_type(room_cli.ip_address)),
    ("bounded-int", argument_type(bounded_int(1, 1_000_000))),
    ("node-listen", argument_type(bootstrap_command._listen_address)),
    ("node-seconds", argument_type(bootstrap_command._positive_seconds)),
    ("room-id", check_room_id),
    ("role", check_role),
    ("public-key", check_key),
    ("console", check_console),
)


def seeds() -> Iterator[tuple[str, bytes]]:
    samples = {
        "duration": ["90", "90s", "15m", "2h", "7d", "1.5h"],
        "address": ["127.0.0.1:7000", "[::1]:0", "0.0.0.0:4000"],
        "bootstrap-node": ["127.0.0.1:7400", "ws://127.0.0.1:7400/"],
        "role-option": ["listener", "speaker", "host"],
        "seconds": ["0.5", "86400", "1e3"],
        "ip-address": ["192.0.2.1", " ::1 "],
        "bounded-int": ["1", "1000000", "-3"],
        "node-listen": ["127.0.0.1:7400"],
        "node-seconds": ["30", "0.25"],
        "room-id": [ROOM.hex],
        "role": ["moderator", "Listener"],
        "public-key": [ME.raw.hex(), f" {ME.raw.hex().upper()} "],
        "console": ["/kick Ana", "/mute @" + "x" * 4, "/invite Ana Maria", "/hand", "/who",
                    "# comment", "/help"],
    }
    for name, texts in samples.items():
        for text in texts:
            yield name, text.encode()


TARGET = Target(
    "cli-args",
    "command-line argument types (durations, addresses, bootstrap nodes, roles, numbers), "
    "public keys, room ids and console commands",
    PARSERS,
    seeds,
    dictionary="text.dict",
)
