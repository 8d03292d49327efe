"""Room operations: the typed payloads of signed requests.

Each operation is a frozen record with a one-byte wire tag.  Member operations
are authored by the member they concern (raise a hand, accept the stage, leave).
Moderation operations are authored by a moderator and name a ``target``.
Who may author what is decided in :mod:`room_state`, not here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TypeAlias

import attrs

from .errors import WireError
from .identity import PUBLIC_KEY_SIZE, PublicKey
from .roles import Role
from .wire import Reader, Writer

NONCE_SIZE = 16
MAX_NAME_BYTES = 100
MAX_TOPIC_BYTES = 300
MAX_SUCCESSORS = 8


class LeaveReason(enum.IntEnum):
    LEFT = 0
    SILENT = 1


# --- member operations (author acts on itself) -------------------------------


@attrs.frozen
class Leave:
    pass


@attrs.frozen
class RaiseHand:
    pass


@attrs.frozen
class LowerHand:
    pass


@attrs.frozen
class AcceptStage:
    pass


@attrs.frozen
class DeclineStage:
    pass


@attrs.frozen
class StepDown:
    """A speaker returns to the audience."""


@attrs.frozen
class SelfMute:
    muted: bool


# --- moderation operations ------------------------------------------------


@attrs.frozen
class Admit:
    """A peer joins.  Sequenced only by the host, after it checked the invite."""

    member: PublicKey
    name: str
    role: Role
    invite_nonce: bytes  # all zeros for the creator and for members merged after a split


@attrs.frozen
class InviteToStage:
    target: PublicKey


@attrs.frozen
class MoveToAudience:
    target: PublicKey


@attrs.frozen
class Mute:
    target: PublicKey
    muted: bool


@attrs.frozen
class Kick:
    target: PublicKey


@attrs.frozen
class Promote:
    target: PublicKey


@attrs.frozen
class Demote:
    target: PublicKey


@attrs.frozen
class SetInfo:
    name: str
    topic: str


@attrs.frozen
class RevokeInvite:
    nonce: bytes


@attrs.frozen
class SetSuccessors:
    successors: tuple[PublicKey, ...]


@attrs.frozen
class TakeOver:
    """The first entry of a new term: the claimant becomes host."""

    previous_host: PublicKey | None
    reason: LeaveReason


Op: TypeAlias = (
    Leave
    | RaiseHand
    | LowerHand
    | AcceptStage
    | DeclineStage
    | StepDown
    | SelfMute
    | Admit
    | InviteToStage
    | MoveToAudience
    | Mute
    | Kick
    | Promote
    | Demote
    | SetInfo
    | RevokeInvite
    | SetSuccessors
    | TakeOver
)

MEMBER_OPS = (Leave, RaiseHand, LowerHand, AcceptStage, DeclineStage, StepDown, SelfMute)


def _key(reader: Reader) -> PublicKey:
    return PublicKey(reader.fixed(PUBLIC_KEY_SIZE))


def _nonce(reader: Reader) -> bytes:
    return reader.fixed(NONCE_SIZE)


def _name(reader: Reader) -> str:
    return reader.text(MAX_NAME_BYTES)


_DECODERS: dict[int, Callable[[Reader], Op]] = {
    1: lambda r: Leave(),
    2: lambda r: RaiseHand(),
    3: lambda r: LowerHand(),
    4: lambda r: AcceptStage(),
    5: lambda r: DeclineStage(),
    6: lambda r: StepDown(),
    7: lambda r: SelfMute(r.boolean()),
    20: lambda r: Admit(_key(r), _name(r), Role.from_wire(r.u8()), _nonce(r)),
    21: lambda r: InviteToStage(_key(r)),
    22: lambda r: MoveToAudience(_key(r)),
    23: lambda r: Mute(_key(r), r.boolean()),
    24: lambda r: Kick(_key(r)),
    25: lambda r: Promote(_key(r)),
    26: lambda r: Demote(_key(r)),
    27: lambda r: SetInfo(_name(r), r.text(MAX_TOPIC_BYTES)),
    28: lambda r: RevokeInvite(_nonce(r)),
    29: lambda r: SetSuccessors(_successor_list(r)),
    30: lambda r: TakeOver(_optional_key(r), _leave_reason(r.u8())),
}

_TAGS: dict[type, int] = {
    Leave: 1,
    RaiseHand: 2,
    LowerHand: 3,
    AcceptStage: 4,
    DeclineStage: 5,
    StepDown: 6,
    SelfMute: 7,
    Admit: 20,
    InviteToStage: 21,
    MoveToAudience: 22,
    Mute: 23,
    Kick: 24,
    Promote: 25,
    Demote: 26,
    SetInfo: 27,
    RevokeInvite: 28,
    SetSuccessors: 29,
    TakeOver: 30,
}


def _successor_list(reader: Reader) -> tuple[PublicKey, ...]:
    count = reader.u8()
    if count > MAX_SUCCESSORS:
        raise WireError(f"successor list of {count} exceeds {MAX_SUCCESSORS}")
    return tuple(_key(reader) for _ in range(count))


def _optional_key(reader: Reader) -> PublicKey | None:
    return _key(reader) if reader.boolean() else None


def _leave_reason(value: int) -> LeaveReason:
    try:
        return LeaveReason(value)
    except ValueError:
        raise WireError(f"unknown leave reason {value}") from None


def encode_op(op: Op, writer: Writer) -> None:
    writer.u8(_TAGS[type(op)])
    match op:
        case SelfMute(muted=muted):
            writer.boolean(muted)
        case Admit():
            writer.fixed(op.member.raw, PUBLIC_KEY_SIZE).text(op.name).u8(op.role)
            writer.fixed(op.invite_nonce, NONCE_SIZE)
        case InviteToStage(target=t) | MoveToAudience(target=t) | Kick(target=t):
            writer.fixed(t.raw, PUBLIC_KEY_SIZE)
        case Promote(target=t) | Demote(target=t):
            writer.fixed(t.raw, PUBLIC_KEY_SIZE)
        case Mute(target=t, muted=muted):
            writer.fixed(t.raw, PUBLIC_KEY_SIZE).boolean(muted)
        case SetInfo(name=name, topic=topic):
            writer.text(name).text(topic)
        case RevokeInvite(nonce=nonce):
            writer.fixed(nonce, NONCE_SIZE)
        case SetSuccessors(successors=successors):
            writer.u8(len(successors))
            for key in successors:
                writer.fixed(key.raw, PUBLIC_KEY_SIZE)
        case TakeOver(previous_host=previous, reason=reason):
            writer.boolean(previous is not None)
            if previous is not None:
                writer.fixed(previous.raw, PUBLIC_KEY_SIZE)
            writer.u8(reason)
        case _:
            pass


def decode_op(reader: Reader) -> Op:
    tag = reader.u8()
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise WireError(f"unknown room operation tag {tag}")
    return decoder(reader)


def describe_op(op: Op) -> str:
    """A short human label, e.g. ``kick`` or ``raise-hand``."""
    name = type(op).__name__
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")
