"""The generic Noise layer: CipherState, SymmetricState and the XX HandshakeState."""

from __future__ import annotations

import ast
import hashlib
import struct
from pathlib import Path

import nacl.bindings
import pytest

from mitalk_p2p.core import handshake as handshake_module
from mitalk_p2p.core import noise as noise_module
from mitalk_p2p.core.errors import LocalProtocolError
from mitalk_p2p.core.noise import (
    HASHLEN,
    MAX_MESSAGE_LEN,
    MAX_NONCE,
    PROTOCOL_NAME,
    CipherState,
    HandshakeState,
    HandshakeStatus,
    KeyPair,
    NoiseError,
    SymmetricState,
    hkdf,
    hmac_hash,
)

PROLOGUE = b"test prologue"


def keyed_cipher(key: bytes = b"k" * 32) -> CipherState:
    cipher = CipherState()
    cipher.initialize_key(key)
    return cipher


def pair(
    prologue_i: bytes = PROLOGUE, prologue_r: bytes = PROLOGUE
) -> tuple[HandshakeState, HandshakeState]:
    initiator = HandshakeState.initialize(
        initiator=True, prologue=prologue_i, static=KeyPair.generate()
    )
    responder = HandshakeState.initialize(
        initiator=False, prologue=prologue_r, static=KeyPair.generate()
    )
    return initiator, responder


def run_xx(
    initiator: HandshakeState, responder: HandshakeState, payloads: tuple[bytes, bytes, bytes]
) -> list[bytes]:
    m1 = initiator.write_message(payloads[0])
    assert responder.read_message(m1) == payloads[0]
    m2 = responder.write_message(payloads[1])
    assert initiator.read_message(m2) == payloads[1]
    m3 = initiator.write_message(payloads[2])
    assert responder.read_message(m3) == payloads[2]
    return [m1, m2, m3]


# -- primitives


def test_hmac_hash_follows_rfc_2104_with_a_128_byte_block() -> None:
    key, data = b"chaining key" * 3, b"input"
    padded = key.ljust(128, b"\x00")
    inner = hashlib.blake2b(bytes(b ^ 0x36 for b in padded) + data).digest()
    outer = hashlib.blake2b(bytes(b ^ 0x5C for b in padded) + inner).digest()
    assert hmac_hash(key, data) == outer


def test_hkdf_outputs_chain_as_the_spec_says() -> None:
    ck, ikm = bytes(range(64)), b"dh output"
    temp = hmac_hash(ck, ikm)
    out1, out2 = hkdf(ck, ikm)
    assert out1 == hmac_hash(temp, b"\x01")
    assert out2 == hmac_hash(temp, out1 + b"\x02")
    assert len(out1) == len(out2) == HASHLEN


def test_keypair_from_private_derives_public_and_hides_private() -> None:
    pair_ = KeyPair.generate()
    again = KeyPair.from_private(pair_.private)
    assert again.public == pair_.public
    assert pair_.private.hex() not in repr(pair_)
    assert str(pair_.private) not in repr(pair_)
    with pytest.raises(LocalProtocolError):
        KeyPair.from_private(b"short")


# -- CipherState


def test_cipher_without_key_passes_plaintext_through() -> None:
    cipher = CipherState()
    assert not cipher.has_key()
    assert cipher.encrypt_with_ad(b"ad", b"hello") == b"hello"
    assert cipher.decrypt_with_ad(b"ad", b"hello") == b"hello"


def test_cipher_nonce_is_four_zero_bytes_and_little_endian_counter() -> None:
    key = bytes(range(32))
    cipher = keyed_cipher(key)
    cipher.set_nonce(0x0102030405)
    nonce = b"\x00" * 4 + struct.pack("<Q", 0x0102030405)
    expected = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(b"msg", b"ad", nonce, key)
    assert cipher.encrypt_with_ad(b"ad", b"msg") == expected
    assert cipher.nonce == 0x0102030406


def test_cipher_round_trip_and_failed_decrypt_keeps_nonce() -> None:
    sender, receiver = keyed_cipher(), keyed_cipher()
    first = sender.encrypt_with_ad(b"ad", b"one")
    second = sender.encrypt_with_ad(b"ad", b"two")
    with pytest.raises(NoiseError, match="authentication"):
        receiver.decrypt_with_ad(b"ad", second)  # wrong nonce
    assert receiver.nonce == 0
    with pytest.raises(NoiseError, match="authentication"):
        receiver.decrypt_with_ad(b"other ad", first)
    assert receiver.decrypt_with_ad(b"ad", first) == b"one"
    assert receiver.decrypt_with_ad(b"ad", second) == b"two"


def test_cipher_rejects_ciphertext_shorter_than_tag() -> None:
    with pytest.raises(NoiseError, match="shorter than"):
        keyed_cipher().decrypt_with_ad(b"", b"x" * 15)


def test_cipher_refuses_the_reserved_nonce() -> None:
    cipher = keyed_cipher()
    cipher.set_nonce(MAX_NONCE)
    with pytest.raises(LocalProtocolError, match="exhausted"):
        cipher.encrypt_with_ad(b"", b"x")
    with pytest.raises(NoiseError, match="exhausted"):
        cipher.decrypt_with_ad(b"", b"x" * 32)
    with pytest.raises(LocalProtocolError):
        cipher.set_nonce(MAX_NONCE + 1)


def test_cipher_rekey_agrees_and_changes_key() -> None:
    sender, receiver = keyed_cipher(), keyed_cipher()
    sender.rekey()
    receiver.rekey()
    message = sender.encrypt_with_ad(b"", b"after rekey")
    assert receiver.decrypt_with_ad(b"", message) == b"after rekey"
    with pytest.raises(NoiseError):
        keyed_cipher().decrypt_with_ad(b"", message)
    with pytest.raises(LocalProtocolError):
        CipherState().rekey()


def test_cipher_clear_drops_key_and_repr_hides_it() -> None:
    key = bytes(range(100, 132))
    cipher = keyed_cipher(key)
    assert key.hex() not in repr(cipher) and str(key) not in repr(cipher)
    cipher.clear()
    assert not cipher.has_key()
    with pytest.raises(LocalProtocolError):
        cipher.initialize_key(b"short")


# -- SymmetricState


def test_symmetric_state_pads_short_protocol_names() -> None:
    state = SymmetricState.initialize(PROTOCOL_NAME)
    assert state.handshake_hash == PROTOCOL_NAME + bytes(HASHLEN - len(PROTOCOL_NAME))
    long_name = b"N" * 65
    assert (
        SymmetricState.initialize(long_name).handshake_hash == hashlib.blake2b(long_name).digest()
    )


def test_symmetric_state_mix_hash() -> None:
    state = SymmetricState.initialize(PROTOCOL_NAME)
    before = state.handshake_hash
    state.mix_hash(b"data")
    assert state.handshake_hash == hashlib.blake2b(before + b"data").digest()


# -- HandshakeState


def test_xx_completes_with_payloads_and_matching_keys() -> None:
    initiator, responder = pair()
    messages = run_xx(initiator, responder, (b"", b"from responder", b"from initiator"))
    assert [len(m) for m in messages] == [32, 32 + 48 + 14 + 16, 48 + 14 + 16]
    assert initiator.is_complete and responder.is_complete
    assert initiator.handshake_hash == responder.handshake_hash
    assert initiator.remote_ephemeral == messages[1][:32]
    i_send, i_recv = initiator.transport_ciphers()
    r_send, r_recv = responder.transport_ciphers()
    assert r_recv.decrypt_with_ad(b"", i_send.encrypt_with_ad(b"", b"ping")) == b"ping"
    assert i_recv.decrypt_with_ad(b"", r_send.encrypt_with_ad(b"", b"pong")) == b"pong"
    with pytest.raises(LocalProtocolError, match="taken"):
        initiator.transport_ciphers()


def test_xx_learns_remote_statics() -> None:
    i_static, r_static = KeyPair.generate(), KeyPair.generate()
    initiator = HandshakeState.initialize(initiator=True, prologue=b"", static=i_static)
    responder = HandshakeState.initialize(initiator=False, prologue=b"", static=r_static)
    run_xx(initiator, responder, (b"", b"", b""))
    assert initiator.remote_static == r_static.public
    assert responder.remote_static == i_static.public


def test_xx_is_deterministic_with_injected_keys() -> None:
    keys = [KeyPair.from_private(bytes([n]) * 32) for n in range(1, 5)]

    def transcript() -> list[bytes]:
        initiator = HandshakeState.initialize(
            initiator=True, prologue=b"p", static=keys[0], ephemeral=keys[1]
        )
        responder = HandshakeState.initialize(
            initiator=False, prologue=b"p", static=keys[2], ephemeral=keys[3]
        )
        return [*run_xx(initiator, responder, (b"a", b"b", b"c")), initiator.handshake_hash]

    first = transcript()
    assert first == transcript()
    assert first[0][:32] == keys[1].public


def test_different_prologues_fail_at_message_2() -> None:
    initiator, responder = pair(b"room A", b"room B")
    responder.read_message(initiator.write_message(b""))
    with pytest.raises(NoiseError, match="authentication"):
        initiator.read_message(responder.write_message(b""))
    assert initiator.status is HandshakeStatus.FAILED


def test_turns_are_enforced() -> None:
    initiator, responder = pair()
    with pytest.raises(LocalProtocolError, match="ours to write"):
        initiator.read_message(b"x" * 32)
    with pytest.raises(LocalProtocolError, match="peer's to write"):
        responder.write_message(b"")
    run_xx(initiator, responder, (b"", b"", b""))
    with pytest.raises(LocalProtocolError, match="complete"):
        initiator.write_message(b"")
    with pytest.raises(LocalProtocolError, match="complete"):
        responder.read_message(b"")


def test_failed_handshake_forgets_keys_and_refuses_use() -> None:
    initiator, responder = pair()
    responder.read_message(initiator.write_message(b""))
    message_2 = bytearray(responder.write_message(b"payload"))
    message_2[40] ^= 1
    with pytest.raises(NoiseError):
        initiator.read_message(bytes(message_2))
    assert initiator.status is HandshakeStatus.FAILED
    assert initiator._s is None and initiator._e is None
    assert not initiator._symmetric.has_key()
    with pytest.raises(LocalProtocolError, match="failed"):
        initiator.read_message(bytes(message_2))
    with pytest.raises(LocalProtocolError, match="failed"):
        initiator.write_message(b"")
    with pytest.raises(LocalProtocolError, match="failed"):
        _ = initiator.handshake_hash


@pytest.mark.parametrize("size", [0, 31])
def test_truncated_message_1(size: int) -> None:
    _, responder = pair()
    with pytest.raises(NoiseError, match="truncated"):
        responder.read_message(b"\x01" * size)


def test_truncated_static_in_message_2() -> None:
    initiator, responder = pair()
    responder.read_message(initiator.write_message(b""))
    message_2 = responder.write_message(b"")
    with pytest.raises(NoiseError, match="static key"):
        initiator.read_message(message_2[:60])


def test_oversize_messages_are_refused() -> None:
    _, responder = pair()
    with pytest.raises(NoiseError, match="exceeds"):
        responder.read_message(b"\x01" * (MAX_MESSAGE_LEN + 1))
    initiator, _ = pair()
    with pytest.raises(LocalProtocolError, match="exceed"):
        initiator.write_message(b"x" * MAX_MESSAGE_LEN)
    assert initiator.status is HandshakeStatus.FAILED


def test_small_order_ephemeral_is_rejected() -> None:
    _, responder = pair()
    responder.read_message(bytes(32))  # the all-zero point
    with pytest.raises(NoiseError, match="small-order"):
        responder.write_message(b"")
    assert responder.status is HandshakeStatus.FAILED


def test_handshake_repr_hides_secrets() -> None:
    static, ephemeral = KeyPair.generate(), KeyPair.generate()
    state = HandshakeState.initialize(
        initiator=True, prologue=b"", static=static, ephemeral=ephemeral
    )
    text = repr(state) + repr(state._symmetric)
    for secret in (static.private, ephemeral.private):
        assert secret.hex() not in text and str(secret) not in text


# -- the sans-I/O rule, for the modules defined here

FORBIDDEN = {"trio", "socket", "time", "random", "os", "asyncio", "zeroconf", "sounddevice"}


@pytest.mark.parametrize("module", [noise_module, handshake_module])
def test_module_imports_no_io(module: object) -> None:
    path = Path(str(getattr(module, "__file__", "")))
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN
