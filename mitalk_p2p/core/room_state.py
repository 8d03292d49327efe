"""The replicated room state and the rules that change it.

:class:`RoomState` is plain data plus :meth:`RoomState.apply`, which checks an
operation's authority and effect and then mutates.  Every replica applies the
same log of operations in the same order, so every replica computes the same
:meth:`RoomState.digest`.
"""

from __future__ import annotations

import bisect
import hashlib
import struct

import attrs

from .errors import WireError
from .identity import PUBLIC_KEY_SIZE, PublicKey
from .ids import ROOM_ID_SIZE, RoomId
from .ops import (
    MAX_NAME_BYTES,
    MAX_SUCCESSORS,
    MAX_TOPIC_BYTES,
    NONCE_SIZE,
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
from .rejection import Rejected, RejectReason
from .roles import Role
from .term import Term
from .wire import Reader, Writer

STATE_FORMAT_VERSION = 1
MAX_MEMBERS = 100_000
MAX_BANNED = 100_000
MAX_REVOKED = 100_000
ZERO_NONCE = bytes(NONCE_SIZE)


def _forget_encoding(member: Member, _attribute: object, value: object) -> object:
    object.__setattr__(member, "_encoded", None)
    return value


@attrs.define(on_setattr=_forget_encoding)
class Member:
    key: PublicKey
    name: str
    role: Role
    joined_seq: int
    hand_seq: int = 0  # log position of the raise; 0 when the hand is down
    stage_invited: bool = False
    muted: bool = False  # by a moderator
    self_muted: bool = False
    last_counter: int = 0  # highest request counter applied from this member
    # The member's row in the canonical state encoding, dropped by any field change.
    _encoded: bytes | None = attrs.field(
        default=None, init=False, eq=False, repr=False, on_setattr=attrs.setters.NO_OP
    )

    def encoded(self) -> bytes:
        """This member's row of :meth:`RoomState.encode`, built once per change."""
        encoded = self._encoded
        if encoded is None:
            name = self.name.encode("utf-8")
            encoded = b"".join(
                (
                    self.key.raw,
                    _NAME_LENGTH.pack(len(name)),
                    name,
                    _MEMBER_FIELDS.pack(
                        self.role,
                        self.joined_seq,
                        self.hand_seq,
                        self.stage_invited,
                        self.muted,
                        self.self_muted,
                        self.last_counter,
                    ),
                )
            )
            object.__setattr__(self, "_encoded", encoded)
        return encoded

    @property
    def hand_raised(self) -> bool:
        return self.hand_seq != 0

    @property
    def audible(self) -> bool:
        return self.role.holds_floor and not self.muted and not self.self_muted


@attrs.define
class RoomState:
    room_id: RoomId
    name: str
    topic: str
    term: Term
    host: PublicKey | None
    seq: int = 0  # the state's version: the log position of the last applied entry
    members: dict[PublicKey, Member] = attrs.Factory(dict)
    banned: set[PublicKey] = attrs.Factory(set)
    revoked: set[bytes] = attrs.Factory(set)
    invite_uses: dict[bytes, int] = attrs.Factory(dict)
    successors: tuple[PublicKey, ...] = ()
    _digest_cache: tuple[tuple[int, Term], bytes] | None = attrs.field(
        default=None, eq=False, repr=False
    )
    _roster_changes: list[PublicKey] = attrs.field(factory=list, eq=False, repr=False)
    _roster_base: int = attrs.field(default=0, eq=False, repr=False)
    _sorted_members: tuple[tuple[int, int], list[Member]] | None = attrs.field(
        default=None, eq=False, repr=False
    )

    # --- roster changes ---------------------------------------------------------

    @property
    def roster_version(self) -> int:
        """How many membership changes (joins, removals, re-indexings) this object went through."""
        return self._roster_base + len(self._roster_changes)

    def roster_changes_since(self, version: int) -> list[PublicKey] | None:
        """Members whose presence or index changed since ``version``; ``None`` if no longer known.

        Lets a peer follow a large roster in time proportional to the change, not the room.
        """
        if version < self._roster_base or version > self.roster_version:
            return None
        return self._roster_changes[version - self._roster_base :]

    def _roster_touched(self, key: PublicKey) -> None:
        self._roster_changes.append(key)
        if len(self._roster_changes) > MAX_ROSTER_CHANGES:
            dropped = len(self._roster_changes) // 2
            del self._roster_changes[:dropped]
            self._roster_base += dropped

    @classmethod
    def create(
        cls, room_id: RoomId, name: str, topic: str, host: PublicKey, host_name: str
    ) -> RoomState:
        state = cls(room_id=room_id, name=name, topic=topic, term=Term.first(), host=host)
        state.members[host] = Member(host, host_name, Role.HOST, joined_seq=0)
        return state

    # --- queries -------------------------------------------------------------

    @property
    def version(self) -> int:
        return self.seq

    def role_of(self, key: PublicKey) -> Role | None:
        member = self.members.get(key)
        return member.role if member else None

    def hand_queue(self) -> list[Member]:
        """Raised hands, oldest first: the order a moderator should call on them."""
        raised = [m for m in self.members.values() if m.hand_raised]
        return sorted(raised, key=lambda m: m.hand_seq)

    def speakers(self) -> list[Member]:
        return sorted(
            (m for m in self.members.values() if m.role.holds_floor), key=lambda m: m.joined_seq
        )

    def derive_successors(self) -> tuple[PublicKey, ...]:
        """Co-moderators first, then speakers, then listeners, each by join order."""
        others = [m for m in self.members.values() if m.key != self.host]
        others.sort(key=lambda m: (-int(m.role), m.joined_seq, m.key.raw))
        return tuple(m.key for m in others[:MAX_SUCCESSORS])

    def redacted_for(self, banned: PublicKey) -> RoomState:
        """What a banned peer may be told: who moderates, and that it is banned."""
        redacted = RoomState(
            room_id=self.room_id,
            name=self.name,
            topic=self.topic,
            term=self.term,
            host=self.host,
            seq=self.seq,
        )
        if self.host is not None and self.host in self.members:
            host = self.members[self.host]
            redacted.members[self.host] = Member(host.key, host.name, host.role, host.joined_seq)
        redacted.banned.add(banned)
        return redacted

    def successor_rank(self, key: PublicKey) -> int | None:
        try:
            return self.successors.index(key)
        except ValueError:
            return None

    # --- the rules -------------------------------------------------------------

    def check(self, author: PublicKey, op: Op) -> None:
        """Raise :class:`Rejected` unless ``author`` may perform ``op`` now."""
        actor = self.members.get(author)
        if actor is None:
            raise Rejected(RejectReason.NOT_MEMBER, "author is not a member of the room")
        _RULES[type(op)](self, actor, op)

    def apply(self, author: PublicKey, op: Op, seq: int) -> None:
        """Check and apply ``op`` as log entry ``seq``."""
        self.check(author, op)
        self.seq = seq
        actor = self.members[author]
        match op:
            case Leave():
                self._remove(author)
            case RaiseHand():
                actor.hand_seq = seq
            case LowerHand():
                actor.hand_seq = 0
            case AcceptStage():
                actor.role, actor.hand_seq, actor.stage_invited = Role.SPEAKER, 0, False
            case DeclineStage():
                actor.hand_seq, actor.stage_invited = 0, False
            case StepDown():
                self._to_audience(actor)
            case SelfMute(muted=muted):
                actor.self_muted = muted
            case Admit():
                self.members[op.member] = Member(op.member, op.name, op.role, joined_seq=seq)
                self._roster_touched(op.member)
                if op.invite_nonce != ZERO_NONCE:
                    self.invite_uses[op.invite_nonce] = self.invite_uses.get(op.invite_nonce, 0) + 1
            case InviteToStage(target=target):
                self.members[target].stage_invited = True
            case MoveToAudience(target=target):
                self._to_audience(self.members[target])
            case Mute(target=target, muted=muted):
                self.members[target].muted = muted
            case Kick(target=target):
                self._remove(target)
                self.banned.add(target)
            case Promote(target=target):
                member = self.members[target]
                member.role, member.hand_seq, member.stage_invited = Role.MODERATOR, 0, False
            case Demote(target=target):
                self.members[target].role = Role.SPEAKER
            case SetInfo(name=name, topic=topic):
                self.name, self.topic = name, topic
            case RevokeInvite(nonce=nonce):
                self.revoked.add(nonce)
            case SetSuccessors(successors=successors):
                self.successors = successors
            case TakeOver(previous_host=previous, reason=_):
                if previous is not None and previous in self.members:
                    # A replaced host rejoins the audience at the back of the succession line.
                    replaced = self.members[previous]
                    self._to_audience(replaced)
                    replaced.joined_seq = seq
                    self._roster_touched(previous)
                actor.role, actor.hand_seq, actor.stage_invited = Role.HOST, 0, False
                self.host = author
                self.successors = tuple(k for k in self.successors if k != author)

    def _to_audience(self, member: Member) -> None:
        member.role, member.muted, member.self_muted = Role.LISTENER, False, False
        member.stage_invited = False

    def _remove(self, key: PublicKey) -> None:
        del self.members[key]
        self._roster_touched(key)
        if key == self.host:
            self.host = None
        self.successors = tuple(k for k in self.successors if k != key)

    # --- encoding and digest -----------------------------------------------------

    def encode(self) -> bytes:
        """The canonical encoding: members, bans and revocations in sorted order."""
        w = Writer().u8(STATE_FORMAT_VERSION).fixed(self.room_id.raw, ROOM_ID_SIZE)
        w.text(self.name).text(self.topic)
        self.term.encode(w)
        w.boolean(self.host is not None)
        if self.host is not None:
            w.fixed(self.host.raw, PUBLIC_KEY_SIZE)
        w.u64(self.seq)
        w.u32(len(self.members))
        # The member table is most of a large room's state and is encoded for every
        # digest, so each row is cached on its member and the key order on the state.
        w.raw(b"".join([member.encoded() for member in self._members_in_key_order()]))
        # Bans, revocations and invite uses grow with the room too (one invite each
        # in a large event), so they are packed in one pass each.  Every element
        # was length-checked when it entered the state.
        w.u32(len(self.banned))
        w.raw(b"".join(sorted([key.raw for key in self.banned])))
        w.u32(len(self.revoked))
        w.raw(b"".join(sorted(self.revoked)))
        w.u32(len(self.invite_uses))
        w.raw(
            b"".join([nonce + _USES.pack(uses) for nonce, uses in sorted(self.invite_uses.items())])
        )
        w.u8(len(self.successors))
        for key in self.successors:
            w.fixed(key.raw, PUBLIC_KEY_SIZE)
        return w.getvalue()

    def _members_in_key_order(self) -> list[Member]:
        """Members sorted by key, kept up to date through the roster's change list.

        Every insertion or removal goes through ``_roster_touched`` (or a fresh
        decode, which starts without this cache), so the roster version and size
        together name one order.
        """
        version = (self.roster_version, len(self.members))
        cached = self._sorted_members
        if cached is not None and cached[0] == version:
            return cached[1]
        changes = self.roster_changes_since(cached[0][0]) if cached is not None else None
        if cached is None or changes is None or len(changes) > len(self.members) // 8:
            ordered = sorted(self.members.values(), key=_member_raw_key)
        else:
            ordered = cached[1]
            for key in set(changes):
                at = bisect.bisect_left(ordered, key.raw, key=_member_raw_key)
                if at < len(ordered) and ordered[at].key.raw == key.raw:
                    del ordered[at]
                member = self.members.get(key)
                if member is not None:
                    ordered.insert(at, member)
        self._sorted_members = (version, ordered)
        return ordered

    @classmethod
    def decode(cls, data: bytes) -> RoomState:
        r = Reader(data, "room state")
        version = r.u8()
        if version != STATE_FORMAT_VERSION:
            raise WireError(f"room state format {version} is not supported")
        room_id = RoomId(r.fixed(ROOM_ID_SIZE))
        name, topic = r.text(MAX_NAME_BYTES), r.text(MAX_TOPIC_BYTES)
        term = Term.decode(r)
        host = PublicKey(r.fixed(PUBLIC_KEY_SIZE)) if r.boolean() else None
        state = cls(room_id=room_id, name=name, topic=topic, term=term, host=host, seq=r.u64())
        for _ in range(_bounded(r, MAX_MEMBERS, "members")):
            key = PublicKey(r.fixed(PUBLIC_KEY_SIZE))
            name = r.text(MAX_NAME_BYTES)
            role, joined, hand, invited, muted, self_muted, counter = r.unpack(_MEMBER_ROW)
            if invited > 1 or muted > 1 or self_muted > 1:
                flags = (invited, muted, self_muted)
                raise WireError(f"room state: member flag byte in {flags} is neither 0 nor 1")
            member = Member(
                key,
                name,
                Role.from_wire(role),
                joined,
                hand,
                invited == 1,
                muted == 1,
                self_muted == 1,
                counter,
            )
            state.members[key] = member
        for _ in range(_bounded(r, MAX_BANNED, "bans")):
            state.banned.add(PublicKey(r.fixed(PUBLIC_KEY_SIZE)))
        for _ in range(_bounded(r, MAX_REVOKED, "revocations")):
            state.revoked.add(r.fixed(NONCE_SIZE))
        for _ in range(_bounded(r, MAX_REVOKED, "invite uses")):
            nonce = r.fixed(NONCE_SIZE)
            state.invite_uses[nonce] = r.u32()
        count = r.u8()
        if count > MAX_SUCCESSORS:
            raise WireError(f"successor list of {count} exceeds {MAX_SUCCESSORS}")
        state.successors = tuple(PublicKey(r.fixed(PUBLIC_KEY_SIZE)) for _ in range(count))
        r.finish()
        return state

    def digest(self) -> bytes:
        """BLAKE2b of :meth:`encode`, remembered per ``(seq, term)``.

        Every change to a state is a log entry (which moves ``seq``) or a new
        term, so the pair names one encoding; heartbeats compare digests every
        second, and re-encoding a large room each time would dominate.
        """
        version = (self.seq, self.term)
        if self._digest_cache is None or self._digest_cache[0] != version:
            value = hashlib.blake2b(self.encode(), digest_size=32, person=b"mitalk-state").digest()
            self._digest_cache = (version, value)
        return self._digest_cache[1]

    def copy(self) -> RoomState:
        return RoomState.decode(self.encode())


MAX_ROSTER_CHANGES = 4096
_NAME_LENGTH = struct.Struct(">H")
_MEMBER_FIELDS = struct.Struct(">BQQ???Q")
"""role u8, joined_seq u64, hand_seq u64, stage_invited, muted, self_muted, last_counter u64."""
_MEMBER_ROW = struct.Struct(">BQQBBBQ")
_USES = struct.Struct(">I")
"""The same row read back with the flags as bytes, so non-canonical values are refused."""


def _raw_key(key: PublicKey) -> bytes:
    return key.raw


def _member_raw_key(member: Member) -> bytes:
    return member.key.raw


def _bounded(reader: Reader, limit: int, what: str) -> int:
    count = reader.u32()
    if count > limit or count > reader.remaining:
        raise WireError(f"room state: implausible count of {what}: {count}")
    return count


# --- authority rules, one per operation -------------------------------------------


def _deny(reason: RejectReason, message: str) -> Rejected:
    return Rejected(reason, message)


def _target(state: RoomState, key: PublicKey) -> Member:
    member = state.members.get(key)
    if member is None:
        raise _deny(RejectReason.INVALID, "target is not a member of the room")
    return member


def _need(actor: Member, role: Role, what: str) -> None:
    if actor.role < role:
        raise _deny(RejectReason.UNAUTHORIZED, f"{what} needs the {role.label} role")


def _rule_leave(state: RoomState, actor: Member, op: Op) -> None:
    return None


def _rule_raise(state: RoomState, actor: Member, op: Op) -> None:
    if actor.role != Role.LISTENER:
        raise _deny(RejectReason.INVALID, "only listeners raise a hand")
    if actor.hand_raised:
        raise _deny(RejectReason.INVALID, "hand is already raised")


def _rule_lower(state: RoomState, actor: Member, op: Op) -> None:
    if not actor.hand_raised:
        raise _deny(RejectReason.INVALID, "hand is not raised")


def _rule_answer_stage(state: RoomState, actor: Member, op: Op) -> None:
    if not actor.stage_invited:
        raise _deny(RejectReason.INVALID, "there is no invitation to the stage to answer")


def _rule_step_down(state: RoomState, actor: Member, op: Op) -> None:
    if actor.role != Role.SPEAKER:
        raise _deny(RejectReason.INVALID, "only speakers step down")


def _rule_self_mute(state: RoomState, actor: Member, op: Op) -> None:
    if not actor.role.holds_floor:
        raise _deny(RejectReason.INVALID, "only members on stage can mute themselves")


def _rule_admit(state: RoomState, actor: Member, op: Op) -> None:
    assert isinstance(op, Admit)
    _need(actor, Role.HOST, "admitting a member")
    if op.member in state.members:
        raise _deny(RejectReason.INVALID, "peer is already a member")
    if op.member in state.banned:
        raise _deny(RejectReason.UNAUTHORIZED, "peer is banned from this room")
    if op.role >= Role.HOST:
        raise _deny(RejectReason.UNAUTHORIZED, "nobody is admitted as host")
    if len(state.members) >= MAX_MEMBERS:
        raise _deny(RejectReason.INVALID, "room is full")


def _rule_invite_to_stage(state: RoomState, actor: Member, op: Op) -> None:
    assert isinstance(op, InviteToStage)
    _need(actor, Role.MODERATOR, "inviting to the stage")
    target = _target(state, op.target)
    if target.role != Role.LISTENER:
        raise _deny(RejectReason.INVALID, "only listeners are invited to the stage")
    if target.stage_invited:
        raise _deny(RejectReason.INVALID, "already invited to the stage")


def _outranks(state: RoomState, actor: Member, target: Member, what: str) -> None:
    if target.role >= actor.role:
        raise _deny(
            RejectReason.UNAUTHORIZED, f"a {actor.role.label} cannot {what} a {target.role.label}"
        )


def _rule_to_audience(state: RoomState, actor: Member, op: Op) -> None:
    assert isinstance(op, MoveToAudience)
    _need(actor, Role.MODERATOR, "moving a speaker to the audience")
    target = _target(state, op.target)
    if target.role != Role.SPEAKER:
        raise _deny(RejectReason.INVALID, "only speakers are moved to the audience")


def _rule_mute(state: RoomState, actor: Member, op: Op) -> None:
    assert isinstance(op, Mute)
    _need(actor, Role.MODERATOR, "muting")
    target = _target(state, op.target)
    if not target.role.holds_floor:
        raise _deny(RejectReason.INVALID, "only members on stage can be muted")
    if target.key != actor.key:
        _outranks(state, actor, target, "mute")


def _rule_kick(state: RoomState, actor: Member, op: Op) -> None:
    assert isinstance(op, Kick)
    _need(actor, Role.MODERATOR, "kicking")
    _outranks(state, actor, _target(state, op.target), "kick")


def _rule_promote(state: RoomState, actor: Member, op: Op) -> None:
    assert isinstance(op, Promote)
    _need(actor, Role.HOST, "promoting a co-moderator")
    if _target(state, op.target).role >= Role.MODERATOR:
        raise _deny(RejectReason.INVALID, "already a moderator")


def _rule_demote(state: RoomState, actor: Member, op: Op) -> None:
    assert isinstance(op, Demote)
    _need(actor, Role.HOST, "demoting a co-moderator")
    if _target(state, op.target).role != Role.MODERATOR:
        raise _deny(RejectReason.INVALID, "only co-moderators are demoted")


def _rule_set_info(state: RoomState, actor: Member, op: Op) -> None:
    _need(actor, Role.MODERATOR, "changing the room name or topic")


def _rule_revoke(state: RoomState, actor: Member, op: Op) -> None:
    _need(actor, Role.MODERATOR, "revoking an invite")
    if len(state.revoked) >= MAX_REVOKED:
        raise _deny(RejectReason.INVALID, "revocation list is full")


def _rule_successors(state: RoomState, actor: Member, op: Op) -> None:
    assert isinstance(op, SetSuccessors)
    _need(actor, Role.HOST, "setting the successor list")
    if len(set(op.successors)) != len(op.successors):
        raise _deny(RejectReason.INVALID, "successor list has duplicates")
    for key in op.successors:
        if key not in state.members or key == state.host:
            raise _deny(RejectReason.INVALID, "successor list names a non-member or the host")


def _rule_take_over(state: RoomState, actor: Member, op: Op) -> None:
    assert isinstance(op, TakeOver)
    if op.reason not in (LeaveReason.LEFT, LeaveReason.SILENT):
        raise _deny(RejectReason.INVALID, "unknown takeover reason")


_RULES = {
    Leave: _rule_leave,
    RaiseHand: _rule_raise,
    LowerHand: _rule_lower,
    AcceptStage: _rule_answer_stage,
    DeclineStage: _rule_answer_stage,
    StepDown: _rule_step_down,
    SelfMute: _rule_self_mute,
    Admit: _rule_admit,
    InviteToStage: _rule_invite_to_stage,
    MoveToAudience: _rule_to_audience,
    Mute: _rule_mute,
    Kick: _rule_kick,
    Promote: _rule_promote,
    Demote: _rule_demote,
    SetInfo: _rule_set_info,
    RevokeInvite: _rule_revoke,
    SetSuccessors: _rule_successors,
    TakeOver: _rule_take_over,
}
