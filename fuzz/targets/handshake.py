"""Secure-link parsers: Noise XX messages, the link handshake, identity proofs, transport."""

from __future__ import annotations

from collections.abc import Iterator

from mitalk_p2p.core.errors import RemoteProtocolError, WireError
from mitalk_p2p.core.handshake import (
    IdentityProof,
    LinkEstablished,
    LinkHandshake,
    LinkState,
    SecureChannel,
    SendHandshakeMessage,
    link_prologue,
)
from mitalk_p2p.core.identity import Identity
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.noise import HandshakeState, KeyPair, NoiseError

from . import Target, expect

ROOM = RoomId(bytes(range(16)))
ALICE = Identity.from_seed(b"A" * 32, "alice")
BOB = Identity.from_seed(b"B" * 32, "bob")
KEYS = {name: KeyPair.from_private(bytes([n + 1]) * 32) for n, name in enumerate("abcd")}


def _pair() -> tuple[LinkHandshake, LinkHandshake]:
    """A deterministic initiator and responder: same keys, so the same messages, every time."""
    initiator = LinkHandshake.initiator(ALICE, ROOM, static_key=KEYS["a"], ephemeral_key=KEYS["b"])
    responder = LinkHandshake.responder(BOB, ROOM, static_key=KEYS["c"], ephemeral_key=KEYS["d"])
    return initiator, responder


def _sent(outputs: list[SendHandshakeMessage | LinkEstablished]) -> bytes:
    [message] = [o.data for o in outputs if isinstance(o, SendHandshakeMessage)]
    return message


def transcript() -> tuple[bytes, bytes, bytes, SecureChannel, SecureChannel]:
    initiator, responder = _pair()
    message_1 = initiator.start()
    message_2 = _sent(responder.receive(message_1))
    message_3 = _sent(initiator.receive(message_2))
    responder.receive(message_3)
    return message_1, message_2, message_3, initiator.channel, responder.channel


def _at_stage(stage: int) -> LinkHandshake:
    """A handshake waiting for message ``stage``."""
    initiator, responder = _pair()
    if stage == 1:
        return responder
    message_1 = initiator.start()
    if stage == 2:
        return initiator
    responder.receive(message_1)
    return responder


def _check_stage(stage: int, data: bytes) -> None:
    link = _at_stage(stage)
    try:
        outputs = link.receive(data)
    except RemoteProtocolError:
        expect(link.state is LinkState.FAILED, "a refused handshake did not fail")
        return
    if stage > 1:  # messages 2 and 3 are authenticated: only the genuine one passes
        expect(data == transcript()[stage - 1], f"a forged message {stage} was accepted")
    expect(bool(outputs), "an accepted handshake message produced nothing")


def check_message_1(data: bytes) -> None:
    _check_stage(1, data)


def check_message_2(data: bytes) -> None:
    _check_stage(2, data)


def check_message_3(data: bytes) -> None:
    _check_stage(3, data)


def check_noise(data: bytes) -> None:
    """The generic Noise layer, without the link's exact-size checks: message 2 of any size."""
    state = HandshakeState.initialize(
        initiator=True, prologue=link_prologue(ROOM), static=KEYS["a"], ephemeral=KEYS["b"]
    )
    state.write_message()
    try:
        state.read_message(data)
    except NoiseError:
        return
    expect(state.remote_static is not None, "message 2 was read without a static key")


def check_transport(data: bytes) -> None:
    *_messages, sender, receiver = transcript()
    try:
        plaintext = receiver.decrypt(data)
    except RemoteProtocolError:
        expect(receiver.is_closed, "a refused transport message left the channel open")
        return
    expect(sender.encrypt(plaintext) == data, "a message decrypted that the peer never sent")


def check_identity_proof(data: bytes) -> None:
    try:
        proof = IdentityProof.from_bytes(data)
    except WireError:
        return
    expect(proof.to_bytes() == data, "identity proof re-encodes to other bytes")
    expect(isinstance(proof.verify(KEYS["a"].public), bool), "proof check gave a non-boolean")


def seeds() -> Iterator[tuple[str, bytes]]:
    message_1, message_2, message_3, sender, _receiver = transcript()
    yield "message-1", message_1
    yield "message-2", message_2
    yield "message-3", message_3
    yield "noise-message-2", message_2
    yield "transport", sender.encrypt(b"\x00" + bytes(range(100)))
    yield "identity-proof", IdentityProof.create(ALICE, KEYS["a"].public).to_bytes()


TARGET = Target(
    "handshake",
    "the secure-link handshake (messages 1 to 3), Noise XX messages, identity proofs and "
    "transport messages",
    (
        ("message-1", check_message_1),
        ("message-2", check_message_2),
        ("message-3", check_message_3),
        ("noise-message-2", check_noise),
        ("transport", check_transport),
        ("identity-proof", check_identity_proof),
    ),
    seeds,
)
