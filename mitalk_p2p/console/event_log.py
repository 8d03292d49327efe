"""Core events as JSON log records and as lines a person reads.

Each event is first reduced to *facts*: a stable event name (``hand_raised``,
``kicked``, ...) and named fields holding keys, strings and numbers.  The JSON
record and the human line are two renderings of the same facts, so a script
watching the log and a person watching the console never disagree.  Per-frame
media events (:class:`AudioOut`, :class:`FrameReceived`) are too frequent for
either and give None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias, assert_never

import attrs

from ..core.events import (
    Event,
    JoinedRoom,
    JoinRefusedEvent,
    LeftRoom,
    MembersMerged,
    RoomChanged,
    TermStarted,
)
from ..core.identity import PublicKey
from ..core.media_events import (
    AudioOut,
    FrameReceived,
    MediaEvent,
    ParentChanged,
    SenderKeyChanged,
)
from ..core.ops import (
    AcceptStage,
    Admit,
    DeclineStage,
    Demote,
    InviteToStage,
    Kick,
    Leave,
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
from ..core.room_state import RoomState
from .status import clean, clean_name

Names: TypeAlias = Callable[[PublicKey], str]
JsonValue: TypeAlias = str | int | float | bool | list["JsonValue"] | dict[str, "JsonValue"] | None
Fact: TypeAlias = PublicKey | tuple[PublicKey, ...] | str | int | None
Facts: TypeAlias = tuple[str, dict[str, Fact]]
"""An event name and its fields."""
ConsoleEvent: TypeAlias = Event | MediaEvent

LISTED_NAMES = 5
"""Names spelled out in a human line before the rest become a count."""


# --- events to facts -------------------------------------------------------------------

_OWN_OPS: dict[type, str] = {
    Leave: "left",
    RaiseHand: "hand_raised",
    LowerHand: "hand_lowered",
    AcceptStage: "stage_accepted",
    DeclineStage: "stage_declined",
    StepDown: "stepped_down",
}
"""Operations a member takes on itself, with nothing to report but who."""

_TARGET_OPS: dict[type, str] = {
    InviteToStage: "invited_to_stage",
    MoveToAudience: "moved_to_audience",
    Kick: "kicked",
    Promote: "promoted",
    Demote: "demoted",
}
"""Moderation operations whose only field is the member they act on."""


def _op_facts(op: Op) -> Facts:
    match op:
        case Leave() | RaiseHand() | LowerHand() | AcceptStage() | DeclineStage() | StepDown():
            return _OWN_OPS[type(op)], {}
        case (
            InviteToStage(target=t)
            | MoveToAudience(target=t)
            | Kick(target=t)
            | Promote(target=t)
            | Demote(target=t)
        ):
            return _TARGET_OPS[type(op)], {"target": t}
        case Mute(target=target, muted=muted):
            return ("muted" if muted else "unmuted"), {"target": target}
        case SelfMute(muted=muted):
            return ("mic_off" if muted else "mic_on"), {}
        case Admit(member=member, role=role):
            return "joined", {"member": member, "role": role.label}
        case SetInfo(name=name, topic=topic):
            return "room_info_changed", {"room_name": name, "topic": topic}
        case RevokeInvite(nonce=nonce):
            return "invite_revoked", {"invite": nonce.hex()}
        case SetSuccessors(successors=successors):
            return "successors_set", {"successors": successors}
        case TakeOver(previous_host=previous, reason=reason):
            return "took_over", {"previous_host": previous, "reason": reason.name.lower()}
        case _:
            assert_never(op)


def event_facts(event: ConsoleEvent) -> Facts | None:
    """The name and fields of ``event``; None for per-frame media events."""
    match event:
        case RoomChanged(seq=seq, author=author, op=op):
            name, fields = _op_facts(op)
            return name, {"seq": seq, "actor": author, **fields}
        case JoinedRoom(term=term, host=host):
            return "entered_room", {"term": str(term), "host": host}
        case JoinRefusedEvent(problem=problem, message=message):
            return "join_refused", {"problem": problem, "message": message}
        case LeftRoom(reason=reason):
            return "left_room", {"reason": reason}
        case TermStarted(term=term, host=host):
            return "term_started", {"term": str(term), "host": host}
        case MembersMerged(from_term=term, members=members):
            return "members_merged", {"from_term": str(term), "members": members}
        case ParentChanged(parent=parent, reason=reason):
            return "parent_changed", {"parent": parent, "reason": reason}
        case SenderKeyChanged(generation=generation, reason=reason):
            return "sender_key_changed", {"generation": str(generation), "reason": reason}
        case AudioOut() | FrameReceived():
            return None
        case _:
            assert_never(event)


# --- facts to JSON -----------------------------------------------------------------------


def _person(key: PublicKey, names: Names) -> JsonValue:
    return {"name": names(key), "fp": key.short}


def _json_fact(value: Fact, names: Names) -> JsonValue:
    if isinstance(value, PublicKey):
        return _person(value, names)
    if isinstance(value, tuple):
        return [_person(key, names) for key in value]
    return value


def event_to_json(event: ConsoleEvent, names: Names, now: float) -> dict[str, JsonValue] | None:
    """A ``json.dumps``-able record: ``event``, ``time`` (``now``), then the fields.

    A member appears as ``{"name": ..., "fp": <short fingerprint>}``.
    """
    facts = event_facts(event)
    if facts is None:
        return None
    name, fields = facts
    record: dict[str, JsonValue] = {"event": name, "time": now}
    record.update((key, _json_fact(value, names)) for key, value in fields.items())
    return record


# --- facts to a line ------------------------------------------------------------------------

_LINES: dict[str, str | None] = {
    "joined": "{member} joined as {role}",
    "left": "{actor} left",
    "hand_raised": "{actor} raised a hand",
    "hand_lowered": "{actor} lowered their hand",
    "stage_accepted": "{actor} joined the stage",
    "stage_declined": "{actor} declined the stage",
    "stepped_down": "{actor} stepped down from the stage",
    "mic_off": "{actor} turned their mic off",
    "mic_on": "{actor} turned their mic on",
    "invited_to_stage": "{target} was invited to the stage by {actor}",
    "moved_to_audience": "{target} was moved to the audience by {actor}",
    "muted": "{target} was muted by {actor}",
    "unmuted": "{target} was unmuted by {actor}",
    "kicked": "{target} was removed from the room by {actor}",
    "promoted": "{target} was made a co-moderator by {actor}",
    "demoted": "{target} was made a speaker again by {actor}",
    "room_info_changed": "{actor} set the room name to “{room_name}” and the topic to “{topic}”",
    "invite_revoked": "{actor} revoked an invite",
    "successors_set": None,
    "took_over/left": "{actor} took over as host after {previous_host} left",
    "took_over/silent": "{actor} took over as host after {previous_host} went silent",
    "entered_room": "you are in the room; {host} is the host",
    "join_refused": "could not join ({problem}): {message}",
    "left_room/left": "you left the room",
    "left_room/kicked": "you were removed from the room",
    "left_room/dropped": "you are no longer in the room (the new host's roster lacks you)",
    "left_room": "you are no longer in the room ({reason})",
    "term_started": "{host} is now the host (term {term})",
    "members_merged": "after a split healed, these rejoined from term {from_term}: {members}",
    "parent_changed/assigned": None,
    "parent_changed/silent": "your audio relay went silent; now listening through {parent}",
    "parent_changed/corrupt": "your audio relay sent bad frames; now listening through {parent}",
    "parent_changed/detached": (
        "your audio relay had lost its way to the host; now listening through {parent}"
    ),
    "parent_changed": "your audio relay changed to {parent} ({reason})",
    "sender_key_changed": None,
}
"""Line templates by event name; ``name/reason`` entries win over the plain name.
None means the event is routine and not worth a line."""

_NOBODY: dict[str, str] = {"previous_host": "the previous host", "parent": "nobody yet"}


def _text_fact(field: str, value: Fact, names: Names) -> str:
    if isinstance(value, PublicKey):
        return clean_name(names(value))
    if isinstance(value, tuple):
        shown = [clean_name(names(key)) for key in value[:LISTED_NAMES]]
        more = len(value) - len(shown)
        return ", ".join(shown) + (f" and {more} more" if more else "") if value else "nobody"
    if value is None:
        return _NOBODY.get(field, "nobody")
    return clean(str(value))


def _template(name: str, fields: dict[str, Fact]) -> str | None:
    specific = f"{name}/{fields.get('reason')}"
    return _LINES[specific] if specific in _LINES else _LINES.get(name)


def describe_event(event: ConsoleEvent, names: Names) -> str | None:
    """A one-line account of ``event`` for the console, e.g. ``Ana raised a hand``.

    None for events a person need not see (media frames, key rotations,
    routine relay assignments, the automatic successor list).
    """
    facts = event_facts(event)
    if facts is None:
        return None
    name, fields = facts
    template = _template(name, fields)
    if template is None:
        return None
    texts = {field: _text_fact(field, value, names) for field, value in fields.items()}
    return template.format(**texts)


# --- names that outlive membership -------------------------------------------------------


@attrs.define
class NameBook:
    """Display names by key, kept after a member leaves; usable as ``names``.

    An event about a departure (leave, kick) is reported after the member was
    removed from the room state, so a lookup in the state alone would have
    lost the name by the time the event is printed.  Unknown keys show as
    ``@`` plus their short fingerprint.
    """

    _names: dict[PublicKey, str] = attrs.field(factory=dict, init=False)
    _state: RoomState | None = attrs.field(default=None, init=False)
    _version: int = attrs.field(default=0, init=False)

    def learn(self, state: RoomState) -> None:
        """Record the names in ``state``; only the roster changes when it is the same state
        object as last time, which keeps this cheap in a large room."""
        changed = state.roster_changes_since(self._version) if state is self._state else None
        keys = state.members.keys() if changed is None else changed
        for key in keys:
            member = state.members.get(key)
            if member is not None:
                self._names[key] = member.name
        self._state, self._version = state, state.roster_version

    def observe(self, event: ConsoleEvent) -> None:
        """Record a name carried by ``event`` (an admission names the newcomer)."""
        if isinstance(event, RoomChanged) and isinstance(event.op, Admit):
            self._names[event.op.member] = event.op.name

    def __call__(self, key: PublicKey) -> str:
        return self._names.get(key) or f"@{key.short}"
