"""Showing the rooms on the LAN: ``mitalk rooms`` and the list ``mitalk join`` offers.

``mitalk rooms`` prints a line per change when its output is not a terminal
(``+`` a room appeared, ``~`` it changed, ``-`` it vanished), redraws a table on
a terminal, and with ``--json`` prints one JSON object per change::

    {"event": "room_seen" | "room_updated" | "room_gone", "time": <unix seconds>,
     "room_id": ..., "name": ..., "topic": ..., "listeners": N, "fingerprint": ...,
     "key": <hex>, "control": ["IP:PORT", ...], "media": ["IP:PORT", ...],
     "open": true | false, "instance": <DNS-SD name>}
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final, TextIO

import trio

from ..core.errors import MitalkError
from .candidates import MdnsSettings
from .mdns import RoomEvent, RoomGone, RoomSeen, open_room_browser, open_zeroconf

CLEAR_SCREEN: Final = "\x1b[H\x1b[2J"


def _ordered(rooms: Iterable[RoomSeen]) -> list[RoomSeen]:
    return sorted(rooms, key=lambda r: (r.record.name.casefold(), r.record.fingerprint, r.instance))


def describe(room: RoomSeen) -> str:
    """One line: name, topic, listeners, host fingerprint, address."""
    record = room.record
    topic = f" ({record.topic})" if record.topic else ""
    count = record.listeners
    listeners = f"{count} listener{'s' if count != 1 else ''}"
    opened = ", open" if record.open_invite is not None else ""
    address = room.control_addresses[0] if room.control_addresses else "?"
    return f"{record.name}{topic}: {listeners}{opened}, host {record.fingerprint}, at {address}"


def change_line(event: RoomEvent) -> str:
    if isinstance(event, RoomGone):
        return f"- {describe(event.last)} (gone)"
    return f"{'~' if event.updated else '+'} {describe(event)}"


def event_record(event: RoomEvent, now: float) -> dict[str, Any]:
    """The ``--json`` object for ``event`` (see the module docstring)."""
    room = event.last if isinstance(event, RoomGone) else event
    if isinstance(event, RoomGone):
        kind = "room_gone"
    else:
        kind = "room_updated" if event.updated else "room_seen"
    record = room.record
    return {
        "event": kind,
        "time": now,
        "room_id": record.room_id.hex,
        "name": record.name,
        "topic": record.topic,
        "listeners": record.listeners,
        "fingerprint": record.fingerprint,
        "key": record.host_key.raw.hex(),
        "control": list(room.control_addresses),
        "media": list(room.media_addresses),
        "open": record.open_invite is not None,
        "instance": room.instance,
    }


def numbered(rooms: Sequence[RoomSeen]) -> str:
    """The rooms as a numbered list, for choosing one."""
    return "\n".join(f"{index:>3}. {describe(room)}" for index, room in enumerate(rooms, 1))


def table(rooms: Iterable[RoomSeen]) -> str:
    ordered = _ordered(rooms)
    if not ordered:
        return "No rooms seen on the LAN yet.  (Ctrl-C to stop)"
    heading = f"{len(ordered)} room{'s' if len(ordered) != 1 else ''} on the LAN  (Ctrl-C to stop)"
    return heading + "\n" + numbered(ordered)


def pick(rooms: Sequence[RoomSeen], choice: str) -> RoomSeen:
    """The room ``choice`` names: its number in :func:`numbered`, or its name.

    A name may also be an unambiguous prefix (ignoring case); a name several rooms
    share must be told apart by number.
    """
    text = choice.strip()
    if text.isdigit():
        index = int(text)
        if 1 <= index <= len(rooms):
            return rooms[index - 1]
        raise MitalkError(f"there is no room number {index}; choose 1 to {len(rooms)}")
    folded = text.casefold()
    for matches in (
        [r for r in rooms if r.record.name.casefold() == folded],
        [r for r in rooms if r.record.name.casefold().startswith(folded)],
    ):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise MitalkError(
                f"{len(matches)} rooms are called {text!r}; choose one by number instead"
            )
    raise MitalkError(f"no room on the LAN is called {text!r}")


async def browse_for(seconds: float, settings: MdnsSettings) -> list[RoomSeen]:
    """The rooms seen within ``seconds``, by name (one per DNS-SD instance)."""
    async with (
        open_zeroconf(settings.interfaces, env=settings.env, create=settings.create) as zc,
        open_room_browser(zc) as browser,
    ):
        await trio.sleep(seconds)
        return _ordered(browser.rooms.values())


async def watch(
    out: TextIO,
    settings: MdnsSettings,
    *,
    seconds: float = math.inf,
    as_json: bool = False,
    redraw: bool = False,
) -> int:
    """Print the rooms as they appear and vanish, for ``seconds`` (or until cancelled).

    Returns how many malformed records were ignored.
    """
    async with (
        open_zeroconf(settings.interfaces, env=settings.env, create=settings.create) as zc,
        open_room_browser(zc) as browser,
    ):
        if redraw:
            out.write(CLEAR_SCREEN + table(()) + "\n")
            out.flush()
        with trio.move_on_after(seconds):
            async for event in browser.events:
                if as_json:
                    out.write(json.dumps(event_record(event, time.time())) + "\n")
                elif redraw:
                    out.write(CLEAR_SCREEN + table(browser.rooms.values()) + "\n")
                else:
                    out.write(change_line(event) + "\n")
                out.flush()
        return browser.statistics().records_ignored
