"""Signed control-plane messages and their envelope.

Every message travels inside an envelope ``version:u8 kind:u8 payload``.
Signed messages carry their encoded body and a 64-byte Ed25519 signature over
it, made under the message's own :class:`~.identity.Domain`, so a signature
made for one purpose never verifies for another.

* :class:`SignedRequest`: a member asks for an operation (room, term, author,
  counter, op), signed by the author.
* :class:`LogEntry`: the host sequences a request at a log position (room,
  term, seq), signed by the host.  Replicas apply entries in ``seq`` order.
* :class:`Heartbeat`: the host is alive; carries its (term, seq, digest) so a
  replica that diverged notices.
* :class:`Claim`: a successor takes over; carries the signed successor list
  it claims from.
* :class:`PreVoteRequest` / :class:`PreVoteAnswer`: before claiming for a
  silent host, a successor asks the members it knows whether they too have
  lost the host; it claims only once another member grants (Raft's PreVote).
* :class:`Snapshot`: the whole room state signed by the host, plus the claims
  that lead to its term (the lineage) so a replica on an older term can check it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TypeAlias

import attrs

from .crypto_memo import active_memo
from .errors import WireError
from .identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Domain, Identity, PublicKey
from .ids import ROOM_ID_SIZE, RoomId
from .ops import LeaveReason, Op, SetSuccessors, decode_op, encode_op
from .term import Term
from .wire import Reader, Writer

PROTOCOL_VERSION = 1
MAX_MESSAGE_SIZE = 8 * 1024 * 1024
MAX_STATE_SIZE = 8 * 1024 * 1024 - 64 * 1024
MAX_LINEAGE = 16
DIGEST_SIZE = 32


class Kind(enum.IntEnum):
    REQUEST = 1
    ENTRY = 2
    HEARTBEAT = 3
    CLAIM = 4
    SNAPSHOT = 5
    SNAPSHOT_REQUEST = 6
    JOIN = 7
    JOIN_REFUSED = 8
    MERGE_OFFER = 9
    PRE_VOTE_REQUEST = 10
    PRE_VOTE_ANSWER = 11


def _key(r: Reader) -> PublicKey:
    return PublicKey(r.fixed(PUBLIC_KEY_SIZE))


def _room(r: Reader) -> RoomId:
    return RoomId(r.fixed(ROOM_ID_SIZE))


def _split_signed(data: bytes, what: str) -> tuple[bytes, bytes, Reader]:
    """Split ``body_len:u32 body signature`` and return a reader over the body."""
    outer = Reader(data, what)
    body = outer.blob32(MAX_MESSAGE_SIZE)
    signature = outer.fixed(SIGNATURE_SIZE)
    outer.finish()
    return body, signature, Reader(body, what)


def _join_signed(body: bytes, signature: bytes) -> bytes:
    return Writer().blob32(body).fixed(signature, SIGNATURE_SIZE).getvalue()


@attrs.frozen
class SignedRequest:
    room_id: RoomId
    term: Term
    author: PublicKey
    counter: int
    op: Op
    body: bytes = attrs.field(repr=False)
    signature: bytes = attrs.field(repr=False)

    @classmethod
    def create(
        cls, identity: Identity, room_id: RoomId, term: Term, counter: int, op: Op
    ) -> SignedRequest:
        w = Writer().fixed(room_id.raw, ROOM_ID_SIZE)
        term.encode(w)
        w.fixed(identity.public_key.raw, PUBLIC_KEY_SIZE).u64(counter)
        encode_op(op, w)
        body = w.getvalue()
        signature = identity.sign(Domain.REQUEST, body)
        return cls(room_id, term, identity.public_key, counter, op, body, signature)

    @classmethod
    def decode(cls, data: bytes) -> SignedRequest:
        body, signature, r = _split_signed(data, "request")
        room_id, term, author, counter = _room(r), Term.decode(r), _key(r), r.u64()
        op = decode_op(r)
        r.finish()
        return cls(room_id, term, author, counter, op, body, signature)

    def encode(self) -> bytes:
        return _join_signed(self.body, self.signature)

    def signature_valid(self) -> bool:
        return self.author.verify(Domain.REQUEST, self.body, self.signature)


@attrs.frozen
class LogEntry:
    room_id: RoomId
    term: Term
    seq: int
    request: SignedRequest
    body: bytes = attrs.field(repr=False)
    signature: bytes = attrs.field(repr=False)

    @classmethod
    def create(
        cls, host: Identity, room_id: RoomId, term: Term, seq: int, request: SignedRequest
    ) -> LogEntry:
        w = Writer().fixed(room_id.raw, ROOM_ID_SIZE)
        term.encode(w)
        w.u64(seq).blob32(request.encode())
        body = w.getvalue()
        return cls(room_id, term, seq, request, body, host.sign(Domain.ENTRY, body))

    @classmethod
    def decode(cls, data: bytes) -> LogEntry:
        body, signature, r = _split_signed(data, "log entry")
        room_id, term, seq = _room(r), Term.decode(r), r.u64()
        request = SignedRequest.decode(r.blob32(MAX_MESSAGE_SIZE))
        r.finish()
        return cls(room_id, term, seq, request, body, signature)

    def encode(self) -> bytes:
        return _join_signed(self.body, self.signature)

    def signed_by(self, host: PublicKey) -> bool:
        return host.verify(Domain.ENTRY, self.body, self.signature)


@attrs.frozen
class Heartbeat:
    room_id: RoomId
    term: Term
    host: PublicKey
    seq: int
    digest: bytes
    body: bytes = attrs.field(repr=False)
    signature: bytes = attrs.field(repr=False)

    @classmethod
    def create(
        cls, host: Identity, room_id: RoomId, term: Term, seq: int, digest: bytes
    ) -> Heartbeat:
        w = Writer().fixed(room_id.raw, ROOM_ID_SIZE)
        term.encode(w)
        w.fixed(host.public_key.raw, PUBLIC_KEY_SIZE).u64(seq).fixed(digest, DIGEST_SIZE)
        body = w.getvalue()
        return cls(
            room_id, term, host.public_key, seq, digest, body, host.sign(Domain.HEARTBEAT, body)
        )

    @classmethod
    def decode(cls, data: bytes) -> Heartbeat:
        body, signature, r = _split_signed(data, "heartbeat")
        room_id, term, host, seq = _room(r), Term.decode(r), _key(r), r.u64()
        digest = r.fixed(DIGEST_SIZE)
        r.finish()
        return cls(room_id, term, host, seq, digest, body, signature)

    def encode(self) -> bytes:
        return _join_signed(self.body, self.signature)

    def signature_valid(self) -> bool:
        return self.host.verify(Domain.HEARTBEAT, self.body, self.signature)


@attrs.frozen
class Claim:
    """Successor ``claimant`` takes ``new_term`` after ``prev_term``'s host left or went silent.

    ``successors_entry`` is the previous host's signed ``SetSuccessors`` entry
    that ranks the claimant; ``new_term.rank`` must be that rank.
    """

    room_id: RoomId
    new_term: Term
    claimant: PublicKey
    prev_term: Term
    prev_seq: int
    prev_digest: bytes
    reason: LeaveReason
    successors_entry: LogEntry
    body: bytes = attrs.field(repr=False)
    signature: bytes = attrs.field(repr=False)

    @classmethod
    def create(
        cls,
        claimant: Identity,
        *,
        room_id: RoomId,
        new_term: Term,
        prev_term: Term,
        prev_seq: int,
        prev_digest: bytes,
        reason: LeaveReason,
        successors_entry: LogEntry,
    ) -> Claim:
        w = Writer().fixed(room_id.raw, ROOM_ID_SIZE)
        new_term.encode(w)
        w.fixed(claimant.public_key.raw, PUBLIC_KEY_SIZE)
        prev_term.encode(w)
        w.u64(prev_seq).fixed(prev_digest, DIGEST_SIZE).u8(reason)
        w.blob32(successors_entry.encode())
        body = w.getvalue()
        return cls(
            room_id,
            new_term,
            claimant.public_key,
            prev_term,
            prev_seq,
            prev_digest,
            reason,
            successors_entry,
            body,
            claimant.sign(Domain.CLAIM, body),
        )

    @classmethod
    def decode(cls, data: bytes) -> Claim:
        body, signature, r = _split_signed(data, "claim")
        room_id, new_term, claimant, prev_term = _room(r), Term.decode(r), _key(r), Term.decode(r)
        prev_seq, prev_digest = r.u64(), r.fixed(DIGEST_SIZE)
        try:
            reason = LeaveReason(r.u8())
        except ValueError:
            raise WireError("claim: unknown reason") from None
        entry = LogEntry.decode(r.blob32(MAX_MESSAGE_SIZE))
        r.finish()
        return cls(
            room_id,
            new_term,
            claimant,
            prev_term,
            prev_seq,
            prev_digest,
            reason,
            entry,
            body,
            signature,
        )

    def encode(self) -> bytes:
        return _join_signed(self.body, self.signature)

    def verify(self, prev_host: PublicKey) -> str | None:
        """Check the claim against the previous term's host; return a reason if it fails."""
        if not self.claimant.verify(Domain.CLAIM, self.body, self.signature):
            return "claim signature does not verify"
        return rank_problem(
            self.successors_entry,
            room_id=self.room_id,
            claimant=self.claimant,
            prev_term=self.prev_term,
            new_term=self.new_term,
            prev_host=prev_host,
        )


def rank_problem(
    entry: LogEntry,
    *,
    room_id: RoomId,
    claimant: PublicKey,
    prev_term: Term,
    new_term: Term,
    prev_host: PublicKey,
) -> str | None:
    """Why ``entry`` does not entitle ``claimant`` to ``new_term`` after ``prev_term``, if so.

    ``entry`` must be ``prev_host``'s signed successor list of ``prev_term``
    naming ``claimant`` at ``new_term.rank``, and ``new_term`` the term that rank
    claims from that list.
    """
    if entry.room_id != room_id or entry.term != prev_term:
        return "successor list is from another room or term"
    if not entry.signed_by(prev_host):
        return "successor list is not signed by the previous host"
    op = entry.request.op
    if not isinstance(op, SetSuccessors) or entry.request.author != prev_host:
        return "claim does not carry a successor list"
    rank = new_term.rank
    if rank >= len(op.successors) or op.successors[rank] != claimant:
        return "claimant does not hold the rank it claims"
    if new_term != prev_term.successor(rank, entry.seq):
        return "claimed term does not follow the previous term"
    return None


@attrs.frozen
class PreVoteRequest:
    """Successor ``candidate`` would claim ``term`` after ``prev_term``: does the voter agree?

    Sent when the candidate's host-silence timer fires, before any claim.  It
    carries the previous host's signed successor list, as a :class:`Claim`
    does, so a voter can check the rank without trusting the candidate.
    ``attempt`` numbers the candidate's requests; an answer echoes it, so a
    grant from an earlier silence never counts for a later one.
    """

    room_id: RoomId
    term: Term
    candidate: PublicKey
    prev_term: Term
    attempt: int
    successors_entry: LogEntry
    body: bytes = attrs.field(repr=False)
    signature: bytes = attrs.field(repr=False)

    @classmethod
    def create(
        cls,
        candidate: Identity,
        *,
        room_id: RoomId,
        term: Term,
        prev_term: Term,
        attempt: int,
        successors_entry: LogEntry,
    ) -> PreVoteRequest:
        w = Writer().fixed(room_id.raw, ROOM_ID_SIZE)
        term.encode(w)
        w.fixed(candidate.public_key.raw, PUBLIC_KEY_SIZE)
        prev_term.encode(w)
        w.u64(attempt).blob32(successors_entry.encode())
        body = w.getvalue()
        return cls(
            room_id,
            term,
            candidate.public_key,
            prev_term,
            attempt,
            successors_entry,
            body,
            candidate.sign(Domain.PRE_VOTE, body),
        )

    @classmethod
    def decode(cls, data: bytes) -> PreVoteRequest:
        body, signature, r = _split_signed(data, "pre-vote request")
        room_id, term, candidate, prev_term = _room(r), Term.decode(r), _key(r), Term.decode(r)
        attempt = r.u64()
        entry = LogEntry.decode(r.blob32(MAX_MESSAGE_SIZE))
        r.finish()
        return cls(room_id, term, candidate, prev_term, attempt, entry, body, signature)

    def encode(self) -> bytes:
        return _join_signed(self.body, self.signature)

    def signature_valid(self) -> bool:
        return self.candidate.verify(Domain.PRE_VOTE, self.body, self.signature)

    def rank_problem(self, prev_host: PublicKey) -> str | None:
        """Why the candidate may not claim :attr:`term` after ``prev_host``, if it may not."""
        return rank_problem(
            self.successors_entry,
            room_id=self.room_id,
            claimant=self.candidate,
            prev_term=self.prev_term,
            new_term=self.term,
            prev_host=prev_host,
        )


@attrs.frozen
class PreVoteAnswer:
    """``voter``'s answer to ``candidate``'s pre-vote ``attempt`` for ``term``.

    ``granted`` means the voter, too, has heard nothing from the host of the
    candidate's previous term for the host timeout.  A refusal is only sent by
    a voter that is behind (``voter_term`` older than the candidate's term), so
    the candidate can send it the claims it missed; a voter that still hears
    the host sends nothing.
    """

    room_id: RoomId
    voter: PublicKey
    candidate: PublicKey
    term: Term
    attempt: int
    granted: bool
    voter_term: Term
    body: bytes = attrs.field(repr=False)
    signature: bytes = attrs.field(repr=False)

    @classmethod
    def create(
        cls,
        voter: Identity,
        *,
        room_id: RoomId,
        candidate: PublicKey,
        term: Term,
        attempt: int,
        granted: bool,
        voter_term: Term,
    ) -> PreVoteAnswer:
        w = Writer().fixed(room_id.raw, ROOM_ID_SIZE)
        w.fixed(voter.public_key.raw, PUBLIC_KEY_SIZE).fixed(candidate.raw, PUBLIC_KEY_SIZE)
        term.encode(w)
        w.u64(attempt).boolean(granted)
        voter_term.encode(w)
        body = w.getvalue()
        return cls(
            room_id,
            voter.public_key,
            candidate,
            term,
            attempt,
            granted,
            voter_term,
            body,
            voter.sign(Domain.PRE_VOTE_ANSWER, body),
        )

    @classmethod
    def decode(cls, data: bytes) -> PreVoteAnswer:
        body, signature, r = _split_signed(data, "pre-vote answer")
        room_id, voter, candidate, term = _room(r), _key(r), _key(r), Term.decode(r)
        attempt, granted, voter_term = r.u64(), r.boolean(), Term.decode(r)
        r.finish()
        return cls(room_id, voter, candidate, term, attempt, granted, voter_term, body, signature)

    def encode(self) -> bytes:
        return _join_signed(self.body, self.signature)

    def signature_valid(self) -> bool:
        return self.voter.verify(Domain.PRE_VOTE_ANSWER, self.body, self.signature)


@attrs.frozen
class Snapshot:
    room_id: RoomId
    term: Term
    host: PublicKey
    state: bytes = attrs.field(repr=False)
    lineage: tuple[Claim, ...]
    successors_entry: LogEntry | None
    """The host's latest signed successor list, which a successor needs to claim."""
    body: bytes = attrs.field(repr=False)
    signature: bytes = attrs.field(repr=False)

    @classmethod
    def create(
        cls,
        host: Identity,
        room_id: RoomId,
        term: Term,
        state: bytes,
        lineage: tuple[Claim, ...],
        successors_entry: LogEntry | None,
    ) -> Snapshot:
        w = Writer().fixed(room_id.raw, ROOM_ID_SIZE)
        term.encode(w)
        w.fixed(host.public_key.raw, PUBLIC_KEY_SIZE).blob32(state)
        w.u8(len(lineage))
        for claim in lineage:
            w.blob32(claim.encode())
        w.blob32(successors_entry.encode() if successors_entry else b"")
        body = w.getvalue()
        signature = host.sign(Domain.SNAPSHOT, body)
        return cls(
            room_id, term, host.public_key, state, lineage, successors_entry, body, signature
        )

    @classmethod
    def decode(cls, data: bytes) -> Snapshot:
        body, signature, r = _split_signed(data, "snapshot")
        room_id, term, host = _room(r), Term.decode(r), _key(r)
        state = r.blob32(MAX_STATE_SIZE)
        count = r.u8()
        if count > MAX_LINEAGE:
            raise WireError(f"snapshot: lineage of {count} claims exceeds {MAX_LINEAGE}")
        lineage = tuple(Claim.decode(r.blob32(MAX_MESSAGE_SIZE)) for _ in range(count))
        entry_bytes = r.blob32(MAX_MESSAGE_SIZE)
        entry = LogEntry.decode(entry_bytes) if entry_bytes else None
        r.finish()
        return cls(room_id, term, host, state, lineage, entry, body, signature)

    def encode(self) -> bytes:
        return _join_signed(self.body, self.signature)

    def signature_valid(self) -> bool:
        return self.host.verify(Domain.SNAPSHOT, self.body, self.signature)


@attrs.frozen
class SnapshotRequest:
    room_id: RoomId
    term: Term
    seq: int

    def encode(self) -> bytes:
        w = Writer().fixed(self.room_id.raw, ROOM_ID_SIZE)
        self.term.encode(w)
        return w.u64(self.seq).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> SnapshotRequest:
        r = Reader(data, "snapshot request")
        message = cls(_room(r), Term.decode(r), r.u64())
        r.finish()
        return message


@attrs.frozen
class JoinRequest:
    """Sent by a joiner as the first message on a fresh link.

    ``redemption`` is the joiner's signature over the link's handshake hash and
    the invite, so a captured join can't be replayed on another link.
    """

    token: bytes
    display_name: str
    redemption: bytes = attrs.field(repr=False)

    def encode(self) -> bytes:
        w = Writer().blob(self.token).text(self.display_name)
        return w.fixed(self.redemption, SIGNATURE_SIZE).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> JoinRequest:
        r = Reader(data, "join request")
        message = cls(r.blob(8192), r.text(100), r.fixed(SIGNATURE_SIZE))
        r.finish()
        return message


@attrs.frozen
class JoinRefused:
    problem: str
    message: str

    def encode(self) -> bytes:
        return Writer().text(self.problem).text(self.message).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> JoinRefused:
        r = Reader(data, "join refusal")
        message = cls(r.text(64), r.text(1000))
        r.finish()
        return message


Message: TypeAlias = (
    SignedRequest
    | LogEntry
    | Heartbeat
    | Claim
    | PreVoteRequest
    | PreVoteAnswer
    | Snapshot
    | SnapshotRequest
    | JoinRequest
    | JoinRefused
)

_KINDS: dict[type, Kind] = {
    SignedRequest: Kind.REQUEST,
    LogEntry: Kind.ENTRY,
    Heartbeat: Kind.HEARTBEAT,
    Claim: Kind.CLAIM,
    PreVoteRequest: Kind.PRE_VOTE_REQUEST,
    PreVoteAnswer: Kind.PRE_VOTE_ANSWER,
    SnapshotRequest: Kind.SNAPSHOT_REQUEST,
    JoinRequest: Kind.JOIN,
    JoinRefused: Kind.JOIN_REFUSED,
}


def encode_message(message: Message, *, merge_offer: bool = False) -> bytes:
    """Wrap ``message`` in an envelope.  A snapshot is either a resync or a merge offer."""
    if isinstance(message, Snapshot):
        kind = Kind.MERGE_OFFER if merge_offer else Kind.SNAPSHOT
    else:
        kind = _KINDS[type(message)]
    return bytes([PROTOCOL_VERSION, kind]) + message.encode()


def decode_message(data: bytes) -> tuple[Kind, Message]:
    """Open an envelope.  Raises :class:`WireError` on anything malformed."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise WireError(f"control message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    if len(data) < 2:
        raise WireError("control message is truncated")
    if data[0] != PROTOCOL_VERSION:
        raise WireError(f"control protocol version {data[0]} is not supported")
    try:
        kind = Kind(data[1])
    except ValueError:
        raise WireError(f"unknown control message kind {data[1]}") from None
    decode = _DECODERS[kind]
    payload = data[2:]
    memo = active_memo()
    if memo is not None and kind in _IMMUTABLE_KINDS:
        return kind, memo.parsed(data, lambda: decode(payload))
    return kind, decode(payload)


_DECODERS: dict[Kind, Callable[[bytes], Message]] = {
    Kind.REQUEST: SignedRequest.decode,
    Kind.ENTRY: LogEntry.decode,
    Kind.HEARTBEAT: Heartbeat.decode,
    Kind.CLAIM: Claim.decode,
    Kind.PRE_VOTE_REQUEST: PreVoteRequest.decode,
    Kind.PRE_VOTE_ANSWER: PreVoteAnswer.decode,
    Kind.SNAPSHOT: Snapshot.decode,
    Kind.MERGE_OFFER: Snapshot.decode,
    Kind.SNAPSHOT_REQUEST: SnapshotRequest.decode,
    Kind.JOIN: JoinRequest.decode,
    Kind.JOIN_REFUSED: JoinRefused.decode,
}
# Messages that decode to frozen values, which peers sharing a memo may share.
# A snapshot carries a mutable RoomState, so every peer parses its own.
_IMMUTABLE_KINDS = frozenset(
    {
        Kind.REQUEST,
        Kind.ENTRY,
        Kind.HEARTBEAT,
        Kind.CLAIM,
        Kind.PRE_VOTE_REQUEST,
        Kind.PRE_VOTE_ANSWER,
    }
)
