"""Invite parsers: the pasted ``mitalk:`` token, its bytes, and the offline verification."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from mitalk_p2p.core.identity import Identity
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.invite import InviteError, SignedInvite, create_invite
from mitalk_p2p.core.roles import Role

from . import Target, expect

ROOM = RoomId(bytes(range(16)))
NOW = 1_700_000_000.0
HOST = Identity.from_seed(hashlib.blake2b(b"host", digest_size=32).digest(), "host")
GUEST = Identity.from_seed(hashlib.blake2b(b"guest", digest_size=32).digest(), "guest")


def _verify(invite: SignedInvite) -> None:
    """Verification refuses with an :class:`InviteError` or returns the contents."""
    for kwargs in ({}, {"room_id": ROOM, "audience": GUEST.public_key,
                        "expected_issuer": HOST.public_key, "issuer_role": Role.HOST}):
        try:
            contents = invite.verify(NOW, **kwargs)  # type: ignore[arg-type]
        except InviteError:
            continue
        expect(contents == invite.invite, "verify returned other contents than it parsed")


def check_bytes(data: bytes) -> None:
    try:
        invite = SignedInvite.from_bytes(data)
    except InviteError:
        return
    expect(invite.to_bytes() == data, "invite re-encodes to other bytes")
    expect(SignedInvite.from_token(invite.token) == invite, "invite token does not round-trip")
    _verify(invite)


def check_token(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        invite = SignedInvite.from_token(text)
    except InviteError:
        return
    expect(invite.token == "".join(text.split()), "token differs from the text it came from")
    _verify(invite)


def invites() -> list[SignedInvite]:
    plain = create_invite(HOST, room_id=ROOM, room_name="Standup", role=Role.LISTENER,
                          now=NOW, lifetime=3600, nonce=bytes(16))
    full = create_invite(
        HOST, room_id=ROOM, room_name="Jazz · late set", role=Role.SPEAKER, now=NOW - 60,
        lifetime=86400, audience=GUEST.public_key, max_uses=5,
        addresses=("192.0.2.1:4000", "[2001:db8::1]:4000"),
        bootstrap_urls=("ws://192.0.2.9:7400/",), nonce=bytes(range(16)),
    )
    expired = create_invite(HOST, room_id=ROOM, room_name="Old", role=Role.LISTENER,
                            now=NOW - 10_000, lifetime=60, nonce=b"\x07" * 16)
    return [plain, full, expired]


def seeds() -> Iterator[tuple[str, bytes]]:
    for invite in invites():
        yield "bytes", invite.to_bytes()
        yield "token", invite.token.encode("ascii")
    token = invites()[1].token
    wrapped = "\n".join(token[i : i + 60] for i in range(0, len(token), 60))
    yield "token", f"  {wrapped}\n".encode("ascii")


TARGET = Target(
    "invite",
    "invites: the pasted token, its signed bytes, and offline verification",
    (("bytes", check_bytes), ("token", check_token)),
    seeds,
    dictionary="text.dict",
)
