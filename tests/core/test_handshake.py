"""The link handshake: Noise XX with identity proofs, bound to a room and version."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mitalk_p2p.core.errors import LocalProtocolError, RemoteProtocolError
from mitalk_p2p.core.handshake import (
    LINK_VERSION,
    MAX_PLAINTEXT,
    MESSAGE_SIZES,
    HandshakeError,
    HandshakeReplayGuard,
    IdentityProof,
    LinkError,
    LinkEstablished,
    LinkHandshake,
    LinkRole,
    LinkState,
    SecureChannel,
    SendHandshakeMessage,
    link_prologue,
    redemption_payload,
    sign_redemption,
    verify_redemption,
)
from mitalk_p2p.core.identity import Domain, Identity, PublicKey
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.noise import MAX_MESSAGE_LEN, HandshakeState, KeyPair

ROOM = RoomId(bytes(range(16)))
OTHER_ROOM = RoomId(bytes(range(1, 17)))
ALICE = Identity.from_seed(b"A" * 32, "alice")
BOB = Identity.from_seed(b"B" * 32, "bob")
MALLORY = Identity.from_seed(b"M" * 32, "mallory")


def new_pair(
    *,
    responder_room: RoomId = ROOM,
    responder_version: int = LINK_VERSION,
    guard: HandshakeReplayGuard | None = None,
) -> tuple[LinkHandshake, LinkHandshake]:
    initiator = LinkHandshake.initiator(ALICE, ROOM)
    responder = LinkHandshake.responder(
        BOB, responder_room, version=responder_version, replay_guard=guard
    )
    return initiator, responder


def only_message(outputs: list[SendHandshakeMessage | LinkEstablished]) -> bytes:
    assert len(outputs) == 1 and isinstance(outputs[0], SendHandshakeMessage)
    return outputs[0].data


def establish(initiator: LinkHandshake, responder: LinkHandshake) -> tuple[bytes, bytes, bytes]:
    message_1 = initiator.start()
    message_2 = only_message(responder.receive(message_1))
    send, done = initiator.receive(message_2)
    assert isinstance(send, SendHandshakeMessage) and isinstance(done, LinkEstablished)
    [finished] = responder.receive(send.data)
    assert isinstance(finished, LinkEstablished)
    return message_1, message_2, send.data


def established_channels() -> tuple[SecureChannel, SecureChannel]:
    initiator, responder = new_pair()
    establish(initiator, responder)
    return initiator.channel, responder.channel


def assert_failed_and_forgotten(link: LinkHandshake, reason: str) -> None:
    assert link.state is LinkState.FAILED
    assert link.failure is not None and reason in link.failure
    assert link._noise is None and link._static is None and link._identity is None
    assert link._message_1 is None and link._established is None
    for call in (link.start, lambda: link.receive(b"x" * 32), lambda: link.channel):
        with pytest.raises(LocalProtocolError):
            call()


# -- the happy path


def test_handshake_establishes_a_mutually_authenticated_link() -> None:
    initiator, responder = new_pair()
    assert initiator.role is LinkRole.INITIATOR and initiator.state is LinkState.SEND_MESSAGE_1
    assert responder.role is LinkRole.RESPONDER and responder.state is LinkState.AWAIT_MESSAGE_1
    messages = establish(initiator, responder)
    assert [len(m) for m in messages] == [32, 192, 160] == list(MESSAGE_SIZES.values())
    assert {initiator.state, responder.state} == {LinkState.ESTABLISHED}
    assert initiator.remote_identity == BOB.public_key
    assert responder.remote_identity == ALICE.public_key
    assert initiator.handshake_hash == responder.handshake_hash
    assert len(initiator.handshake_hash) == 64
    assert initiator.channel.remote_identity == BOB.public_key
    for n in range(5):
        text = b"message %d" % n
        assert responder.channel.decrypt(initiator.channel.encrypt(text)) == text
        assert initiator.channel.decrypt(responder.channel.encrypt(text)) == text
    assert initiator._noise is None and initiator._static is None


def test_each_link_has_its_own_handshake_hash() -> None:
    first, second = new_pair(), new_pair()
    establish(*first)
    establish(*second)
    assert first[0].handshake_hash != second[0].handshake_hash


def test_expected_remote_is_enforced() -> None:
    initiator = LinkHandshake.initiator(ALICE, ROOM, expected_remote=MALLORY.public_key)
    responder = LinkHandshake.responder(BOB, ROOM)
    message_2 = only_message(responder.receive(initiator.start()))
    with pytest.raises(HandshakeError, match="expected"):
        initiator.receive(message_2)
    assert_failed_and_forgotten(initiator, "expected")

    initiator = LinkHandshake.initiator(ALICE, ROOM, expected_remote=BOB.public_key)
    establish(initiator, LinkHandshake.responder(BOB, ROOM))
    assert initiator.remote_identity == BOB.public_key


def test_prologue_binds_label_version_and_room() -> None:
    assert link_prologue(ROOM) == b"mitalk-link" + bytes([LINK_VERSION]) + ROOM.raw
    assert link_prologue(ROOM, 7) != link_prologue(ROOM)
    assert link_prologue(OTHER_ROOM) != link_prologue(ROOM)
    with pytest.raises(LocalProtocolError):
        LinkHandshake.initiator(ALICE, ROOM, version=256)


def test_identity_proof_round_trip() -> None:
    static = KeyPair.generate()
    proof = IdentityProof.create(ALICE, static.public)
    assert IdentityProof.from_bytes(proof.to_bytes()) == proof
    assert len(proof.to_bytes()) == 96
    assert proof.verify(static.public)
    assert not proof.verify(KeyPair.generate().public)


# -- wrong prologue


@pytest.mark.parametrize(
    ("room", "version"), [(OTHER_ROOM, LINK_VERSION), (ROOM, LINK_VERSION + 1)]
)
def test_wrong_room_or_version_fails_the_initiator(room: RoomId, version: int) -> None:
    initiator, responder = new_pair(responder_room=room, responder_version=version)
    message_2 = only_message(responder.receive(initiator.start()))
    with pytest.raises(HandshakeError, match="another room") as info:
        initiator.receive(message_2)
    assert "message 2" in str(info.value)
    assert_failed_and_forgotten(initiator, "another room")


def test_wrong_room_fails_the_responder_at_message_3() -> None:
    # An initiator in another room that pushes on regardless (a raw Noise peer).
    attacker = HandshakeState.initialize(
        initiator=True, prologue=link_prologue(OTHER_ROOM), static=KeyPair.generate()
    )
    responder = LinkHandshake.responder(BOB, ROOM)
    responder.receive(attacker.write_message(b""))
    # The attacker can't read message 2, so it answers with a well-sized guess.
    with pytest.raises(HandshakeError, match="message 3"):
        responder.receive(bytes(MESSAGE_SIZES[3]))
    assert_failed_and_forgotten(responder, "authentication")


# -- bad identity proofs


def proof_over_other_static(_static: KeyPair) -> bytes:
    return IdentityProof.create(MALLORY, KeyPair.generate().public).to_bytes()


def proof_claiming_other_key(static: KeyPair) -> bytes:
    signature = MALLORY.sign(Domain.NOISE_STATIC, static.public)
    return IdentityProof(BOB.public_key, signature).to_bytes()


def proof_in_wrong_domain(static: KeyPair) -> bytes:
    signature = MALLORY.sign(Domain.INVITE, static.public)
    return IdentityProof(MALLORY.public_key, signature).to_bytes()


def proof_of_garbage(_static: KeyPair) -> bytes:
    return MALLORY.public_key.raw + b"\xff" * 64


BAD_PROOFS = [
    proof_over_other_static,
    proof_claiming_other_key,
    proof_in_wrong_domain,
    proof_of_garbage,
]


@pytest.mark.parametrize("make_proof", BAD_PROOFS)
def test_bad_identity_proof_in_message_2(make_proof: Callable[[KeyPair], bytes]) -> None:
    initiator = LinkHandshake.initiator(ALICE, ROOM)
    static = KeyPair.generate()
    attacker = HandshakeState.initialize(
        initiator=False, prologue=link_prologue(ROOM), static=static
    )
    attacker.read_message(initiator.start())
    with pytest.raises(HandshakeError, match="identity proof does not verify"):
        initiator.receive(attacker.write_message(make_proof(static)))
    assert_failed_and_forgotten(initiator, "message 2")


@pytest.mark.parametrize("make_proof", BAD_PROOFS)
def test_bad_identity_proof_in_message_3(make_proof: Callable[[KeyPair], bytes]) -> None:
    responder = LinkHandshake.responder(BOB, ROOM)
    static = KeyPair.generate()
    attacker = HandshakeState.initialize(
        initiator=True, prologue=link_prologue(ROOM), static=static
    )
    message_2 = only_message(responder.receive(attacker.write_message(b"")))
    attacker.read_message(message_2)
    with pytest.raises(HandshakeError, match="identity proof does not verify"):
        responder.receive(attacker.write_message(make_proof(static)))
    assert_failed_and_forgotten(responder, "message 3")


# -- replays


def test_replayed_message_1_to_the_same_responder() -> None:
    initiator, responder = new_pair()
    message_1 = initiator.start()
    responder.receive(message_1)
    with pytest.raises(HandshakeError, match="message 1 replayed"):
        responder.receive(message_1)
    assert_failed_and_forgotten(responder, "replayed")


def test_replay_guard_refuses_message_1_seen_by_another_responder() -> None:
    guard = HandshakeReplayGuard(max_entries=8)
    initiator, responder = new_pair(guard=guard)
    message_1 = initiator.start()
    responder.receive(message_1)
    assert message_1 in guard and len(guard) == 1
    second = LinkHandshake.responder(BOB, ROOM, replay_guard=guard)
    with pytest.raises(HandshakeError, match="seen recently"):
        second.receive(message_1)
    assert_failed_and_forgotten(second, "replayed")
    assert len(guard) == 1


def test_replay_guard_leaves_the_original_session_alone() -> None:
    guard = HandshakeReplayGuard()
    initiator, responder = new_pair(guard=guard)
    establish(initiator, responder)
    assert len(guard) == 1
    assert responder.remote_identity == ALICE.public_key


def test_replay_guard_stays_bounded_and_evicts_oldest() -> None:
    guard = HandshakeReplayGuard(max_entries=10)
    messages = [bytes([n]) * 32 for n in range(100)]
    for message in messages:
        guard.admit(message)
        assert len(guard) <= 10
    assert len(guard) == 10
    assert messages[0] not in guard and messages[89] not in guard
    assert all(m in guard for m in messages[90:])
    guard.admit(messages[0])  # forgotten, so admitted again
    with pytest.raises(HandshakeError):
        guard.admit(messages[99])
    with pytest.raises(HandshakeError, match="truncated"):
        guard.admit(b"short")
    assert b"not bytes" not in guard and 5 not in guard
    with pytest.raises(LocalProtocolError):
        HandshakeReplayGuard(max_entries=0)


def test_replayed_message_3_into_a_new_session() -> None:
    initiator, responder = new_pair()
    message_1, _, message_3 = establish(initiator, responder)
    # An attacker replays the whole initiator side into a fresh responder.
    fresh = LinkHandshake.responder(BOB, ROOM)
    fresh.receive(message_1)
    with pytest.raises(HandshakeError, match=r"message 3.*authentication"):
        fresh.receive(message_3)
    assert_failed_and_forgotten(fresh, "replayed")


# -- sizes and states


@pytest.mark.parametrize(
    ("stage", "size", "reason"),
    [
        (1, 0, "truncated"),
        (1, 31, "truncated"),
        (1, 33, "oversize"),
        (1, MAX_MESSAGE_LEN + 1, "Noise maximum"),
        (2, 191, "truncated"),
        (2, 193, "oversize"),
        (2, 100_000, "Noise maximum"),
        (3, 159, "truncated"),
        (3, 161, "oversize"),
        (3, MAX_MESSAGE_LEN, "oversize"),
    ],
)
def test_wrong_sized_messages(stage: int, size: int, reason: str) -> None:
    target = link_at_stage(stage)
    with pytest.raises(HandshakeError, match=reason):
        target.receive(b"\x07" * size)
    assert_failed_and_forgotten(target, reason)


def link_at_stage(stage: int) -> LinkHandshake:
    """A handshake waiting for message ``stage``."""
    initiator, responder = new_pair()
    if stage == 1:
        return responder
    message_1 = initiator.start()
    if stage == 2:
        return initiator
    responder.receive(message_1)
    return responder


def valid_message_for(stage: int) -> tuple[LinkHandshake, bytes]:
    """A handshake waiting for message ``stage``, and that message."""
    initiator, responder = new_pair()
    message_1 = initiator.start()
    if stage == 1:
        return responder, message_1
    message_2 = only_message(responder.receive(message_1))
    if stage == 2:
        return initiator, message_2
    send = initiator.receive(message_2)[0]
    assert isinstance(send, SendHandshakeMessage)
    return responder, send.data


@pytest.mark.parametrize(("stage", "wrong"), [(1, 3), (1, 2), (2, 1), (2, 3), (3, 2)])
def test_message_out_of_order(stage: int, wrong: int) -> None:
    target = link_at_stage(stage)
    with pytest.raises(HandshakeError, match=f"size of message {wrong}: message out of order"):
        target.receive(bytes(MESSAGE_SIZES[wrong]))
    assert target.state is LinkState.FAILED


def test_calls_in_the_wrong_state_are_local_errors() -> None:
    initiator, responder = new_pair()
    with pytest.raises(LocalProtocolError, match="receives no handshake message"):
        initiator.receive(bytes(192))
    with pytest.raises(LocalProtocolError, match="new initiator"):
        responder.start()
    initiator.start()
    with pytest.raises(LocalProtocolError, match="new initiator"):
        initiator.start()
    with pytest.raises(LocalProtocolError, match="not established"):
        _ = initiator.remote_identity
    with pytest.raises(LocalProtocolError, match="not established"):
        _ = responder.handshake_hash
    initiator, responder = new_pair()
    establish(initiator, responder)
    with pytest.raises(LocalProtocolError, match="use the SecureChannel"):
        responder.receive(bytes(160))
    with pytest.raises(LocalProtocolError, match="use the SecureChannel"):
        initiator.start()


# -- the secure channel


def test_channel_rejects_tampered_messages_and_closes() -> None:
    sender, receiver = established_channels()
    message = bytearray(sender.encrypt(b"hello"))
    message[0] ^= 0x80
    with pytest.raises(LinkError, match=r"authentication.*link closed"):
        receiver.decrypt(bytes(message))
    assert receiver.is_closed
    assert not receiver._send.has_key() and not receiver._receive.has_key()
    with pytest.raises(LocalProtocolError, match="link is closed"):
        receiver.decrypt(bytes(message))
    with pytest.raises(LocalProtocolError, match="link is closed"):
        receiver.encrypt(b"reply")


def test_channel_rejects_replayed_and_reordered_messages() -> None:
    sender, receiver = established_channels()
    first = sender.encrypt(b"one")
    assert receiver.decrypt(first) == b"one"
    with pytest.raises(LinkError):
        receiver.decrypt(first)

    sender, receiver = established_channels()
    sender.encrypt(b"one")
    with pytest.raises(LinkError):
        receiver.decrypt(sender.encrypt(b"two"))


def test_channel_rejects_reflected_messages() -> None:
    sender, _ = established_channels()
    with pytest.raises(LinkError):
        sender.decrypt(sender.encrypt(b"echo"))


@pytest.mark.parametrize("size", [0, 15, MAX_MESSAGE_LEN + 1])
def test_channel_rejects_garbage_sizes(size: int) -> None:
    _, receiver = established_channels()
    with pytest.raises(LinkError):
        receiver.decrypt(b"\x00" * size)


def test_channel_size_limits_and_close() -> None:
    sender, receiver = established_channels()
    big = b"x" * MAX_PLAINTEXT
    encrypted = sender.encrypt(big)
    assert len(encrypted) == MAX_MESSAGE_LEN
    assert receiver.decrypt(encrypted) == big
    with pytest.raises(LocalProtocolError, match="exceeds"):
        sender.encrypt(big + b"x")
    sender.close()
    assert sender.is_closed
    with pytest.raises(LocalProtocolError, match="closed locally"):
        sender.encrypt(b"x")


# -- invite redemption


def test_redemption_binds_session_and_token() -> None:
    first, second = new_pair(), new_pair()
    establish(*first)
    establish(*second)
    hash_1, hash_2 = first[0].handshake_hash, second[0].handshake_hash
    token = b"mitalk-invite-token-bytes"
    signature = sign_redemption(ALICE, hash_1, token)
    assert verify_redemption(ALICE.public_key, hash_1, token, signature)
    assert not verify_redemption(ALICE.public_key, hash_2, token, signature)
    assert not verify_redemption(ALICE.public_key, hash_1, token + b"!", signature)
    assert not verify_redemption(MALLORY.public_key, hash_1, token, signature)
    assert not verify_redemption(ALICE.public_key, hash_1, token, signature[:-1])
    noise_signature = ALICE.sign(Domain.NOISE_STATIC, redemption_payload(hash_1, token))
    assert not verify_redemption(ALICE.public_key, hash_1, token, noise_signature)
    with pytest.raises(LocalProtocolError):
        sign_redemption(ALICE, hash_1[:32], token)
    with pytest.raises(LocalProtocolError):
        verify_redemption(ALICE.public_key, b"", token, signature)


# -- secrets stay secret


def test_secrets_never_appear_in_reprs_or_errors() -> None:
    statics = [KeyPair.generate(), KeyPair.generate()]
    ephemerals = [KeyPair.generate(), KeyPair.generate()]

    def make(room: RoomId = ROOM) -> tuple[LinkHandshake, LinkHandshake]:
        return (
            LinkHandshake.initiator(
                ALICE, ROOM, static_key=statics[0], ephemeral_key=ephemerals[0]
            ),
            LinkHandshake.responder(BOB, room, static_key=statics[1], ephemeral_key=ephemerals[1]),
        )

    texts: list[str] = []
    initiator, responder = make()
    texts += [repr(initiator), repr(responder)]
    message_2 = only_message(responder.receive(initiator.start()))
    texts += [repr(initiator), repr(responder), repr(initiator._noise), repr(responder._noise)]
    outputs = initiator.receive(message_2)
    texts += [repr(outputs), repr(initiator)]
    channel = initiator.channel
    cipher_keys = [channel._send._k, channel._receive._k]
    texts += [repr(channel), repr(channel._send), repr(channel._receive), repr(statics)]

    initiator, responder = make(OTHER_ROOM)
    message_2 = only_message(responder.receive(initiator.start()))
    with pytest.raises(HandshakeError) as info:
        initiator.receive(message_2)
    texts += [str(info.value), repr(info.value), repr(initiator)]
    with pytest.raises(LinkError) as link_info:
        channel.decrypt(b"\x01" * 40)
    texts += [str(link_info.value), repr(channel)]

    secrets = [k.private for k in statics + ephemerals] + [k for k in cipher_keys if k]
    assert len(secrets) == 6
    blob = "\n".join(texts)
    for secret in secrets:
        assert secret.hex() not in blob
        assert secret.hex()[:16] not in blob
        assert repr(secret) not in blob
    assert ALICE.secret_seed().hex() not in blob


# -- hypothesis: only RemoteProtocolError escapes


sized_garbage = st.one_of(
    st.binary(max_size=400),
    *(st.binary(min_size=n, max_size=n) for n in MESSAGE_SIZES.values()),
)


def mutate(data: st.DataObject, valid: bytes) -> bytes:
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if kind == "flip":
        index = data.draw(st.integers(0, len(valid) - 1))
        bit = data.draw(st.integers(0, 7))
        return valid[:index] + bytes([valid[index] ^ (1 << bit)]) + valid[index + 1 :]
    if kind == "truncate":
        return valid[: data.draw(st.integers(0, len(valid) - 1))]
    if kind == "extend":
        return valid + data.draw(st.binary(min_size=1, max_size=64))
    start = data.draw(st.integers(0, len(valid) - 1))
    return valid[:start] + data.draw(st.binary(max_size=64)) + valid[start + 16 :]


def feed(target: LinkHandshake, message: bytes) -> None:
    try:
        target.receive(message)
    except RemoteProtocolError:
        assert target.state is LinkState.FAILED
        assert target._noise is None


@settings(max_examples=200, deadline=None)
@given(stage=st.sampled_from([1, 2, 3]), garbage=sized_garbage)
def test_random_bytes_at_each_stage(stage: int, garbage: bytes) -> None:
    feed(link_at_stage(stage), garbage)


@settings(max_examples=200, deadline=None)
@given(stage=st.sampled_from([1, 2, 3]), data=st.data())
def test_mutated_messages_at_each_stage(stage: int, data: st.DataObject) -> None:
    target, valid = valid_message_for(stage)
    mutated = mutate(data, valid)
    if stage == 1 or mutated == valid:
        feed(target, mutated)
    else:
        # Every byte of messages 2 and 3 is authenticated.
        with pytest.raises(HandshakeError):
            target.receive(mutated)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), plaintext=st.binary(max_size=100))
def test_mutated_and_random_transport_messages(data: st.DataObject, plaintext: bytes) -> None:
    sender, receiver = established_channels()
    valid = sender.encrypt(plaintext)
    message = data.draw(st.one_of(st.just(mutate(data, valid)), st.binary(max_size=200)))
    if message == valid:
        assert receiver.decrypt(message) == plaintext
    else:
        with pytest.raises(LinkError):
            receiver.decrypt(message)


def test_public_key_of_proof_can_be_any_32_bytes() -> None:
    # A claimed key that is not a valid Ed25519 point must fail verification, not crash.
    bogus = IdentityProof(PublicKey(b"\xff" * 32), b"\x00" * 64)
    assert not bogus.verify(KeyPair.generate().public)


def test_small_order_ephemeral_in_message_1_fails_the_responder() -> None:
    responder = LinkHandshake.responder(BOB, ROOM)
    with pytest.raises(HandshakeError, match="small-order"):
        responder.receive(bytes(32))
    assert_failed_and_forgotten(responder, "small-order")
