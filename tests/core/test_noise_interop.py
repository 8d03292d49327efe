"""Our Noise XX against the independent ``noiseprotocol`` package, both ways round."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from noise.connection import Keypair, NoiseConnection

from mitalk_p2p.core.handshake import (
    HandshakeError,
    IdentityProof,
    LinkEstablished,
    LinkHandshake,
    SendHandshakeMessage,
    link_prologue,
)
from mitalk_p2p.core.identity import Identity
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.noise import PROTOCOL_NAME, HandshakeState, KeyPair

ROOM = RoomId(bytes(range(16)))
OURS = Identity.from_seed(b"O" * 32, "ours")
THEIRS = Identity.from_seed(b"T" * 32, "theirs")


def their_side(
    *,
    initiator: bool,
    static: KeyPair,
    prologue: bytes,
    ephemeral: KeyPair | None = None,
) -> NoiseConnection:
    connection = NoiseConnection.from_name(PROTOCOL_NAME)
    if initiator:
        connection.set_as_initiator()
    else:
        connection.set_as_responder()
    connection.set_keypair_from_private_bytes(Keypair.STATIC, static.private)
    if ephemeral is not None:
        connection.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral.private)
    connection.set_prologue(prologue)
    connection.start_handshake()
    return connection


def check_their_proof(payload: bytes, our_static: KeyPair) -> None:
    proof = IdentityProof.from_bytes(bytes(payload))
    assert proof.identity_key == OURS.public_key
    assert proof.verify(our_static.public)


def check_transport(ours: LinkHandshake, theirs: NoiseConnection) -> None:
    assert theirs.handshake_finished
    assert ours.handshake_hash == theirs.get_handshake_hash()
    for n in range(3):
        text = b"from us %d" % n
        assert theirs.decrypt(ours.channel.encrypt(text)) == text
        text = b"from them %d" % n
        assert ours.channel.decrypt(theirs.encrypt(text)) == text


def test_we_initiate_they_respond() -> None:
    our_static, their_static = KeyPair.generate(), KeyPair.generate()
    ours = LinkHandshake.initiator(OURS, ROOM, static_key=our_static)
    theirs = their_side(initiator=False, static=their_static, prologue=link_prologue(ROOM))

    assert theirs.read_message(ours.start()) == b""
    their_proof = IdentityProof.create(THEIRS, their_static.public).to_bytes()
    send, established = ours.receive(bytes(theirs.write_message(their_proof)))
    assert isinstance(send, SendHandshakeMessage) and isinstance(established, LinkEstablished)
    assert established.remote_identity == THEIRS.public_key
    check_their_proof(theirs.read_message(send.data), our_static)
    check_transport(ours, theirs)


def test_they_initiate_we_respond() -> None:
    our_static, their_static = KeyPair.generate(), KeyPair.generate()
    ours = LinkHandshake.responder(OURS, ROOM, static_key=our_static)
    theirs = their_side(initiator=True, static=their_static, prologue=link_prologue(ROOM))

    [send] = ours.receive(bytes(theirs.write_message(b"")))
    assert isinstance(send, SendHandshakeMessage)
    check_their_proof(theirs.read_message(send.data), our_static)
    their_proof = IdentityProof.create(THEIRS, their_static.public).to_bytes()
    [established] = ours.receive(bytes(theirs.write_message(their_proof)))
    assert isinstance(established, LinkEstablished)
    assert ours.remote_identity == THEIRS.public_key
    check_transport(ours, theirs)


def test_their_responder_in_another_room_is_refused() -> None:
    ours = LinkHandshake.initiator(OURS, ROOM)
    other = link_prologue(RoomId(bytes(16)))
    theirs = their_side(initiator=False, static=KeyPair.generate(), prologue=other)
    theirs.read_message(ours.start())
    message_2 = theirs.write_message(IdentityProof.create(THEIRS, bytes(32)).to_bytes())
    with pytest.raises(HandshakeError, match="another room"):
        ours.receive(bytes(message_2))


def test_their_forged_proof_is_refused() -> None:
    ours = LinkHandshake.responder(OURS, ROOM)
    theirs = their_side(initiator=True, static=KeyPair.generate(), prologue=link_prologue(ROOM))
    [send] = ours.receive(bytes(theirs.write_message(b"")))
    assert isinstance(send, SendHandshakeMessage)
    theirs.read_message(send.data)
    forged = IdentityProof.create(THEIRS, KeyPair.generate().public).to_bytes()
    with pytest.raises(HandshakeError, match="identity proof does not verify"):
        ours.receive(bytes(theirs.write_message(forged)))


# noiseprotocol warns whenever an ephemeral key is injected, which is the point here.
@pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set:UserWarning")
def test_transcripts_are_byte_identical_with_fixed_keys() -> None:
    keys = [KeyPair.from_private(bytes([n]) * 32) for n in (11, 22, 33, 44)]
    payloads = (b"zero", b"one", b"two")

    our_i = HandshakeState.initialize(
        initiator=True, prologue=b"p", static=keys[0], ephemeral=keys[1]
    )
    our_r = HandshakeState.initialize(
        initiator=False, prologue=b"p", static=keys[2], ephemeral=keys[3]
    )
    their_i = their_side(initiator=True, static=keys[0], ephemeral=keys[1], prologue=b"p")
    their_r = their_side(initiator=False, static=keys[2], ephemeral=keys[3], prologue=b"p")

    ours = [our_i.write_message(payloads[0])]
    our_r.read_message(ours[0])
    ours.append(our_r.write_message(payloads[1]))
    our_i.read_message(ours[1])
    ours.append(our_i.write_message(payloads[2]))
    our_r.read_message(ours[2])

    theirs = [bytes(their_i.write_message(payloads[0]))]
    their_r.read_message(theirs[0])
    theirs.append(bytes(their_r.write_message(payloads[1])))
    their_i.read_message(theirs[1])
    theirs.append(bytes(their_i.write_message(payloads[2])))
    their_r.read_message(theirs[2])

    assert ours == theirs
    assert our_i.handshake_hash == their_i.get_handshake_hash()
    send, _ = our_i.transport_ciphers()
    assert send.encrypt_with_ad(b"", b"data") == their_i.encrypt(b"data")


@settings(max_examples=25, deadline=None)
@given(
    payloads=st.tuples(st.binary(max_size=300), st.binary(max_size=300), st.binary(max_size=300)),
    we_initiate=st.booleans(),
)
def test_generic_layer_with_arbitrary_payloads(
    payloads: tuple[bytes, bytes, bytes], we_initiate: bool
) -> None:
    ours = HandshakeState.initialize(
        initiator=we_initiate, prologue=b"interop", static=KeyPair.generate()
    )
    theirs = their_side(initiator=not we_initiate, static=KeyPair.generate(), prologue=b"interop")
    for index, payload in enumerate(payloads):
        if (index % 2 == 0) == we_initiate:
            assert theirs.read_message(ours.write_message(payload)) == payload
        else:
            assert ours.read_message(bytes(theirs.write_message(payload))) == payload
    assert ours.is_complete and theirs.handshake_finished
    assert ours.handshake_hash == theirs.get_handshake_hash()

    send, receive = ours.transport_ciphers()
    assert theirs.decrypt(send.encrypt_with_ad(b"", b"to them")) == b"to them"
    assert receive.decrypt_with_ad(b"", theirs.encrypt(b"to us")) == b"to us"
    send.rekey()
    theirs.rekey_inbound_cipher()
    assert theirs.decrypt(send.encrypt_with_ad(b"", b"rekeyed")) == b"rekeyed"
    receive.rekey()
    theirs.rekey_outbound_cipher()
    assert receive.decrypt_with_ad(b"", theirs.encrypt(b"rekeyed back")) == b"rekeyed back"
