"""Console lines to room operations: ``/kick Ana`` becomes ``Kick(<Ana's key>)``.

Typed lines, script files and piped stdin share this parser, so a script
fails with the same one-line message a person would see.  Permissions are not
checked here: the core refuses a forbidden operation with its own
:class:`~mitalk_p2p.core.rejection.Rejected`, and one rulebook is enough.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Callable
from typing import TypeAlias

import attrs

from ..core.errors import LocalProtocolError
from ..core.identity import PublicKey
from ..core.ops import (
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
from ..core.room_state import Member, RoomState
from .status import clean, clean_name, compact_fingerprint, fingerprint_tags, fit, member_label

MIN_SELECTOR_LENGTH = 4
"""Characters an ``@fingerprint`` selector needs; fewer would match half the room."""
LISTED_CANDIDATES = 5
MAX_COMPLETIONS = 50
SUGGESTION_LIMIT = 5000
"""Rooms larger than this get no "did you mean" for a mistyped name (it scans them all)."""
QUOTED_COLUMNS = 40


class ConsoleError(LocalProtocolError):
    """A console line that cannot be carried out.  The message is one line, for a person."""


class QueryKind(enum.Enum):
    """Something the console answers from local state, without asking the room."""

    WHO = "who"
    STATS = "stats"
    TREE = "tree"
    HELP = "help"


@attrs.frozen
class RoomAction:
    """Send ``op`` to the room; ``description`` says what it does, e.g. ``kick Ana (@K3QF)``."""

    op: Op
    description: str


@attrs.frozen
class LocalQuery:
    kind: QueryKind


@attrs.frozen
class LeaveRoom:
    """Leave the room (the driver departs politely, then stops)."""


@attrs.frozen
class NoCommand:
    """A blank line or a ``#`` comment: nothing to do."""


ConsoleCommand: TypeAlias = RoomAction | LocalQuery | LeaveRoom | NoCommand


# --- the command table --------------------------------------------------------------


@attrs.frozen
class _Plain:
    """A command without an argument."""

    usage: str
    summary: str
    result: ConsoleCommand
    needs_room: bool = True


@attrs.frozen
class _Targeted:
    """A command naming a member.

    ``on_self`` is what it means aimed at yourself, or with no name at all
    (``/mute`` turns your own mic off); ``refuse_self`` refuses that instead.
    """

    usage: str
    summary: str
    make: Callable[[PublicKey], Op]
    describe: str
    on_self: RoomAction | None = None
    refuse_self: str | None = None


_COMMANDS: dict[str, _Plain | _Targeted] = {
    "/hand": _Plain(
        "/hand", "raise your hand to ask for the stage", RoomAction(RaiseHand(), "raise your hand")
    ),
    "/lower": _Plain("/lower", "lower your hand", RoomAction(LowerHand(), "lower your hand")),
    "/accept": _Plain(
        "/accept",
        "accept an invitation to the stage",
        RoomAction(AcceptStage(), "accept the stage"),
    ),
    "/decline": _Plain(
        "/decline",
        "decline an invitation to the stage",
        RoomAction(DeclineStage(), "decline the stage"),
    ),
    "/stage": _Targeted(
        "/stage NAME", "invite a listener to the stage", InviteToStage, "invite {} to the stage"
    ),
    "/audience": _Targeted(
        "/audience [NAME]",
        "move a speaker to the audience; alone: step down yourself",
        MoveToAudience,
        "move {} to the audience",
        on_self=RoomAction(StepDown(), "step down from the stage"),
    ),
    "/mute": _Targeted(
        "/mute [NAME]",
        "mute a speaker; alone: turn your own mic off",
        lambda key: Mute(key, True),
        "mute {}",
        on_self=RoomAction(SelfMute(True), "turn your mic off"),
    ),
    "/unmute": _Targeted(
        "/unmute [NAME]",
        "unmute a speaker; alone: turn your own mic on",
        lambda key: Mute(key, False),
        "unmute {}",
        on_self=RoomAction(SelfMute(False), "turn your mic on"),
    ),
    "/kick": _Targeted(
        "/kick NAME",
        "remove a member and ban them from the room",
        Kick,
        "kick {}",
        refuse_self="you cannot kick yourself; /leave leaves the room",
    ),
    "/promote": _Targeted("/promote NAME", "make a member a co-moderator", Promote, "promote {}"),
    "/demote": _Targeted("/demote NAME", "make a co-moderator a speaker", Demote, "demote {}"),
    "/who": _Plain("/who", "list the members", LocalQuery(QueryKind.WHO)),
    "/stats": _Plain(
        "/stats", "show link and audio statistics", LocalQuery(QueryKind.STATS), needs_room=False
    ),
    "/tree": _Plain("/tree", "show the audio relay tree", LocalQuery(QueryKind.TREE)),
    "/help": _Plain("/help", "show this list", LocalQuery(QueryKind.HELP), needs_room=False),
    "/leave": _Plain("/leave, /quit", "leave the room", LeaveRoom(), needs_room=False),
}
_ALIASES = {"/quit": "/leave"}
COMMAND_NAMES: tuple[str, ...] = tuple(sorted((*_COMMANDS, *_ALIASES)))


def _help_text() -> str:
    width = max(len(spec.usage) for spec in _COMMANDS.values())
    lines = [f"  {spec.usage.ljust(width)}  {spec.summary}" for spec in _COMMANDS.values()]
    return "\n".join(
        [
            "Commands:",
            *lines,
            "NAME is a display name, a unique start of one, or @fingerprint (the ID in /who).",
            "Lines starting with # are comments.",
        ]
    )


HELP_TEXT = _help_text()


# --- member names --------------------------------------------------------------------


def _fold(text: str) -> str:
    return clean(text).casefold()


def _quoted(text: str) -> str:
    return "“" + fit(clean(text), QUOTED_COLUMNS) + "”"


def _ambiguous(what: str, matches: list[Member], state: RoomState) -> ConsoleError:
    shown = sorted(matches, key=lambda m: (_fold(m.name), m.joined_seq))[:LISTED_CANDIDATES]
    tags = fingerprint_tags((m.key for m in shown), state.members)
    listed = ", ".join(f"{clean_name(m.name)} {tags[m.key]}" for m in shown)
    more = len(matches) - len(shown)
    if more:
        listed += f" and {more} more"
    example = tags[shown[0].key]
    return ConsoleError(
        f"{what} matches {len(matches)} members: {listed}; pick one by fingerprint, e.g. {example}"
    )


def _by_fingerprint(selector: str, state: RoomState) -> Member:
    compact = "".join(selector.replace("-", "").split())
    if len(compact) < MIN_SELECTOR_LENGTH:
        raise ConsoleError(
            f"@{fit(clean(compact), 10)} is too short: give at least {MIN_SELECTOR_LENGTH}"
            " characters of the fingerprint (the ID column of /who)"
        )
    upper, lower = compact.upper(), compact.lower()
    found = [
        m
        for m in state.members.values()
        if compact_fingerprint(m.key).startswith(upper) or m.key.raw.hex().startswith(lower)
    ]
    if len(found) == 1:
        return found[0]
    what = "@" + fit(clean(compact), QUOTED_COLUMNS)
    if not found:
        raise ConsoleError(f"nobody in the room has fingerprint {what}; /who lists the members")
    raise _ambiguous(what, found, state)


def _no_such_member(wanted: str, state: RoomState) -> ConsoleError:
    hint = "/who lists the members"
    if len(state.members) <= SUGGESTION_LIMIT:
        names = {_fold(m.name): clean_name(m.name) for m in state.members.values()}
        close = difflib.get_close_matches(_fold(wanted), names, n=1)
        if close:
            hint = f"did you mean {names[close[0]]}?"
    return ConsoleError(f"no member named {_quoted(wanted)}; {hint}")


def resolve_member(text: str, state: RoomState) -> Member:
    """The one member ``text`` names.

    Tried in order: ``@`` plus a fingerprint prefix (base32 as shown by
    ``/who``, dashes optional, or hex of the public key); the exact display
    name, ignoring case; the start of exactly one display name.  Raises
    :class:`ConsoleError` when nobody or more than one member fits.
    """
    wanted = text.strip()
    if wanted.startswith("@"):
        return _by_fingerprint(wanted[1:], state)
    folded = _fold(wanted)
    if not folded:
        raise _no_such_member(wanted, state)
    members = state.members.values()
    exact = [m for m in members if _fold(m.name) == folded]
    if len(exact) == 1:
        return exact[0]
    if exact:
        raise _ambiguous(_quoted(wanted), exact, state)
    starting = [m for m in members if _fold(m.name).startswith(folded)]
    if len(starting) == 1:
        return starting[0]
    if starting:
        raise _ambiguous(_quoted(wanted), starting, state)
    raise _no_such_member(wanted, state)


# --- parsing -------------------------------------------------------------------------


def _unknown(word: str) -> ConsoleError:
    close = difflib.get_close_matches(word.casefold(), COMMAND_NAMES, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return ConsoleError(f"unknown command {fit(clean(word), 20)}; {hint}type /help for the list")


def _lookup(word: str) -> tuple[str, _Plain | _Targeted] | None:
    name = word.casefold()
    name = _ALIASES.get(name, name)
    spec = _COMMANDS.get(name)
    return (name, spec) if spec is not None else None


def _not_in_room(name: str) -> ConsoleError:
    return ConsoleError(f"not in a room yet; {name} works once you have joined")


def _split(text: str) -> tuple[str, str]:
    """The command word and the rest of the line, stripped."""
    parts = text.split(maxsplit=1)
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def parse_command(line: str, state: RoomState | None, me: PublicKey) -> ConsoleCommand:
    """What ``line`` asks for, or :class:`ConsoleError` with a one-line reason.

    ``state`` is the room as this peer sees it (None before joining) and
    ``me`` this peer's key.  A name is the whole rest of the line, spaces
    included.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return NoCommand()
    if not text.startswith("/"):
        raise ConsoleError("lines must start with /; type /help")
    word, rest = _split(text)
    found = _lookup(word)
    if found is None:
        raise _unknown(word)
    name, spec = found
    if isinstance(spec, _Plain):
        if rest:
            raise ConsoleError(f"{name} takes no argument, but got {_quoted(rest)}")
        if spec.needs_room and state is None:
            raise _not_in_room(name)
        return spec.result
    if state is None:
        raise _not_in_room(name)
    if not rest:
        if spec.on_self is not None:
            return spec.on_self
        raise ConsoleError(f"{name} needs a member: {spec.usage} or {name} @fingerprint")
    target = resolve_member(rest, state)
    if target.key == me:
        if spec.on_self is not None:
            return spec.on_self
        if spec.refuse_self is not None:
            raise ConsoleError(spec.refuse_self)
    return RoomAction(spec.make(target.key), spec.describe.format(member_label(target)))


# --- completion --------------------------------------------------------------------------


def complete(prefix_line: str, state: RoomState | None) -> list[str]:
    """Whole-line completions of what has been typed so far.

    Completes the command word, then a member's display name (or, after
    ``@``, fingerprint).  Whole lines rather than words, because names contain
    spaces.  At most :data:`MAX_COMPLETIONS`, sorted.
    """
    text = prefix_line.lstrip()
    if not text.startswith("/"):
        return []
    word, partial = _split(text)
    if word == text:
        typed = word.casefold()
        return [name for name in COMMAND_NAMES if name.startswith(typed)]
    found = _lookup(word)
    if found is None or not isinstance(found[1], _Targeted) or state is None:
        return []
    name = found[0]
    if partial.startswith("@"):
        wanted = partial[1:].replace("-", "").upper()
        choices = {"@" + compact_fingerprint(key) for key in state.members}
        picked = sorted(c for c in choices if c[1:].startswith(wanted))
    else:
        folded = _fold(partial)
        names = {
            clean_name(m.name) for m in state.members.values() if _fold(m.name).startswith(folded)
        }
        picked = sorted(names, key=lambda n: (n.casefold(), n))
    return [f"{name} {choice}" for choice in picked[:MAX_COMPLETIONS]]
