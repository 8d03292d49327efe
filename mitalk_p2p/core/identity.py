"""Ed25519 identities, fingerprints and domain-separated signatures.

A peer *is* its Ed25519 public key.  People compare the short fingerprint, a
base32 rendering of a BLAKE2b hash of the key.  The secret half lives only in
:class:`Identity`, whose repr never shows it.
"""

from __future__ import annotations

import base64
import enum
import hashlib

import attrs
import nacl.exceptions
import nacl.signing

from .crypto_memo import active_memo
from .errors import LocalProtocolError, WireError

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32


class Domain(bytes, enum.Enum):
    """Domain-separation labels: a signature made for one purpose never verifies for another."""

    INVITE = b"mitalk/v1/invite"
    NOISE_STATIC = b"mitalk/v1/noise-static"
    REDEEM = b"mitalk/v1/invite-redemption"
    REQUEST = b"mitalk/v1/member-request"
    ENTRY = b"mitalk/v1/log-entry"
    CLAIM = b"mitalk/v1/succession-claim"
    PRE_VOTE = b"mitalk/v1/succession-pre-vote"
    PRE_VOTE_ANSWER = b"mitalk/v1/succession-pre-vote-answer"
    SNAPSHOT = b"mitalk/v1/room-snapshot"
    HEARTBEAT = b"mitalk/v1/heartbeat"
    MEDIA_FRAME = b"mitalk/v1/media-frame"
    ANNOUNCEMENT = b"mitalk/v1/room-announcement"


def domain_message(domain: Domain, payload: bytes) -> bytes:
    """The exact bytes an Ed25519 signature under ``domain`` covers."""
    label = domain.value
    return bytes([len(label)]) + label + payload


def _ed25519_valid(key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
    return True


@attrs.frozen(eq=False)
class PublicKey:
    """An Ed25519 public key, the identity of a peer.

    Equality, hashing and order are those of the raw bytes, written out by hand:
    keys are dictionary keys on every hot path, and a generated method that
    builds a tuple per call costs several times more.
    """

    raw: bytes = attrs.field(repr=False)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not PublicKey:
            return NotImplemented
        return self.raw == other.raw

    def __ne__(self, other: object) -> bool:
        if other.__class__ is not PublicKey:
            return NotImplemented
        return self.raw != other.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __lt__(self, other: PublicKey) -> bool:
        return self.raw < other.raw

    def __le__(self, other: PublicKey) -> bool:
        return self.raw <= other.raw

    def __gt__(self, other: PublicKey) -> bool:
        return self.raw > other.raw

    def __ge__(self, other: PublicKey) -> bool:
        return self.raw >= other.raw

    @raw.validator
    def _check_length(self, _attribute: object, value: bytes) -> None:
        if len(value) != PUBLIC_KEY_SIZE:
            raise WireError(f"public key must be {PUBLIC_KEY_SIZE} bytes, got {len(value)}")

    @property
    def fingerprint(self) -> str:
        """Sixteen base32 characters in four groups, e.g. ``ABCD-EFGH-IJKL-MNOP``."""
        digest = hashlib.blake2b(self.raw, digest_size=10, person=b"mitalk-fp").digest()
        text = base64.b32encode(digest).decode("ascii")
        return "-".join(text[i : i + 4] for i in range(0, 16, 4))

    @property
    def short(self) -> str:
        """The first group of the fingerprint, for compact displays."""
        return self.fingerprint[:4]

    def verify(self, domain: Domain, payload: bytes, signature: bytes) -> bool:
        """True only if ``signature`` is this key's signature of ``payload`` under ``domain``."""
        if len(signature) != SIGNATURE_SIZE:
            return False
        message = domain_message(domain, payload)
        memo = active_memo()
        if memo is not None:
            return memo.verified(
                self.raw, message, signature, lambda: _ed25519_valid(self.raw, message, signature)
            )
        return _ed25519_valid(self.raw, message, signature)

    def __repr__(self) -> str:
        return f"PublicKey({self.fingerprint})"


@attrs.define(repr=False, eq=False)
class Identity:
    """An Ed25519 key pair and a display name.

    The signing key is private state: it is absent from ``repr``, ``str`` and
    every error message.  Export it only through :meth:`secret_seed`, for the
    profile store.
    """

    _signing_key: nacl.signing.SigningKey
    display_name: str
    public_key: PublicKey = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.public_key = PublicKey(bytes(self._signing_key.verify_key))

    @classmethod
    def generate(cls, display_name: str) -> Identity:
        """A fresh identity from libsodium's random generator."""
        return cls(nacl.signing.SigningKey.generate(), display_name)

    @classmethod
    def from_seed(cls, seed: bytes, display_name: str) -> Identity:
        """Rebuild an identity from its 32-byte seed (profile files, test vectors)."""
        if len(seed) != SEED_SIZE:
            raise LocalProtocolError(f"identity seed must be {SEED_SIZE} bytes")
        return cls(nacl.signing.SigningKey(bytes(seed)), display_name)

    def secret_seed(self) -> bytes:
        """The 32-byte secret seed.  Only the profile store should call this."""
        return bytes(self._signing_key)

    def sign(self, domain: Domain, payload: bytes) -> bytes:
        return bytes(self._signing_key.sign(domain_message(domain, payload)).signature)

    @property
    def fingerprint(self) -> str:
        return self.public_key.fingerprint

    def __repr__(self) -> str:
        return f"Identity({self.display_name!r}, {self.public_key.fingerprint}, secret=<hidden>)"

    __str__ = __repr__
