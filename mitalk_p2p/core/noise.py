"""The Noise protocol framework (revision 34), for ``Noise_XX_25519_ChaChaPoly_BLAKE2b``.

Three layers, named as in the specification:

* :class:`CipherState` — a ChaCha20-Poly1305 key and a 64-bit nonce counter;
* :class:`SymmetricState` — the chaining key and handshake hash, with HKDF over
  HMAC-BLAKE2b;
* :class:`HandshakeState` — the XX pattern::

      -> e
      <- e, ee, s, es
      -> s, se

This module knows nothing of identities or rooms; :mod:`.handshake` builds the
link protocol on top.  Key material comes from libsodium.  Secret bytes never
appear in a ``repr`` or an error message, and :meth:`clear` methods drop every
reference to them (Python cannot promise to overwrite the memory).

Errors: a peer's bad input raises :class:`NoiseError`, a
:class:`~.errors.RemoteProtocolError`; misuse of the API raises
:class:`~.errors.LocalProtocolError`.  A failed handshake clears itself and
refuses further use.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from typing import Final

import attrs
import nacl.bindings
import nacl.exceptions
import nacl.public

from .errors import LocalProtocolError, RemoteProtocolError

PROTOCOL_NAME: Final = b"Noise_XX_25519_ChaChaPoly_BLAKE2b"
DHLEN: Final = 32
HASHLEN: Final = 64
KEYLEN: Final = 32
TAGLEN: Final = 16
MAX_MESSAGE_LEN: Final = 65535
MAX_NONCE: Final = 2**64 - 1
"""Reserved by the specification: never used to encrypt a message, only to rekey."""


class NoiseError(RemoteProtocolError):
    """A peer's Noise message failed: bad length, bad tag or an invalid public key."""


# -- crypto functions -------------------------------------------------------------


def hash_(data: bytes) -> bytes:
    """HASH: BLAKE2b with a 64-byte digest."""
    return hashlib.blake2b(data).digest()


def hmac_hash(key: bytes, data: bytes) -> bytes:
    """HMAC-HASH as in RFC 2104, with BLAKE2b's 128-byte block."""
    return hmac.digest(key, data, hashlib.blake2b)


def hkdf(chaining_key: bytes, input_key_material: bytes) -> tuple[bytes, bytes]:
    """HKDF with two outputs, each ``HASHLEN`` bytes (the only arity XX needs)."""
    temp_key = hmac_hash(chaining_key, input_key_material)
    output1 = hmac_hash(temp_key, b"\x01")
    output2 = hmac_hash(temp_key, output1 + b"\x02")
    return output1, output2


def dh(private: bytes, public: bytes) -> bytes:
    """X25519.  A public key of small order (an all-zero result) is rejected."""
    try:
        return nacl.bindings.crypto_scalarmult(private, public)
    except nacl.exceptions.CryptoError:
        raise NoiseError("peer sent an invalid (small-order) X25519 public key") from None


def _nonce(n: int) -> bytes:
    return b"\x00\x00\x00\x00" + struct.pack("<Q", n)


@attrs.frozen(repr=False, eq=False)
class KeyPair:
    """An X25519 key pair.  Only :attr:`public` is shown by ``repr``."""

    private: bytes = attrs.field(repr=False)
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh key pair from libsodium's random generator."""
        return cls.from_private(bytes(nacl.public.PrivateKey.generate()))

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        if len(private) != DHLEN:
            raise LocalProtocolError(f"X25519 private key must be {DHLEN} bytes")
        private = bytes(private)
        return cls(private, nacl.bindings.crypto_scalarmult_base(private))

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()[:16]}…, private=<hidden>)"


# -- CipherState ------------------------------------------------------------------


@attrs.define(repr=False, eq=False)
class CipherState:
    """A ChaCha20-Poly1305 key (or none) and the nonce of the next message.

    Without a key, encryption is the identity function, as the spec requires
    for the first handshake messages.
    """

    _k: bytes | None = attrs.field(default=None, repr=False)
    _n: int = 0

    def initialize_key(self, key: bytes | None) -> None:
        if key is not None and len(key) != KEYLEN:
            raise LocalProtocolError(f"cipher key must be {KEYLEN} bytes")
        self._k = None if key is None else bytes(key)
        self._n = 0

    def has_key(self) -> bool:
        return self._k is not None

    @property
    def nonce(self) -> int:
        return self._n

    def set_nonce(self, nonce: int) -> None:
        if not 0 <= nonce <= MAX_NONCE:
            raise LocalProtocolError("nonce out of range")
        self._n = nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._k is None:
            return bytes(plaintext)
        if self._n >= MAX_NONCE:
            raise LocalProtocolError("nonce exhausted: this cipher must not encrypt again")
        ciphertext = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
            bytes(plaintext), bytes(ad), _nonce(self._n), self._k
        )
        self._n += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Decrypt and authenticate; on failure the nonce is left unchanged."""
        if self._k is None:
            return bytes(ciphertext)
        if self._n >= MAX_NONCE:
            raise NoiseError("nonce exhausted: peer sent too many messages")
        if len(ciphertext) < TAGLEN:
            raise NoiseError(
                f"ciphertext of {len(ciphertext)} bytes is shorter than the {TAGLEN}-byte tag"
            )
        try:
            plaintext = nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
                bytes(ciphertext), bytes(ad), _nonce(self._n), self._k
            )
        except nacl.exceptions.CryptoError:
            raise NoiseError("message failed authentication") from None
        self._n += 1
        return plaintext

    def rekey(self) -> None:
        """REKEY: the first 32 bytes of encrypting zeros under the reserved nonce."""
        if self._k is None:
            raise LocalProtocolError("cannot rekey a cipher without a key")
        self._k = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
            bytes(KEYLEN), b"", _nonce(MAX_NONCE), self._k
        )[:KEYLEN]

    def clear(self) -> None:
        """Drop the key; the cipher no longer encrypts anything."""
        self._k = None
        self._n = 0

    def __repr__(self) -> str:
        key = "<hidden>" if self._k is not None else "None"
        return f"CipherState(key={key}, nonce={self._n})"


# -- SymmetricState ---------------------------------------------------------------


@attrs.define(repr=False, eq=False)
class SymmetricState:
    """The chaining key ``ck``, the handshake hash ``h`` and the handshake cipher."""

    _ck: bytes = attrs.field(repr=False)
    _h: bytes
    _cipher: CipherState = attrs.field(factory=CipherState)

    @classmethod
    def initialize(cls, protocol_name: bytes) -> SymmetricState:
        if len(protocol_name) <= HASHLEN:
            h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            h = hash_(protocol_name)
        return cls(h, h)

    def mix_key(self, input_key_material: bytes) -> None:
        self._ck, temp_k = hkdf(self._ck, input_key_material)
        self._cipher.initialize_key(temp_k[:KEYLEN])

    def mix_hash(self, data: bytes) -> None:
        self._h = hash_(self._h + data)

    def has_key(self) -> bool:
        return self._cipher.has_key()

    @property
    def handshake_hash(self) -> bytes:
        return self._h

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self._cipher.encrypt_with_ad(self._h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self._cipher.decrypt_with_ad(self._h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """The transport ciphers: initiator-to-responder, then responder-to-initiator."""
        temp_k1, temp_k2 = hkdf(self._ck, b"")
        c1, c2 = CipherState(), CipherState()
        c1.initialize_key(temp_k1[:KEYLEN])
        c2.initialize_key(temp_k2[:KEYLEN])
        return c1, c2

    def clear(self) -> None:
        self._ck = b""
        self._cipher.clear()

    def __repr__(self) -> str:
        return f"SymmetricState(h={self._h.hex()[:16]}…, cipher={self._cipher!r})"


# -- HandshakeState (XX) ----------------------------------------------------------


class Token(enum.Enum):
    E = "e"
    S = "s"
    EE = "ee"
    ES = "es"
    SE = "se"


XX_PATTERN: Final[tuple[tuple[Token, ...], ...]] = (
    (Token.E,),
    (Token.E, Token.EE, Token.S, Token.ES),
    (Token.S, Token.SE),
)
"""XX has no pre-messages; even-indexed messages go from initiator to responder."""


class HandshakeStatus(enum.Enum):
    IN_PROGRESS = "in progress"
    COMPLETE = "complete"
    FAILED = "failed"


@attrs.define(repr=False, eq=False)
class HandshakeState:
    """One side of an XX handshake.

    Call :meth:`write_message` and :meth:`read_message` in turn; the initiator
    writes first.  After the third message, :meth:`transport_ciphers` gives the
    keys for the transport phase.  Any error during a read fails the handshake
    for good: the state forgets its keys and refuses further use.
    """

    initiator: bool
    _symmetric: SymmetricState
    _s: KeyPair | None = attrs.field(repr=False)
    _e: KeyPair | None = attrs.field(repr=False)
    _rs: bytes | None = None
    _re: bytes | None = None
    _index: int = 0
    _transport: tuple[CipherState, CipherState] | None = attrs.field(default=None, repr=False)
    status: HandshakeStatus = HandshakeStatus.IN_PROGRESS

    @classmethod
    def initialize(
        cls,
        *,
        initiator: bool,
        prologue: bytes,
        static: KeyPair,
        ephemeral: KeyPair | None = None,
    ) -> HandshakeState:
        """Start a handshake.

        ``ephemeral`` is for test vectors only: reusing an ephemeral key across
        handshakes destroys forward secrecy.  By default one is generated when
        the first ``e`` token is written.
        """
        symmetric = SymmetricState.initialize(PROTOCOL_NAME)
        symmetric.mix_hash(prologue)
        return cls(initiator, symmetric, static, ephemeral)

    # -- queries

    @property
    def message_index(self) -> int:
        """How many handshake messages have been written or read (0 to 3)."""
        return self._index

    @property
    def is_complete(self) -> bool:
        return self.status is HandshakeStatus.COMPLETE

    def is_my_turn_to_write(self) -> bool:
        return (self._index % 2 == 0) == self.initiator

    @property
    def remote_static(self) -> bytes | None:
        return self._rs

    @property
    def remote_ephemeral(self) -> bytes | None:
        return self._re

    @property
    def local_ephemeral_public(self) -> bytes | None:
        return None if self._e is None else self._e.public

    @property
    def handshake_hash(self) -> bytes:
        """``h``; once complete, this is the channel binding value."""
        self._check_usable()
        return self._symmetric.handshake_hash

    def transport_ciphers(self) -> tuple[CipherState, CipherState]:
        """``(send, receive)`` ciphers for this side, once the handshake is complete.

        They can be taken once: the handshake keeps no reference afterwards.
        """
        if self._transport is None:
            raise LocalProtocolError("no transport ciphers: handshake not complete, or taken")
        c1, c2 = self._transport
        self._transport = None
        return (c1, c2) if self.initiator else (c2, c1)

    # -- messages

    def write_message(self, payload: bytes = b"") -> bytes:
        self._check_usable()
        if self.is_complete:
            raise LocalProtocolError("handshake already complete")
        if not self.is_my_turn_to_write():
            raise LocalProtocolError(f"message {self._index + 1} is the peer's to write")
        try:
            message = self._write(bytes(payload))
        except NoiseError:
            self.fail()
            raise
        self._advance()
        return message

    def _write(self, payload: bytes) -> bytes:
        out = bytearray()
        for token in XX_PATTERN[self._index]:
            if token is Token.E:
                if self._e is None:
                    self._e = KeyPair.generate()
                out += self._e.public
                self._symmetric.mix_hash(self._e.public)
            elif token is Token.S:
                assert self._s is not None
                out += self._symmetric.encrypt_and_hash(self._s.public)
            else:
                self._mix_dh(token)
        out += self._symmetric.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE_LEN:
            self.fail()
            raise LocalProtocolError(f"handshake message would exceed {MAX_MESSAGE_LEN} bytes")
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """Process the peer's next message and return its payload."""
        self._check_usable()
        if self.is_complete:
            raise LocalProtocolError("handshake already complete")
        if self.is_my_turn_to_write():
            raise LocalProtocolError(f"message {self._index + 1} is ours to write, not to read")
        try:
            payload = self._read(bytes(message))
        except NoiseError:
            self.fail()
            raise
        self._advance()
        return payload

    def _read(self, message: bytes) -> bytes:
        if len(message) > MAX_MESSAGE_LEN:
            raise NoiseError(f"handshake message of {len(message)} bytes exceeds {MAX_MESSAGE_LEN}")
        pos = 0

        def take(n: int, what: str) -> bytes:
            nonlocal pos
            if pos + n > len(message):
                raise NoiseError(f"handshake message truncated: no room for {what}")
            chunk = message[pos : pos + n]
            pos += n
            return chunk

        for token in XX_PATTERN[self._index]:
            if token is Token.E:
                self._re = take(DHLEN, "the ephemeral key")
                self._symmetric.mix_hash(self._re)
            elif token is Token.S:
                size = DHLEN + TAGLEN if self._symmetric.has_key() else DHLEN
                self._rs = self._symmetric.decrypt_and_hash(take(size, "the static key"))
            else:
                self._mix_dh(token)
        return self._symmetric.decrypt_and_hash(message[pos:])

    def _mix_dh(self, token: Token) -> None:
        # "es" is DH(initiator's e, responder's s); "se" the reverse.
        local_static = token is Token.SE if self.initiator else token is Token.ES
        remote_static = token is Token.ES if self.initiator else token is Token.SE
        local = self._s if local_static else self._e
        remote = self._rs if remote_static else self._re
        assert local is not None and remote is not None
        self._symmetric.mix_key(dh(local.private, remote))

    def _advance(self) -> None:
        self._index += 1
        if self._index == len(XX_PATTERN):
            self._transport = self._symmetric.split()
            self.status = HandshakeStatus.COMPLETE
            self._s = self._e = None
            self._symmetric.clear()

    # -- lifecycle

    def fail(self) -> None:
        """Abandon the handshake: forget every key and refuse further use."""
        self.status = HandshakeStatus.FAILED
        self.clear()

    def clear(self) -> None:
        """Drop every secret this state holds (the handshake hash is public)."""
        self._s = self._e = None
        self._symmetric.clear()
        if self._transport is not None:
            for cipher in self._transport:
                cipher.clear()
            self._transport = None

    def _check_usable(self) -> None:
        if self.status is HandshakeStatus.FAILED:
            raise LocalProtocolError("handshake has failed; start a new one")

    def __repr__(self) -> str:
        role = "initiator" if self.initiator else "responder"
        return f"HandshakeState({role}, message {self._index}/3, {self.status.value})"
