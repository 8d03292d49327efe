"""The secure-link handshake: Noise XX plus an Ed25519 identity proof.

A sans-I/O state machine in the style of h11.  The driver feeds each
handshake message the peer sent to :meth:`LinkHandshake.receive` and gets back
outputs: :class:`SendHandshakeMessage` (bytes to put on the wire) and, at the
end, :class:`LinkEstablished` with the peer's identity and a
:class:`SecureChannel` for the transport phase.

The prologue binds the link version and the room id, so peers in different
rooms or speaking different versions can't complete a handshake.  Messages 2
and 3 each carry an :class:`IdentityProof`: the sender's Ed25519 key and its
signature over the sender's Noise static key, as libp2p does.

Handshake messages are raw Noise messages (framing is the transport's job),
and each has one exact size, so a message of the wrong size is refused before
any cryptography runs.  Any error fails the handshake for good: it forgets
its keys, enters :attr:`LinkState.FAILED` and raises
:class:`~.errors.LocalProtocolError` on further use.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Final, NoReturn, TypeAlias

import attrs

from .errors import LocalProtocolError, RemoteProtocolError, WireError
from .identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Domain, Identity, PublicKey
from .ids import RoomId
from .noise import (
    DHLEN,
    HASHLEN,
    MAX_MESSAGE_LEN,
    TAGLEN,
    CipherState,
    HandshakeState,
    KeyPair,
    NoiseError,
)
from .wire import Reader, Writer

LINK_VERSION: Final = 1
PROLOGUE_LABEL: Final = b"mitalk-link"

PROOF_SIZE: Final = PUBLIC_KEY_SIZE + SIGNATURE_SIZE
MESSAGE_SIZES: Final = {
    1: DHLEN,
    2: DHLEN + (DHLEN + TAGLEN) + (PROOF_SIZE + TAGLEN),
    3: (DHLEN + TAGLEN) + (PROOF_SIZE + TAGLEN),
}
"""The exact size of each handshake message: 32, 192 and 160 bytes."""

MAX_PLAINTEXT: Final = MAX_MESSAGE_LEN - TAGLEN


class HandshakeError(RemoteProtocolError):
    """The peer's handshake message was malformed, forged, replayed or out of place."""


class WrongPeerError(HandshakeError):
    """The peer proved an identity, but not the one this side dialled."""

    def __init__(self, number: int, actual: PublicKey, expected: PublicKey) -> None:
        super().__init__(
            f"message {number}: peer is {actual.fingerprint}, expected {expected.fingerprint}"
        )
        self.actual = actual
        self.expected = expected


class LinkError(RemoteProtocolError):
    """A transport message on an established link failed to decrypt."""


def link_prologue(room_id: RoomId, version: int = LINK_VERSION) -> bytes:
    """The Noise prologue: both sides must agree on it byte for byte."""
    return Writer().raw(PROLOGUE_LABEL).u8(version).fixed(room_id.raw, len(room_id.raw)).getvalue()


# -- identity proof ---------------------------------------------------------------


@attrs.frozen
class IdentityProof:
    """An Ed25519 key and its signature over a Noise static public key."""

    identity_key: PublicKey
    signature: bytes = attrs.field(repr=False)

    @classmethod
    def create(cls, identity: Identity, noise_static_public: bytes) -> IdentityProof:
        signature = identity.sign(Domain.NOISE_STATIC, noise_static_public)
        return cls(identity.public_key, signature)

    @classmethod
    def from_bytes(cls, data: bytes) -> IdentityProof:
        reader = Reader(data, "identity proof")
        key = PublicKey(reader.fixed(PUBLIC_KEY_SIZE))
        signature = reader.fixed(SIGNATURE_SIZE)
        reader.finish()
        return cls(key, signature)

    def to_bytes(self) -> bytes:
        return (
            Writer()
            .fixed(self.identity_key.raw, PUBLIC_KEY_SIZE)
            .fixed(self.signature, SIGNATURE_SIZE)
            .getvalue()
        )

    def verify(self, noise_static_public: bytes) -> bool:
        return self.identity_key.verify(Domain.NOISE_STATIC, noise_static_public, self.signature)


# -- invite redemption binding ----------------------------------------------------


def redemption_payload(handshake_hash: bytes, invite_bytes: bytes) -> bytes:
    """What a redemption signs: this session's handshake hash and a hash of the token.

    Binding the handshake hash means a captured redemption is worthless on
    any other link.
    """
    if len(handshake_hash) != HASHLEN:
        raise LocalProtocolError(f"handshake hash must be {HASHLEN} bytes")
    token_hash = hashlib.blake2b(invite_bytes, digest_size=32, person=b"mitalk-invite").digest()
    return Writer().fixed(handshake_hash, HASHLEN).fixed(token_hash, 32).getvalue()


def sign_redemption(identity: Identity, handshake_hash: bytes, invite_bytes: bytes) -> bytes:
    return identity.sign(Domain.REDEEM, redemption_payload(handshake_hash, invite_bytes))


def verify_redemption(
    public_key: PublicKey, handshake_hash: bytes, invite_bytes: bytes, signature: bytes
) -> bool:
    payload = redemption_payload(handshake_hash, invite_bytes)
    return public_key.verify(Domain.REDEEM, payload, signature)


# -- replay guard -----------------------------------------------------------------


def _max_entries_positive(_instance: object, _attribute: object, value: int) -> None:
    if value < 1:
        raise LocalProtocolError("a replay guard needs room for at least one entry")


@attrs.define(eq=False)
class HandshakeReplayGuard:
    """The initiator ephemeral keys a listener saw most recently.

    A listener consults it before answering a message 1, so a captured message 1
    replayed within the window is refused.  Memory is bounded: once full, the
    oldest key is forgotten.
    """

    max_entries: int = attrs.field(default=4096, validator=_max_entries_positive)
    """How many ephemeral keys to remember."""
    _seen: dict[bytes, None] = attrs.field(factory=dict, init=False, repr=False)

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, message_1: object) -> bool:
        return isinstance(message_1, bytes) and message_1[:DHLEN] in self._seen

    def admit(self, message_1: bytes) -> None:
        """Remember message 1's ephemeral key, or raise :class:`HandshakeError` if seen."""
        _check_size(message_1, 1)
        ephemeral = bytes(message_1[:DHLEN])
        if ephemeral in self._seen:
            raise HandshakeError("message 1 replayed: its ephemeral key was seen recently")
        self._seen[ephemeral] = None
        while len(self._seen) > self.max_entries:
            del self._seen[next(iter(self._seen))]


def _check_size(data: bytes, number: int) -> None:
    expected = MESSAGE_SIZES[number]
    size = len(data)
    if size == expected:
        return
    if size > MAX_MESSAGE_LEN:
        raise HandshakeError(
            f"message {number}: {size} bytes exceeds the Noise maximum of {MAX_MESSAGE_LEN}"
        )
    for other, other_size in MESSAGE_SIZES.items():
        if size == other_size:
            raise HandshakeError(
                f"expected message {number} ({expected} bytes) but got {size} bytes, "
                f"the size of message {other}: message out of order"
            )
    problem = "truncated" if size < expected else "oversize"
    raise HandshakeError(f"message {number} {problem}: {size} bytes, expected exactly {expected}")


# -- transport --------------------------------------------------------------------


@attrs.define(repr=False, eq=False)
class SecureChannel:
    """The transport phase of a link: one cipher per direction.

    Messages must be decrypted in the order they were sent (the nonce is
    implicit), so the link needs an ordered transport.  A message that fails
    to decrypt closes the channel: its keys are dropped and later calls raise
    :class:`~.errors.LocalProtocolError`.
    """

    remote_identity: PublicKey
    handshake_hash: bytes
    _send: CipherState
    _receive: CipherState
    _closed_reason: str | None = None

    @property
    def is_closed(self) -> bool:
        return self._closed_reason is not None

    def encrypt(self, plaintext: bytes) -> bytes:
        self._check_open()
        if len(plaintext) > MAX_PLAINTEXT:
            raise LocalProtocolError(
                f"plaintext of {len(plaintext)} bytes exceeds the maximum of {MAX_PLAINTEXT}"
            )
        return self._send.encrypt_with_ad(b"", plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        self._check_open()
        if len(ciphertext) > MAX_MESSAGE_LEN:
            self._fail(f"message of {len(ciphertext)} bytes exceeds {MAX_MESSAGE_LEN}")
        try:
            return self._receive.decrypt_with_ad(b"", ciphertext)
        except NoiseError as exc:
            self._fail(f"{exc} (tampered, replayed, reordered or not from this peer); link closed")

    def close(self) -> None:
        """Drop both keys; the channel can't be used again."""
        if self._closed_reason is None:
            self._closed_reason = "closed locally"
        self._send.clear()
        self._receive.clear()

    def _fail(self, reason: str) -> NoReturn:
        self._closed_reason = reason
        self.close()
        raise LinkError(reason)

    def _check_open(self) -> None:
        if self._closed_reason is not None:
            raise LocalProtocolError(f"link is closed: {self._closed_reason}")

    def __repr__(self) -> str:
        state = "closed" if self.is_closed else "open"
        return f"SecureChannel(remote={self.remote_identity!r}, {state})"


# -- handshake state machine --------------------------------------------------------


@attrs.frozen
class SendHandshakeMessage:
    """Put ``data`` on the wire to the peer, as one transport message."""

    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")


@attrs.frozen(eq=False)
class LinkEstablished:
    """The handshake completed: the peer proved it holds ``remote_identity``."""

    remote_identity: PublicKey
    handshake_hash: bytes = attrs.field(repr=lambda h: h.hex()[:16] + "…")
    channel: SecureChannel


HandshakeOutput: TypeAlias = SendHandshakeMessage | LinkEstablished


class LinkRole(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class LinkState(enum.Enum):
    SEND_MESSAGE_1 = "send message 1"
    AWAIT_MESSAGE_1 = "await message 1"
    AWAIT_MESSAGE_2 = "await message 2"
    AWAIT_MESSAGE_3 = "await message 3"
    ESTABLISHED = "established"
    FAILED = "failed"


_EXPECTED_MESSAGE: Final = {
    LinkState.AWAIT_MESSAGE_1: 1,
    LinkState.AWAIT_MESSAGE_2: 2,
    LinkState.AWAIT_MESSAGE_3: 3,
}


@attrs.define(repr=False, eq=False)
class LinkHandshake:
    """One side of a link handshake.  Build it with :meth:`initiator` or :meth:`responder`.

    Initiator: ``start()`` gives message 1; ``receive(message 2)`` gives message 3
    and :class:`LinkEstablished`.  Responder: ``receive(message 1)`` gives
    message 2; ``receive(message 3)`` gives :class:`LinkEstablished`.
    """

    role: LinkRole
    room_id: RoomId
    version: int
    state: LinkState
    _identity: Identity | None = attrs.field(repr=False)
    _static: KeyPair | None = attrs.field(repr=False)
    _noise: HandshakeState | None = attrs.field(repr=False)
    _expected_remote: PublicKey | None = None
    _replay_guard: HandshakeReplayGuard | None = None
    _message_1: bytes | None = None
    _established: LinkEstablished | None = None
    failure: str | None = None
    """Why the handshake failed, once it has."""

    @classmethod
    def initiator(
        cls,
        identity: Identity,
        room_id: RoomId,
        *,
        version: int = LINK_VERSION,
        static_key: KeyPair | None = None,
        ephemeral_key: KeyPair | None = None,
        expected_remote: PublicKey | None = None,
    ) -> LinkHandshake:
        """Dial a peer.  ``expected_remote``, if given, is the only identity accepted.

        ``static_key`` defaults to a fresh key per link; the identity proof binds
        it to ``identity`` either way.  ``ephemeral_key`` is for tests only.
        """
        return cls._new(
            LinkRole.INITIATOR,
            LinkState.SEND_MESSAGE_1,
            identity,
            room_id,
            version,
            static_key,
            ephemeral_key,
            expected_remote=expected_remote,
        )

    @classmethod
    def responder(
        cls,
        identity: Identity,
        room_id: RoomId,
        *,
        version: int = LINK_VERSION,
        static_key: KeyPair | None = None,
        ephemeral_key: KeyPair | None = None,
        replay_guard: HandshakeReplayGuard | None = None,
    ) -> LinkHandshake:
        """Answer a peer.  A shared ``replay_guard`` refuses recently seen message 1s."""
        return cls._new(
            LinkRole.RESPONDER,
            LinkState.AWAIT_MESSAGE_1,
            identity,
            room_id,
            version,
            static_key,
            ephemeral_key,
            replay_guard=replay_guard,
        )

    @classmethod
    def _new(
        cls,
        role: LinkRole,
        state: LinkState,
        identity: Identity,
        room_id: RoomId,
        version: int,
        static_key: KeyPair | None,
        ephemeral_key: KeyPair | None,
        *,
        expected_remote: PublicKey | None = None,
        replay_guard: HandshakeReplayGuard | None = None,
    ) -> LinkHandshake:
        if not 0 <= version <= 0xFF:
            raise LocalProtocolError(f"link version {version} does not fit in a byte")
        static = static_key if static_key is not None else KeyPair.generate()
        noise = HandshakeState.initialize(
            initiator=role is LinkRole.INITIATOR,
            prologue=link_prologue(room_id, version),
            static=static,
            ephemeral=ephemeral_key,
        )
        return cls(
            role,
            room_id,
            version,
            state,
            identity,
            static,
            noise,
            expected_remote=expected_remote,
            replay_guard=replay_guard,
        )

    # -- results

    @property
    def established(self) -> LinkEstablished:
        if self._established is None:
            raise LocalProtocolError(f"handshake is not established (state: {self.state.value})")
        return self._established

    @property
    def remote_identity(self) -> PublicKey:
        return self.established.remote_identity

    @property
    def handshake_hash(self) -> bytes:
        return self.established.handshake_hash

    @property
    def channel(self) -> SecureChannel:
        return self.established.channel

    # -- inputs

    def start(self) -> bytes:
        """Message 1, to send to the responder (initiator only, once)."""
        self._check_live()
        if self.state is not LinkState.SEND_MESSAGE_1:
            raise LocalProtocolError(f"start() is for a new initiator (state: {self.state.value})")
        message = self._live_noise().write_message(b"")
        self.state = LinkState.AWAIT_MESSAGE_2
        return message

    def receive(self, data: bytes) -> list[HandshakeOutput]:
        """Process one handshake message from the peer.

        Raises :class:`HandshakeError` (and fails the handshake) if the message
        is malformed, forged, replayed or out of place.
        """
        self._check_live()
        number = _EXPECTED_MESSAGE.get(self.state)
        if number is None:
            raise LocalProtocolError(
                f"{self.role.value} receives no handshake message in state {self.state.value}"
            )
        data = bytes(data)
        try:
            if number == 1:
                return self._receive_message_1(data)
            if number == 2:
                return self._receive_message_2(data)
            return self._receive_message_3(data)
        except HandshakeError as exc:
            self._fail(str(exc))
            raise
        except (NoiseError, WireError) as exc:
            reason = f"message {number}: {exc}"
            if number > 1:
                reason += (
                    " (peer is in another room, speaks another link version, "
                    "or the message was tampered with or replayed)"
                )
            self._fail(reason)
            raise HandshakeError(reason) from None

    def _receive_message_1(self, data: bytes) -> list[HandshakeOutput]:
        _check_size(data, 1)
        if self._replay_guard is not None:
            self._replay_guard.admit(data)
        noise = self._live_noise()
        noise.read_message(data)
        self._message_1 = data
        reply = noise.write_message(self._own_proof())
        self.state = LinkState.AWAIT_MESSAGE_3
        return [SendHandshakeMessage(reply)]

    def _receive_message_2(self, data: bytes) -> list[HandshakeOutput]:
        _check_size(data, 2)
        noise = self._live_noise()
        remote = self._verify_proof(2, noise.read_message(data), noise.remote_static)
        reply = noise.write_message(self._own_proof())
        return [SendHandshakeMessage(reply), self._establish(remote)]

    def _receive_message_3(self, data: bytes) -> list[HandshakeOutput]:
        if data == self._message_1:
            raise HandshakeError("message 1 replayed: this responder already answered it")
        _check_size(data, 3)
        noise = self._live_noise()
        remote = self._verify_proof(3, noise.read_message(data), noise.remote_static)
        return [self._establish(remote)]

    # -- helpers

    def _own_proof(self) -> bytes:
        assert self._identity is not None and self._static is not None
        return IdentityProof.create(self._identity, self._static.public).to_bytes()

    def _verify_proof(self, number: int, payload: bytes, remote_static: bytes | None) -> PublicKey:
        proof = IdentityProof.from_bytes(payload)
        assert remote_static is not None
        if not proof.verify(remote_static):
            raise HandshakeError(
                f"message {number}: identity proof does not verify (the signature does not "
                f"bind key {proof.identity_key.fingerprint} to the peer's Noise static key)"
            )
        if self._expected_remote is not None and proof.identity_key != self._expected_remote:
            raise WrongPeerError(number, proof.identity_key, self._expected_remote)
        return proof.identity_key

    def _establish(self, remote: PublicKey) -> LinkEstablished:
        noise = self._live_noise()
        handshake_hash = noise.handshake_hash
        send, receive = noise.transport_ciphers()
        channel = SecureChannel(remote, handshake_hash, send, receive)
        self._established = LinkEstablished(remote, handshake_hash, channel)
        self.state = LinkState.ESTABLISHED
        self._forget()
        return self._established

    def _live_noise(self) -> HandshakeState:
        assert self._noise is not None
        return self._noise

    def _forget(self) -> None:
        if self._noise is not None:
            self._noise.clear()
        self._noise = None
        self._static = None
        self._identity = None
        self._message_1 = None

    def _fail(self, reason: str) -> None:
        self.failure = reason
        self.state = LinkState.FAILED
        if self._noise is not None:
            self._noise.fail()
        self._forget()

    def _check_live(self) -> None:
        if self.state is LinkState.FAILED:
            raise LocalProtocolError(f"handshake failed earlier: {self.failure}")
        if self.state is LinkState.ESTABLISHED:
            raise LocalProtocolError("handshake is complete; use the SecureChannel")

    def __repr__(self) -> str:
        return f"LinkHandshake({self.role.value}, {self.state.value}, room={self.room_id!r})"
