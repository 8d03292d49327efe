"""One peer's replica of a room: moderation log, heartbeats, succession, resync.

A sans-I/O state machine in the style of h11 and aioquic.  Drivers feed it
control messages (``receive``), timer ticks (``handle_timer``) and local user
actions (``act``), always with ``now``; they collect what it wants sent
(``outbound``) and what happened (``events``), and ask when to wake it next
(``next_deadline``).

The host of the current term is the room's single writer: members send signed
requests to it, it sequences them into signed log entries, and every replica
applies the same entries in the same order.  Everything a replica receives is
checked (signature, room, term, order, authority) and every refusal is counted
in :meth:`RoomReplica.statistics`.  Nothing a remote peer sends raises out of
:meth:`RoomReplica.receive`.

Succession.  A host that leaves with a signed leave is replaced at once:
successor *k* of the signed successor list claims after k×Δ.  A host that goes
silent is replaced only with a **pre-vote** (Raft's PreVote, for the same
"disruptive rejoining server" problem): when successor *k*'s silence timer
fires it does not claim but asks every member it knows whether they, too, have
heard nothing from the host for ``host_timeout``.  A member grants only then
(it holds the request until its own silence reaches the timeout, and drops it
if the host speaks first), and only to a member whose rank the request proves
with the host's signed successor list.  The successor claims on its first grant
from another member, and without one it asks again with backoff, for as long as
the silence lasts.  So a successor cut off alone never claims: when its network
comes back the room still has its host, at the same term.  One grant is enough,
not a majority: the design keeps a moderator on each side of a split and heals
to one host by the term order, so the pre-vote only has to tell "the host is
gone" from "I am cut off".  The price: in a room of a host and one listener the
listener has nobody to ask, so it never claims for a silent host (there is
nobody it could moderate); a signed leave still hands that room over.

Other answers to a pre-vote: the host answers with a heartbeat; a member on a
newer term sends the claims that lead to it; a member on an older term says so
and the asker sends it those claims.  A member that is itself asking for a
better term refuses, so two successors that reach each other make one claim,
not two; a member whose term was claimed from an older successor list than the
asker's grants, since the asker's claim wins the merge anyway.
"""

from __future__ import annotations

import collections
import datetime
import logging

import attrs

from .control import (
    MAX_LINEAGE,
    Claim,
    Heartbeat,
    JoinRefused,
    JoinRequest,
    Kind,
    LogEntry,
    Message,
    PreVoteAnswer,
    PreVoteRequest,
    SignedRequest,
    Snapshot,
    SnapshotRequest,
    decode_message,
    encode_message,
)
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    Event,
    JoinedRoom,
    JoinRefusedEvent,
    LeftRoom,
    MembersMerged,
    RoomChanged,
    TermStarted,
)
from .handshake import sign_redemption, verify_redemption
from .identity import Identity, PublicKey
from .ids import RoomId
from .invite import InviteError, InviteProblem, SignedInvite
from .ops import (
    Admit,
    Kick,
    Leave,
    LeaveReason,
    Op,
    RevokeInvite,
    SetSuccessors,
    TakeOver,
)
from .rejection import Rejected, RejectReason
from .roles import Role
from .room_state import ZERO_NONCE, RoomState
from .term import Term

logger = logging.getLogger(__name__)

MAX_COUNTER_JUMP = 1 << 20
MAX_KNOWN_TERMS = 64


@attrs.frozen
class RoomConfig:
    heartbeat_interval: float = 1.0
    """Seconds between the host's heartbeats."""
    host_timeout: float = 4.0
    """Seconds of silence from the host after which successors start to take over."""
    succession_step: float = 1.0
    """Δ: successor *k* waits k×Δ longer than successor 0 before claiming."""
    pre_vote_retry: float = 1.0
    """Seconds a successor waits for a pre-vote grant before asking again; doubles per round."""
    pre_vote_retry_max: float = 8.0
    """The longest wait between two pre-vote rounds of one silence."""
    reorder_window: int = 64
    """Log entries held while an earlier one is missing; beyond this, resync."""
    resync_backoff: float = 1.0
    """Minimum seconds between two snapshot requests."""


@attrs.frozen
class SendTo:
    """Send ``data`` to ``peer`` over its secure link."""

    peer: PublicKey
    data: bytes = attrs.field(repr=False)


@attrs.frozen
class Broadcast:
    """Send ``data`` to every one of ``recipients``."""

    recipients: tuple[PublicKey, ...]
    data: bytes = attrs.field(repr=False)


Outbound = SendTo | Broadcast


@attrs.frozen
class RoomStatistics:
    """Counters in the style of ``trio`` ``statistics()``: a frozen snapshot."""

    entries_applied: int
    requests_sequenced: int
    joins_admitted: int
    joins_refused: int
    snapshots_installed: int
    resyncs_requested: int
    divergences_detected: int
    claims_made: int
    claims_accepted: int
    merges: int
    pre_votes_requested: int
    """Pre-vote rounds this replica sent as a successor of a silent host."""
    pre_votes_granted: int
    """Grants this replica gave to other successors."""
    pre_votes_refused: int
    """Genuine pre-vote requests this replica did not grant (it heard the host, or its term
    differs)."""
    pre_vote_grants_received: int
    """Genuine grants from members, including late ones that no longer led to a claim."""
    rejected: dict[str, int]

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@attrs.define
class _PreVoteRound:
    """A successor's pre-votes for one silence of the host."""

    term: Term
    """The term the successor would claim."""
    deadline: float
    """The claim deadline this round belongs to; a host contact moves it and ends the round."""
    first_attempt: int = attrs.field(kw_only=True)
    """Answers to earlier attempts belong to an earlier silence."""
    next_attempt: float = attrs.field(kw_only=True)
    backoff: float = attrs.field(kw_only=True)


@attrs.define(eq=False, repr=False)
class RoomReplica:
    identity: Identity
    room_id: RoomId
    config: RoomConfig = attrs.Factory(RoomConfig)
    state: RoomState | None = None
    invite: SignedInvite | None = None
    """For a joiner: the invite it redeems."""
    leader: PublicKey | None = None
    """Host of the current term: the only key whose entries we apply."""

    _outbound: list[Outbound] = attrs.Factory(list)
    _events: list[Event] = attrs.Factory(list)
    _next_counter: int = 1
    _pending_entries: dict[int, LogEntry] = attrs.Factory(dict)
    _known_hosts: collections.OrderedDict[Term, PublicKey] = attrs.Factory(collections.OrderedDict)
    _lineage: tuple[Claim, ...] = ()
    _successors_entry: LogEntry | None = None
    _last_host_contact: float = 0.0
    _vacant_since: float | None = None
    _vacancy_reason: LeaveReason = LeaveReason.SILENT
    _next_heartbeat: float = 0.0
    _last_resync_request: float = float("-inf")
    _last_heartbeat_seen: Heartbeat | None = None
    _rank_cache: tuple[LogEntry, int | None] | None = None
    _merged_terms: set[Term] = attrs.Factory(set)
    _snapshot_pending_for: PublicKey | None = None
    _behind_at: int | None = None
    _merge_offered: set[tuple[Term, PublicKey]] = attrs.Factory(set)
    _pre_vote: _PreVoteRound | None = None
    _pre_vote_attempts: int = 0
    _held_votes: dict[PublicKey, PreVoteRequest] = attrs.Factory(dict)
    """Pre-vote requests waiting until this replica, too, has heard no host for the timeout."""
    _counts: collections.Counter[str] = attrs.Factory(collections.Counter)
    _rejections: collections.Counter[str] = attrs.Factory(collections.Counter)

    # --- construction ----------------------------------------------------------

    @classmethod
    def create_room(
        cls,
        identity: Identity,
        room_id: RoomId,
        *,
        name: str,
        topic: str = "",
        now: float,
        config: RoomConfig | None = None,
    ) -> RoomReplica:
        """A new room with ``identity`` as its host and moderator."""
        state = RoomState.create(room_id, name, topic, identity.public_key, identity.display_name)
        replica = cls(identity, room_id, config or RoomConfig(), state=state)
        replica.leader = identity.public_key
        replica._remember_host(state.term, identity.public_key)
        replica._next_heartbeat = now
        replica._sequence_own(SetSuccessors(()), now)
        return replica

    @classmethod
    def joining(
        cls, identity: Identity, invite: SignedInvite, config: RoomConfig | None = None
    ) -> RoomReplica:
        """A replica that will join with ``invite``; it has no state until the host answers."""
        return cls(identity, invite.invite.room_id, config or RoomConfig(), invite=invite)

    # --- queries ---------------------------------------------------------------

    @property
    def me(self) -> PublicKey:
        return self.identity.public_key

    # ``joined`` and ``is_host`` are asked after every input a peer handles.
    @property
    def joined(self) -> bool:
        state = self.state
        return state is not None and self.identity.public_key in state.members

    @property
    def is_host(self) -> bool:
        leader = self.leader
        if self.state is None or leader is None:
            return False
        me = self.identity.public_key
        return leader is me or leader.raw == me.raw

    @property
    def term(self) -> Term | None:
        return self.state.term if self.state else None

    def statistics(self) -> RoomStatistics:
        c = self._counts
        return RoomStatistics(
            entries_applied=c["entries_applied"],
            requests_sequenced=c["requests_sequenced"],
            joins_admitted=c["joins_admitted"],
            joins_refused=c["joins_refused"],
            snapshots_installed=c["snapshots_installed"],
            resyncs_requested=c["resyncs_requested"],
            divergences_detected=c["divergences_detected"],
            claims_made=c["claims_made"],
            claims_accepted=c["claims_accepted"],
            merges=c["merges"],
            pre_votes_requested=c["pre_votes_requested"],
            pre_votes_granted=c["pre_votes_granted"],
            pre_votes_refused=c["pre_votes_refused"],
            pre_vote_grants_received=c["pre_vote_grants_received"],
            rejected=dict(self._rejections),
        )

    def outbound(self) -> list[Outbound]:
        """Take the messages waiting to be sent."""
        out, self._outbound = self._outbound, []
        return out

    def events(self) -> list[Event]:
        """Take the events that happened since the last call."""
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` next has work, or ``None``."""
        if not self.joined:
            return None
        if self.is_host:
            return self._next_heartbeat
        deadline = self._successor_deadline()
        round_ = self._pre_vote
        if (
            deadline is not None
            and round_ is not None
            and round_.deadline == deadline
            and self._vacant_since is None
        ):
            deadline = max(deadline, round_.next_attempt)
        if self._held_votes:
            due = self._last_host_contact + self.config.host_timeout
            deadline = due if deadline is None else min(deadline, due)
        return deadline

    def __repr__(self) -> str:
        term = self.state.term if self.state else "-"
        return f"RoomReplica({self.identity.display_name!r}, term={term}, host={self.is_host})"

    # --- local actions ---------------------------------------------------------

    def act(self, op: Op, now: float) -> None:
        """Ask for ``op`` as this member.  Raises :class:`Rejected` if it can't be allowed.

        The check runs locally first so the user hears "you can't" at once; the
        host checks again when it sequences the request.
        """
        if self.state is None or not self.joined:
            raise LocalProtocolError("not a member of a room")
        if isinstance(op, (TakeOver, Admit)):
            raise LocalProtocolError(f"{type(op).__name__} is issued by the protocol, not a user")
        self.state.check(self.me, op)
        request = self._make_request(op)
        if self.is_host:
            self._sequence(request, now)
        elif self.leader is not None:
            self._outbound.append(SendTo(self.leader, encode_message(request)))

    def join_message(self, handshake_hash: bytes) -> bytes:
        """The first message a joiner sends on its fresh link to the host."""
        if self.invite is None:
            raise LocalProtocolError("this replica was not created to join")
        token = self.invite.to_bytes()
        redemption = sign_redemption(self.identity, handshake_hash, token)
        return encode_message(JoinRequest(token, self.identity.display_name, redemption))

    def depart(self, now: float) -> None:
        """Leave the room with a signed leave, so others react at once."""
        if self.joined:
            self.act(Leave(), now)

    # --- inputs ----------------------------------------------------------------

    def receive(
        self,
        data: bytes,
        sender: PublicKey,
        now: float,
        *,
        handshake_hash: bytes = b"",
        unix_time: float | None = None,
    ) -> None:
        """Handle one control message from authenticated peer ``sender``.

        ``handshake_hash`` is the link's Noise handshake hash (needed to check a
        join); ``unix_time`` is the wall clock for invite validity (defaults to
        ``now``, which is what the simulator wants).
        """
        try:
            kind, message = decode_message(data)
            self._dispatch(kind, message, sender, now, handshake_hash, unix_time)
        except Rejected as exc:
            self._reject(exc.reason, str(exc), sender)
        except RemoteProtocolError as exc:
            self._reject(RejectReason.MALFORMED, str(exc), sender)

    def handle_timer(self, now: float) -> None:
        if not self.joined:
            return
        if self.is_host:
            if now >= self._next_heartbeat:
                self._send_heartbeat(now)
            return
        if self._held_votes:
            self._grant_held_votes(now)
        deadline = self._claim_deadline()
        if deadline is None or now < deadline:
            return
        if self._vacant_since is not None:
            self._claim(now)  # a signed leave: no pre-vote
        else:
            self._ask_for_pre_votes(now, deadline)

    # --- dispatch ----------------------------------------------------------------

    def _dispatch(
        self,
        kind: Kind,
        message: Message,
        sender: PublicKey,
        now: float,
        handshake_hash: bytes,
        unix_time: float | None,
    ) -> None:
        if isinstance(message, JoinRequest):
            self._on_join(
                message, sender, now, handshake_hash, now if unix_time is None else unix_time
            )
        elif isinstance(message, JoinRefused):
            self._on_join_refused(message, sender)
        elif isinstance(message, Snapshot):
            if kind == Kind.MERGE_OFFER:
                self._on_merge_offer(message, now)
            else:
                self._on_snapshot(message, sender, now)
        elif self.state is None:
            raise Rejected(RejectReason.NOT_MEMBER, "not in a room yet")
        elif isinstance(message, SignedRequest):
            self._on_request(message, now)
        elif isinstance(message, LogEntry):
            self._on_entry(message, sender, now)
        elif isinstance(message, Heartbeat):
            self._on_heartbeat(message, sender, now)
        elif isinstance(message, Claim):
            self._on_claim(message, now)
        elif isinstance(message, PreVoteRequest):
            self._on_pre_vote_request(message, sender, now)
        elif isinstance(message, PreVoteAnswer):
            self._on_pre_vote_answer(message, sender, now)
        elif isinstance(message, SnapshotRequest):
            self._on_snapshot_request(message, sender)

    # --- the host's side -------------------------------------------------------------

    def _make_request(self, op: Op) -> SignedRequest:
        assert self.state is not None
        member = self.state.members.get(self.me)
        if member is not None:
            self._next_counter = max(self._next_counter, member.last_counter + 1)
        request = SignedRequest.create(
            self.identity, self.room_id, self.state.term, self._next_counter, op
        )
        self._next_counter += 1
        return request

    def _sequence_own(self, op: Op, now: float) -> None:
        self._sequence(self._make_request(op), now)

    def _check_request(self, request: SignedRequest) -> None:
        assert self.state is not None
        if request.room_id != self.room_id:
            raise Rejected(RejectReason.WRONG_ROOM, "request is for another room")
        if not request.signature_valid():
            raise Rejected(RejectReason.FORGED, "request signature does not verify")
        if request.term != self.state.term:
            raise Rejected(RejectReason.STALE_TERM, f"request is for term {request.term}")
        member = self.state.members.get(request.author)
        if member is None:
            raise Rejected(RejectReason.NOT_MEMBER, "request author is not a member")
        if request.counter <= member.last_counter:
            raise Rejected(RejectReason.REPLAYED, "request counter was already used")
        if request.counter - member.last_counter > MAX_COUNTER_JUMP:
            raise Rejected(RejectReason.INVALID, "request counter jumps implausibly far")

    def _sequence(self, request: SignedRequest, now: float) -> None:
        """Append ``request`` to the log as host, apply it, and broadcast the entry."""
        assert self.state is not None
        state = self.state
        before = set(state.members)
        self._check_request(request)
        seq = state.seq + 1
        state.apply(request.author, request.op, seq)
        if request.author in state.members:
            state.members[request.author].last_counter = request.counter
        entry = LogEntry.create(self.identity, self.room_id, state.term, seq, request)
        if isinstance(request.op, SetSuccessors):
            self._successors_entry = entry
        self._counts["requests_sequenced"] += 1
        self._counts["entries_applied"] += 1
        # A joiner gets the snapshot instead of the entries its admission causes.
        skip = {self.me, self._snapshot_pending_for}
        recipients = tuple(sorted((before | set(state.members)) - skip))
        if recipients:
            self._outbound.append(Broadcast(recipients, encode_message(entry)))
        self._events.append(RoomChanged(seq, request.author, request.op))
        if self.me not in state.members:
            self._stop_being_member("left")
            return
        if not isinstance(request.op, SetSuccessors):
            wanted = state.derive_successors()
            if wanted != state.successors:
                self._sequence_own(SetSuccessors(wanted), now)

    def _on_request(self, request: SignedRequest, now: float) -> None:
        if not self.is_host:
            raise Rejected(RejectReason.UNAUTHORIZED, "requests go to the host")
        self._sequence(request, now)

    def _on_join(
        self,
        message: JoinRequest,
        sender: PublicKey,
        now: float,
        handshake_hash: bytes,
        unix_time: float,
    ) -> None:
        if not self.is_host:
            raise Rejected(RejectReason.UNAUTHORIZED, "joins go to the host")
        assert self.state is not None
        try:
            invite = self._admissible(message, sender, handshake_hash, unix_time)
        except InviteError as exc:
            self._counts["joins_refused"] += 1
            refusal = JoinRefused(exc.problem.value, _refusal_text(exc, unix_time))
            self._outbound.append(SendTo(sender, encode_message(refusal)))
            logger.info("refused join from %s: %s", sender.fingerprint, exc)
            return
        if sender not in self.state.members:
            admit = Admit(sender, message.display_name, invite.invite.role, invite.invite.nonce)
            self._snapshot_pending_for = sender
            try:
                self._sequence_own(admit, now)
            finally:
                self._snapshot_pending_for = None
            self._counts["joins_admitted"] += 1
        self._send_snapshot(sender)

    def _admissible(
        self, message: JoinRequest, sender: PublicKey, handshake_hash: bytes, unix_time: float
    ) -> SignedInvite:
        assert self.state is not None
        state = self.state
        signed = SignedInvite.from_bytes(message.token)
        issuer = signed.invite.issuer
        issuer_role = state.role_of(issuer)
        if issuer_role is None and issuer in self._known_hosts.values():
            issuer_role = Role.HOST  # invites from a former host of this room stay valid
        if issuer_role is None or issuer in state.banned:
            raise InviteError(
                InviteProblem.WRONG_ISSUER, "the invite's issuer is no longer in this room"
            )
        invite = signed.verify(
            unix_time, room_id=self.room_id, audience=sender, issuer_role=issuer_role
        )
        if len(handshake_hash) != 64 or not verify_redemption(
            sender, handshake_hash, message.token, message.redemption
        ):
            raise InviteError(
                InviteProblem.TAMPERED, "the invite redemption is not signed for this link"
            )
        if sender in state.banned:
            raise InviteError(InviteProblem.BANNED, "you are banned from this room")
        if invite.nonce in state.revoked:
            raise InviteError(InviteProblem.REVOKED, "this invite has been revoked by a moderator")
        if (
            sender not in state.members
            and state.invite_uses.get(invite.nonce, 0) >= invite.max_uses
        ):
            raise InviteError(
                InviteProblem.USED_UP, f"this invite has been used its {invite.max_uses} time(s)"
            )
        return signed

    def _send_heartbeat(self, now: float) -> None:
        assert self.state is not None
        heartbeat = Heartbeat.create(
            self.identity, self.room_id, self.state.term, self.state.seq, self.state.digest()
        )
        recipients = tuple(sorted(k for k in self.state.members if k != self.me))
        if recipients:
            self._outbound.append(Broadcast(recipients, encode_message(heartbeat)))
        self._next_heartbeat = now + self.config.heartbeat_interval

    def _send_snapshot(self, peer: PublicKey, *, merge_offer: bool = False) -> None:
        self._outbound.append(
            SendTo(peer, encode_message(self._snapshot(), merge_offer=merge_offer))
        )

    def _snapshot(self, state: RoomState | None = None) -> Snapshot:
        assert self.state is not None
        return Snapshot.create(
            self.identity,
            self.room_id,
            self.state.term,
            (state or self.state).encode(),
            self._lineage,
            self._successors_entry,
        )

    def _offer_merge(self, winner: PublicKey) -> None:
        """We moderate a branch that lost to ``winner``'s term: offer it our members, once."""
        assert self.state is not None
        key = (self.state.term, winner)
        if key in self._merge_offered:
            return
        self._merge_offered.add(key)
        self._outbound.append(SendTo(winner, encode_message(self._snapshot(), merge_offer=True)))

    def _on_snapshot_request(self, message: SnapshotRequest, sender: PublicKey) -> None:
        assert self.state is not None
        if message.room_id != self.room_id:
            raise Rejected(RejectReason.WRONG_ROOM, "snapshot request for another room")
        if not self.is_host:
            raise Rejected(RejectReason.UNAUTHORIZED, "only the host serves snapshots")
        if sender in self.state.banned:
            self._send_kick_notice(sender)
            return
        if sender not in self.state.members:
            raise Rejected(RejectReason.NOT_MEMBER, "snapshot requested by a non-member")
        self._send_snapshot(sender)

    def _send_kick_notice(self, peer: PublicKey) -> None:
        """A peer kicked while it was away learns that, and nothing about the room."""
        assert self.state is not None
        notice = self._snapshot(self.state.redacted_for(peer))
        self._outbound.append(SendTo(peer, encode_message(notice)))

    def _on_merge_offer(self, offer: Snapshot, now: float) -> None:
        """Re-admit members of a losing branch after a partition heals."""
        if not self.is_host:
            raise Rejected(RejectReason.UNAUTHORIZED, "merge offers go to the host")
        assert self.state is not None
        if offer.room_id != self.room_id or not offer.signature_valid():
            raise Rejected(RejectReason.FORGED, "merge offer does not verify")
        if offer.term >= self.state.term or offer.term in self._merged_terms:
            raise Rejected(RejectReason.STALE_TERM, "merge offer is not from an older branch")
        problem = self._verify_lineage(offer.term, offer.host, offer.lineage)
        if problem is not None:
            raise Rejected(RejectReason.FORGED, f"merge offer: {problem}")
        other = RoomState.decode(offer.state)
        self._merged_terms.add(offer.term)
        merged: list[PublicKey] = []
        for key in sorted(other.banned):
            member = self.state.members.get(key)
            if member is not None and member.role < Role.HOST:
                self._sequence_own(Kick(key), now)
        for nonce in sorted(other.revoked - self.state.revoked):
            self._sequence_own(RevokeInvite(nonce), now)
        for key in sorted(other.members, key=lambda k: other.members[k].joined_seq):
            if key in self.state.members or key in self.state.banned:
                continue
            theirs = other.members[key]
            role = min(theirs.role, Role.MODERATOR)
            self._sequence_own(Admit(key, theirs.name, role, ZERO_NONCE), now)
            merged.append(key)
        self._counts["merges"] += 1
        self._events.append(MembersMerged(offer.term, tuple(merged)))

    # --- the member's side -------------------------------------------------------------

    def _on_join_refused(self, message: JoinRefused, sender: PublicKey) -> None:
        if self.state is not None or self.invite is None:
            raise Rejected(RejectReason.INVALID, "unexpected join refusal")
        self._events.append(JoinRefusedEvent(message.problem, message.message))

    def _on_entry(self, entry: LogEntry, sender: PublicKey, now: float) -> None:
        state = self.state
        assert state is not None
        if entry.room_id != self.room_id:
            raise Rejected(RejectReason.WRONG_ROOM, "entry is for another room")
        if entry.term < state.term:
            raise Rejected(RejectReason.STALE_TERM, f"entry from old term {entry.term}")
        if entry.term > state.term:
            self._request_resync(sender, now)
            raise Rejected(RejectReason.OUT_OF_ORDER, f"entry from unknown term {entry.term}")
        if self.leader is None or not entry.signed_by(self.leader):
            raise Rejected(RejectReason.FORGED, "entry is not signed by this term's host")
        self._heard_host(now)
        if entry.seq <= state.seq:
            raise Rejected(RejectReason.REPLAYED, f"entry {entry.seq} was already applied")
        if entry.seq > state.seq + 1:
            if entry.seq - state.seq > self.config.reorder_window:
                self._request_resync(self.leader, now)
                raise Rejected(RejectReason.OUT_OF_ORDER, f"entry {entry.seq} is far ahead")
            self._pending_entries[entry.seq] = entry
            return
        self._apply_entry(entry, now)
        while (following := self._pending_entries.pop(state.seq + 1, None)) is not None:
            self._apply_entry(following, now)
        self._pending_entries = {s: e for s, e in self._pending_entries.items() if s > state.seq}

    def _apply_entry(self, entry: LogEntry, now: float) -> None:
        state = self.state
        assert state is not None
        request = entry.request
        try:
            self._check_request(request)
            if isinstance(request.op, TakeOver) and request.author != self.leader:
                raise Rejected(RejectReason.UNAUTHORIZED, "only a term's host takes over")
            state.apply(request.author, request.op, entry.seq)
        except Rejected:
            self._request_resync(self.leader, now)
            raise
        if request.author in state.members:
            state.members[request.author].last_counter = request.counter
        if isinstance(request.op, SetSuccessors):
            self._successors_entry = entry
        self._counts["entries_applied"] += 1
        self._events.append(RoomChanged(entry.seq, request.author, request.op))
        if isinstance(request.op, Leave) and state.host is None and request.author == self.leader:
            self._vacant_since, self._vacancy_reason = now, LeaveReason.LEFT
        if self.me not in state.members:
            self._stop_being_member("left" if isinstance(request.op, Leave) else "kicked")

    def _on_heartbeat(self, heartbeat: Heartbeat, sender: PublicKey, now: float) -> None:
        state = self.state
        assert state is not None
        if heartbeat.room_id != self.room_id:
            raise Rejected(RejectReason.WRONG_ROOM, "heartbeat for another room")
        if not heartbeat.signature_valid():
            raise Rejected(RejectReason.FORGED, "heartbeat signature does not verify")
        if heartbeat.term < state.term:
            # The sender follows an older branch: tell it about ours.
            ours = self._last_heartbeat_seen
            if self.is_host:
                ours = Heartbeat.create(
                    self.identity, self.room_id, state.term, state.seq, state.digest()
                )
            if ours is not None and ours.term == state.term:
                self._outbound.append(SendTo(sender, encode_message(ours)))
            raise Rejected(RejectReason.STALE_TERM, f"heartbeat from old term {heartbeat.term}")
        if heartbeat.term > state.term:
            if self.is_host:
                self._offer_merge(heartbeat.host)
            self._request_resync(heartbeat.host, now)
            if self.leader is not None and self.leader != self.me and sender != self.leader:
                self._outbound.append(SendTo(self.leader, encode_message(heartbeat)))
            return
        if heartbeat.host != self.leader:
            raise Rejected(RejectReason.FORGED, "heartbeat is not from this term's host")
        self._heard_host(now)
        self._last_heartbeat_seen = heartbeat
        if heartbeat.seq > state.seq:
            # Held entries may still be in flight; a gap that outlives a heartbeat is a loss.
            stuck = self._behind_at == state.seq
            if stuck or not self._pending_entries:
                self._request_resync(heartbeat.host, now)
            self._behind_at = state.seq
            return
        self._behind_at = None
        if heartbeat.seq < state.seq:
            return
        if heartbeat.digest != state.digest():
            self._counts["divergences_detected"] += 1
            self._request_resync(heartbeat.host, now)

    def _request_resync(self, host: PublicKey | None, now: float) -> None:
        if host is None or host == self.me or self.state is None:
            return
        if now - self._last_resync_request < self.config.resync_backoff:
            return
        self._last_resync_request = now
        self._counts["resyncs_requested"] += 1
        request = SnapshotRequest(self.room_id, self.state.term, self.state.seq)
        self._outbound.append(SendTo(host, encode_message(request)))

    def _on_snapshot(self, snapshot: Snapshot, sender: PublicKey, now: float) -> None:
        if snapshot.room_id != self.room_id:
            raise Rejected(RejectReason.WRONG_ROOM, "snapshot for another room")
        if not snapshot.signature_valid():
            raise Rejected(RejectReason.FORGED, "snapshot signature does not verify")
        if snapshot.host != sender:
            raise Rejected(RejectReason.FORGED, "snapshot not sent by the host that signed it")
        incoming = RoomState.decode(snapshot.state)
        if incoming.room_id != self.room_id or incoming.term != snapshot.term:
            raise Rejected(RejectReason.INVALID, "snapshot contents disagree with its envelope")
        current = self.state
        if current is None:
            self._install_first_snapshot(snapshot, incoming, now)
            return
        if snapshot.term < current.term:
            raise Rejected(RejectReason.STALE_TERM, f"snapshot from old term {snapshot.term}")
        if snapshot.term == current.term:
            if snapshot.host != self.leader:
                raise Rejected(RejectReason.FORGED, "snapshot is not from this term's host")
            if incoming.seq < current.seq and incoming.digest() != current.digest():
                raise Rejected(RejectReason.STALE_TERM, "snapshot is older than our state")
        else:
            problem = self._verify_lineage(snapshot.term, snapshot.host, snapshot.lineage)
            if problem is not None:
                raise Rejected(RejectReason.FORGED, f"snapshot of a newer term: {problem}")
        if self.is_host and snapshot.term > current.term:
            self._offer_merge(snapshot.host)
        self._install(snapshot, incoming, now)

    def _install_first_snapshot(self, snapshot: Snapshot, incoming: RoomState, now: float) -> None:
        if self.invite is None:
            raise Rejected(RejectReason.INVALID, "unsolicited snapshot")
        if self.me not in incoming.members or incoming.host != snapshot.host:
            raise Rejected(RejectReason.INVALID, "snapshot does not admit us")
        for claim in snapshot.lineage:
            self._remember_host(claim.prev_term, None)
        self._install(snapshot, incoming, now)
        self._events.append(JoinedRoom(incoming.term, snapshot.host))

    def _install(self, snapshot: Snapshot, incoming: RoomState, now: float) -> None:
        previous_term = self.state.term if self.state else None
        self.state = incoming
        self.leader = snapshot.host
        self._lineage = snapshot.lineage[-MAX_LINEAGE:]
        for claim in snapshot.lineage:
            self._remember_host(claim.new_term, claim.claimant)
        self._remember_host(snapshot.term, snapshot.host)
        self._pending_entries.clear()
        self._successors_entry = _valid_successors_entry(snapshot, incoming)
        self._heard_host(now)
        self._vacant_since = None
        self._last_resync_request = float("-inf")
        self._counts["snapshots_installed"] += 1
        if previous_term is not None and snapshot.term != previous_term:
            self._events.append(TermStarted(snapshot.term, snapshot.host))
        if self.me not in incoming.members:
            self._stop_being_member("kicked" if self.me in incoming.banned else "dropped")

    def _stop_being_member(self, reason: str) -> None:
        self._events.append(LeftRoom(reason))

    # --- succession ----------------------------------------------------------------

    def _signed_rank(self) -> int | None:
        """Our rank in the host's latest signed successor list, the one a claim must carry."""
        entry = self._successors_entry
        if entry is None:
            return None
        cached = self._rank_cache
        if cached is not None and cached[0] is entry:
            return cached[1]
        op = entry.request.op
        assert isinstance(op, SetSuccessors)
        rank = op.successors.index(self.me) if self.me in op.successors else None
        self._rank_cache = (entry, rank)
        return rank

    def _claim_deadline(self) -> float | None:
        if self.state is None or self.is_host:
            return None
        return self._successor_deadline()

    def _successor_deadline(self) -> float | None:
        """When this non-host member would claim the room, if it is a successor."""
        rank = self._signed_rank()
        if rank is None:
            return None
        if self._vacant_since is not None:
            start = self._vacant_since
        else:
            start = self._last_host_contact + self.config.host_timeout
        return start + rank * self.config.succession_step

    def _claim(self, now: float) -> None:
        state = self.state
        assert state is not None and self._successors_entry is not None
        rank = self._signed_rank()
        assert rank is not None
        reason = LeaveReason.LEFT if self._vacant_since is not None else LeaveReason.SILENT
        previous_host = self.leader
        claim = Claim.create(
            self.identity,
            room_id=self.room_id,
            new_term=state.term.successor(rank, self._successors_entry.seq),
            prev_term=state.term,
            prev_seq=state.seq,
            prev_digest=state.digest(),
            reason=reason,
            successors_entry=self._successors_entry,
        )
        self._counts["claims_made"] += 1
        logger.info("claiming term %s as successor rank %d", claim.new_term, rank)
        self._adopt_claim(claim, now)
        recipients = tuple(sorted(k for k in state.members if k not in (self.me, previous_host)))
        if recipients:
            self._outbound.append(Broadcast(recipients, encode_message(claim)))
        gone = previous_host if previous_host in state.members else None
        self._sequence_own(TakeOver(gone, reason), now)
        if self._successors_entry is None:
            # Every term signs its own successor list, even an unchanged one.
            self._sequence_own(SetSuccessors(state.derive_successors()), now)
        self._send_heartbeat(now)

    def _adopt_claim(self, claim: Claim, now: float) -> None:
        state = self.state
        assert state is not None
        state.term = claim.new_term
        self.leader = claim.claimant
        self._lineage = (*self._lineage, claim)[-MAX_LINEAGE:]
        self._remember_host(claim.new_term, claim.claimant)
        self._pending_entries.clear()
        self._successors_entry = None
        self._vacant_since = None
        self._heard_host(now)
        self._next_heartbeat = now
        self._events.append(TermStarted(claim.new_term, claim.claimant))

    def _on_claim(self, claim: Claim, now: float) -> None:
        state = self.state
        assert state is not None
        if claim.room_id != self.room_id:
            raise Rejected(RejectReason.WRONG_ROOM, "claim for another room")
        if claim.new_term <= state.term:
            raise Rejected(RejectReason.STALE_TERM, f"claim for term {claim.new_term} is not newer")
        prev_host = self._known_hosts.get(claim.prev_term)
        if prev_host is None:
            self._request_resync(claim.claimant, now)
            raise Rejected(RejectReason.OUT_OF_ORDER, "claim follows a term we don't know")
        problem = claim.verify(prev_host)
        if problem is not None:
            raise Rejected(RejectReason.FORGED, problem)
        if claim.claimant in state.banned:
            raise Rejected(RejectReason.UNAUTHORIZED, "claimant is banned")
        in_step = claim.prev_term == state.term and (claim.prev_seq, claim.prev_digest) == (
            state.seq,
            state.digest(),
        )
        if self.is_host:
            self._offer_merge(claim.claimant)
        self._counts["claims_accepted"] += 1
        self._adopt_claim(claim, now)
        if not in_step:
            self._request_resync(claim.claimant, now)

    # --- pre-vote ------------------------------------------------------------------

    def _heard_host(self, now: float) -> None:
        """The host of our term spoke (or a new term began): any silence is over."""
        self._last_host_contact = now
        self._pre_vote = None
        if self._held_votes:
            self._counts["pre_votes_refused"] += len(self._held_votes)
            self._held_votes.clear()

    def _host_silent(self, now: float) -> bool:
        """Whether this replica, too, has heard nothing from the host for the timeout."""
        if self._vacant_since is not None:
            return True
        return now >= self._last_host_contact + self.config.host_timeout

    def _ask_for_pre_votes(self, now: float, deadline: float) -> None:
        """The host is silent and it is our turn: ask the members, not the room, first."""
        state = self.state
        entry = self._successors_entry
        rank = self._signed_rank()
        assert state is not None and entry is not None and rank is not None
        term = state.term.successor(rank, entry.seq)
        round_ = self._pre_vote
        if round_ is None or round_.deadline != deadline or round_.term != term:
            round_ = _PreVoteRound(
                term,
                deadline,
                first_attempt=self._pre_vote_attempts + 1,
                next_attempt=now,
                backoff=self.config.pre_vote_retry,
            )
            self._pre_vote = round_
        if now < round_.next_attempt:
            return
        self._pre_vote_attempts += 1
        request = PreVoteRequest.create(
            self.identity,
            room_id=self.room_id,
            term=term,
            prev_term=state.term,
            attempt=self._pre_vote_attempts,
            successors_entry=entry,
        )
        # The silent host is asked too: if it is alive, its answer is a heartbeat.
        recipients = tuple(sorted(k for k in state.members if k != self.me))
        if recipients:
            self._outbound.append(Broadcast(recipients, encode_message(request)))
        self._counts["pre_votes_requested"] += 1
        logger.info(
            "host silent: asking %d member(s) to pre-vote for term %s (attempt %d)",
            len(recipients),
            term,
            self._pre_vote_attempts,
        )
        round_.next_attempt = now + round_.backoff
        round_.backoff = min(round_.backoff * 2, self.config.pre_vote_retry_max)

    def _on_pre_vote_request(self, request: PreVoteRequest, sender: PublicKey, now: float) -> None:
        state = self.state
        assert state is not None
        if request.room_id != self.room_id:
            raise Rejected(RejectReason.WRONG_ROOM, "pre-vote request for another room")
        if request.candidate != sender:
            raise Rejected(RejectReason.FORGED, "pre-vote request not sent by its candidate")
        if not request.signature_valid():
            raise Rejected(RejectReason.FORGED, "pre-vote request signature does not verify")
        if request.candidate in state.banned:
            if self.is_host:
                self._send_kick_notice(sender)
            raise Rejected(RejectReason.UNAUTHORIZED, "pre-vote request from a banned peer")
        if request.prev_term > state.term:
            # We missed a succession: say so, and the asker sends us the claims.
            self._counts["pre_votes_refused"] += 1
            self._answer_pre_vote(request, granted=False)
            return
        if request.prev_term < state.term and self._outranked_by(request):
            # Our term was claimed from an older successor list than the asker holds:
            # its claim would beat ours, and our branch merges into it.
            self._answer_pre_vote(request, granted=True)
            return
        if request.prev_term < state.term or self.is_host:
            if request.candidate not in state.members:
                raise Rejected(RejectReason.NOT_MEMBER, "pre-vote request from a non-member")
            self._counts["pre_votes_refused"] += 1
            if self.is_host:
                # We are alive: the answer is a heartbeat, which ends the asker's silence.
                heartbeat = Heartbeat.create(
                    self.identity, self.room_id, state.term, state.seq, state.digest()
                )
                self._outbound.append(SendTo(sender, encode_message(heartbeat)))
            else:
                # The asker missed a succession: send it the claims that lead to ours.
                self._send_claims_after(sender, request.prev_term)
            return
        # Our term: the host's signed list proves the rank, and with it the membership
        # (a member admitted while we were cut off is in the list, not yet in our roster).
        prev_host = self.leader
        problem = request.rank_problem(prev_host) if prev_host is not None else "no host is known"
        if problem is not None:
            raise Rejected(RejectReason.FORGED, f"pre-vote request: {problem}")
        own = self._pre_vote
        if own is not None and own.term > request.term and own.deadline == self._claim_deadline():
            # We are asking for a better term ourselves; the asker will grant us instead.
            self._counts["pre_votes_refused"] += 1
            return
        if self._host_silent(now):
            self._answer_pre_vote(request, granted=True)
        else:
            self._held_votes[sender] = request

    def _outranked_by(self, request: PreVoteRequest) -> bool:
        """Whether ``request`` proves a claim from a fresher successor list than our term's.

        Such a claim wins the merge anyway (terms order by the list they were
        claimed from); granting it lets the asker, who may be missing from our
        roster because it was admitted after our claimant's list, reunite the room.
        """
        state = self.state
        assert state is not None
        term, ours = request.term, state.term
        if term.epoch != ours.epoch or term.list_seq <= ours.list_seq:
            return False
        prev_host = self._known_hosts.get(request.prev_term)
        return prev_host is not None and request.rank_problem(prev_host) is None

    def _grant_held_votes(self, now: float) -> None:
        if not self._host_silent(now):
            return
        state = self.state
        assert state is not None
        for candidate, request in self._held_votes.items():
            if request.prev_term == state.term and candidate not in state.banned:
                self._answer_pre_vote(request, granted=True)
            else:
                self._counts["pre_votes_refused"] += 1
        self._held_votes.clear()

    def _answer_pre_vote(self, request: PreVoteRequest, *, granted: bool) -> None:
        assert self.state is not None
        answer = PreVoteAnswer.create(
            self.identity,
            room_id=self.room_id,
            candidate=request.candidate,
            term=request.term,
            attempt=request.attempt,
            granted=granted,
            voter_term=self.state.term,
        )
        self._outbound.append(SendTo(request.candidate, encode_message(answer)))
        if granted:
            self._counts["pre_votes_granted"] += 1
            logger.info(
                "granting %s a pre-vote for term %s", request.candidate.fingerprint, request.term
            )

    def _send_claims_after(self, peer: PublicKey, term: Term) -> None:
        for claim in self._lineage:
            if claim.new_term > term:
                self._outbound.append(SendTo(peer, encode_message(claim)))

    def _on_pre_vote_answer(self, answer: PreVoteAnswer, sender: PublicKey, now: float) -> None:
        state = self.state
        assert state is not None
        if answer.room_id != self.room_id:
            raise Rejected(RejectReason.WRONG_ROOM, "pre-vote answer for another room")
        if answer.voter != sender:
            raise Rejected(RejectReason.FORGED, "pre-vote answer not sent by its voter")
        if answer.candidate != self.me:
            raise Rejected(RejectReason.INVALID, "pre-vote answer for another candidate")
        if not answer.signature_valid():
            raise Rejected(RejectReason.FORGED, "pre-vote answer signature does not verify")
        if answer.voter not in state.members:
            raise Rejected(RejectReason.NOT_MEMBER, "pre-vote answer from a non-member")
        if not answer.granted:
            if answer.voter_term < state.term:
                self._send_claims_after(sender, answer.voter_term)
            return
        self._counts["pre_vote_grants_received"] += 1
        round_ = self._pre_vote
        deadline = self._claim_deadline()
        if (
            round_ is None
            or deadline is None
            or now < deadline
            or round_.deadline != deadline
            or answer.term != round_.term
            or not round_.first_attempt <= answer.attempt <= self._pre_vote_attempts
        ):
            return  # a late grant: the silence it answered is over
        logger.info("pre-vote granted by %s: claiming", answer.voter.fingerprint)
        self._claim(now)

    def _remember_host(self, term: Term, host: PublicKey | None) -> None:
        if host is None:
            return
        self._known_hosts[term] = host
        self._known_hosts.move_to_end(term)
        while len(self._known_hosts) > MAX_KNOWN_TERMS:
            self._known_hosts.popitem(last=False)

    def _verify_lineage(
        self, term: Term, host: PublicKey, lineage: tuple[Claim, ...]
    ) -> str | None:
        """Check that ``host`` legitimately holds ``term``, by claims from a term we know."""
        if self._known_hosts.get(term) == host:
            return None
        start = None
        for index, claim in enumerate(lineage):
            if claim.prev_term in self._known_hosts:
                start = index
        if start is None:
            return "no chain of claims from a term this replica knows"
        expected_host = self._known_hosts[lineage[start].prev_term]
        expected_term = lineage[start].prev_term
        for claim in lineage[start:]:
            if claim.room_id != self.room_id or claim.prev_term != expected_term:
                return "claims do not form a chain"
            problem = claim.verify(expected_host)
            if problem is not None:
                return problem
            expected_host, expected_term = claim.claimant, claim.new_term
        if (expected_term, expected_host) != (term, host):
            return "claims do not lead to the snapshot's term and host"
        return None

    # --- bookkeeping ---------------------------------------------------------------

    def _reject(self, reason: RejectReason, message: str, sender: PublicKey) -> None:
        self._rejections[reason.value] += 1
        logger.debug("rejected message from %s (%s): %s", sender.fingerprint, reason.value, message)


_LOCAL_CLOCK_HINT = "; if that looks wrong, check this computer's clock"


def _refusal_text(error: InviteError, unix_time: float) -> str:
    """What a refused joiner reads.

    The host judges an invite's dates by its own clock, so a refusal for time
    says so and what that clock reads: the joiner can tell a skewed clock (the
    host's, the issuer's or its own) from a stale invite.
    """
    text = str(error)
    if error.problem not in (InviteProblem.NOT_YET_VALID, InviteProblem.EXPIRED):
        return text
    try:
        moment = datetime.datetime.fromtimestamp(unix_time, tz=datetime.UTC)
        clock = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):
        clock = f"unix time {unix_time:.0f}"
    text = f"{text.removesuffix(_LOCAL_CLOCK_HINT)}, by the host's clock, which reads {clock}"
    if error.problem is InviteProblem.NOT_YET_VALID:
        text += "; if that looks wrong, the host's, the invite issuer's or your clock is off"
    return text


def _valid_successors_entry(snapshot: Snapshot, state: RoomState) -> LogEntry | None:
    """The snapshot's successor list, if it is the signed current one for its term."""
    entry = snapshot.successors_entry
    if entry is None or entry.term != snapshot.term or entry.room_id != snapshot.room_id:
        return None
    op = entry.request.op
    if not isinstance(op, SetSuccessors) or entry.request.author != snapshot.host:
        return None
    if not entry.signed_by(snapshot.host) or op.successors != state.successors:
        return None
    return entry
