"""Signed invites: vectors, round trips, every refusal, and a fuzzed parser.

Set ``MITALK_REGENERATE_VECTORS=1`` to rewrite ``vectors/invite_v1.json`` from
``_VECTOR_INPUTS`` before the vector tests run.  Published vectors should change
only with a new invite version.
"""

from __future__ import annotations

import ast
import base64
import json
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import hypothesis.strategies as st
import nacl.signing
import pytest
from hypothesis import assume, example, given, settings

from mitalk_p2p.core import invite as invite_module
from mitalk_p2p.core.errors import LocalProtocolError, RemoteProtocolError
from mitalk_p2p.core.identity import Domain, Identity, PublicKey
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.invite import (
    BOOTSTRAP_URL_SCHEMES,
    CLOCK_SKEW_SECONDS,
    MAX_ADDRESS_BYTES,
    MAX_ADDRESSES,
    MAX_BOOTSTRAP_URLS,
    MAX_ROOM_NAME_BYTES,
    MAX_TOKEN_LENGTH,
    MAX_URL_BYTES,
    TOKEN_PREFIX,
    Invite,
    InviteError,
    InviteProblem,
    SignedInvite,
    create_invite,
)
from mitalk_p2p.core.roles import Role

VECTORS_PATH = Path(__file__).parent / "vectors" / "invite_v1.json"
REGENERATE_ENV = "MITALK_REGENERATE_VECTORS"

HOST_SEED = bytes(range(32))
GUEST_SEED = bytes(range(32, 64))
HOST = Identity.from_seed(HOST_SEED, "alice")
GUEST = Identity.from_seed(GUEST_SEED, "bob")
STRANGER = Identity.from_seed(bytes(range(64, 96)), "mallory")
ROOM = RoomId(bytes(range(0xA0, 0xB0)))
OTHER_ROOM = RoomId(bytes(16))
NONCE = bytes(range(0xF0, 0x100))
T0 = 1_795_341_600  # 2026-11-22 10:00:00 UTC
HOUR = 3600
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

PROPS = settings(max_examples=200, deadline=None)
FUZZ = settings(max_examples=300, deadline=None)


def _invite(**overrides: Any) -> Invite:
    fields: dict[str, Any] = dict(
        room_id=ROOM,
        room_name="Friday jam",
        issuer=HOST.public_key,
        role=Role.SPEAKER,
        not_before=T0,
        expires_at=T0 + HOUR,
        nonce=NONCE,
        audience=GUEST.public_key,
        max_uses=3,
        addresses=("192.168.1.20:47000", "[fe80::1]:47000"),
        bootstrap_urls=("wss://boot.example.org/mitalk",),
    )
    fields.update(overrides)
    return Invite(**fields)


def _signed(**overrides: Any) -> SignedInvite:
    return _invite(**overrides).sign(HOST)


def _error(action: Callable[..., object], *args: Any, **kwargs: Any) -> InviteError:
    with pytest.raises(InviteError) as info:
        action(*args, **kwargs)
    return info.value


def _problem(action: Callable[..., object], *args: Any, **kwargs: Any) -> InviteProblem:
    return _error(action, *args, **kwargs).problem


# --- an encoder written from the module docstring, independent of wire.Writer ---------------


def _text(value: bytes) -> bytes:
    return struct.pack(">H", len(value)) + value


def _spec_body(
    *,
    version: int = 1,
    room_id: bytes = ROOM.raw,
    room_name: bytes = b"Friday jam",
    issuer: bytes = HOST.public_key.raw,
    audience: bytes | None = None,
    audience_flag: int | None = None,
    role: int = 1,
    not_before: int = T0,
    expires_at: int = T0 + HOUR,
    nonce: bytes = NONCE,
    max_uses: int = 1,
    addresses: tuple[bytes, ...] = (),
    urls: tuple[bytes, ...] = (),
    trailer: bytes = b"",
) -> bytes:
    flag = (0 if audience is None else 1) if audience_flag is None else audience_flag
    return b"".join(
        [
            struct.pack(">B", version),
            room_id,
            _text(room_name),
            issuer,
            struct.pack(">B", flag),
            audience or b"",
            struct.pack(">BQQ", role, not_before, expires_at),
            nonce,
            struct.pack(">HB", max_uses, len(addresses)),
            *(_text(a) for a in addresses),
            struct.pack(">B", len(urls)),
            *(_text(u) for u in urls),
            trailer,
        ]
    )


def _sign_raw(body: bytes, signer: Identity = HOST) -> bytes:
    return body + signer.sign(Domain.INVITE, body)


# --- published test vectors ------------------------------------------------------------------

_VECTOR_INPUTS: list[dict[str, Any]] = [
    {
        "name": "open listener invite without hints",
        "issuer_seed": HOST_SEED.hex(),
        "audience_seed": None,
        "room_id": ROOM.hex,
        "room_name": "Friday jam",
        "role": "listener",
        "not_before": T0,
        "expires_at": T0 + HOUR,
        "nonce": NONCE.hex(),
        "max_uses": 5,
        "addresses": [],
        "bootstrap_urls": [],
        "verify_at": T0 + 10,
    },
    {
        "name": "speaker invite bound to one peer, with contact hints",
        "issuer_seed": HOST_SEED.hex(),
        "audience_seed": GUEST_SEED.hex(),
        "room_id": ROOM.hex,
        "room_name": "Café ☕ — late show",
        "role": "speaker",
        "not_before": T0,
        "expires_at": T0 + 24 * HOUR,
        "nonce": bytes(range(16)).hex(),
        "max_uses": 1,
        "addresses": ["192.168.1.20:47000", "[fe80::1]:47000", "alice-laptop.local:47000"],
        "bootstrap_urls": ["wss://boot.example.org/mitalk"],
        "verify_at": T0 + 12 * HOUR,
    },
    {
        "name": "moderator invite with extreme times, uses and room name",
        "issuer_seed": HOST_SEED.hex(),
        "audience_seed": None,
        "room_id": OTHER_ROOM.hex,
        "room_name": "x" * MAX_ROOM_NAME_BYTES,
        "role": "moderator",
        "not_before": 0,
        "expires_at": 0xFFFF_FFFF_FFFF_FFFF,
        "nonce": (b"\xff" * 16).hex(),
        "max_uses": 0xFFFF,
        "addresses": ["10.0.0.1:1", "[::1]:65535"],
        "bootstrap_urls": ["https://a.example/", "ws://b.example:8080/x"],
        "verify_at": T0,
    },
]


def _build_from_inputs(vector: dict[str, Any]) -> SignedInvite:
    issuer = Identity.from_seed(bytes.fromhex(vector["issuer_seed"]), "issuer")
    audience = (
        None
        if vector["audience_seed"] is None
        else Identity.from_seed(bytes.fromhex(vector["audience_seed"]), "audience").public_key
    )
    return create_invite(
        issuer,
        room_id=RoomId.from_hex(vector["room_id"]),
        room_name=vector["room_name"],
        role=Role.parse(vector["role"]),
        now=vector["not_before"],
        lifetime=vector["expires_at"] - vector["not_before"],
        audience=audience,
        max_uses=vector["max_uses"],
        addresses=vector["addresses"],
        bootstrap_urls=vector["bootstrap_urls"],
        nonce=bytes.fromhex(vector["nonce"]),
    )


def _regenerate_vectors() -> None:
    vectors = []
    for inputs in _VECTOR_INPUTS:
        signed = _build_from_inputs(inputs)
        audience = signed.invite.audience
        vectors.append(
            {
                **inputs,
                "issuer_public_key": signed.invite.issuer.raw.hex(),
                "audience_public_key": None if audience is None else audience.raw.hex(),
                "body": signed.body.hex(),
                "signature": signed.signature.hex(),
                "token": signed.token,
            }
        )
    document = {
        "description": (
            "mitalk invite format version 1. Inputs (seeds, fields, nonce) and the exact body,"
            " Ed25519 signature and token they must produce. The layout is specified in the"
            " docstring of mitalk_p2p/core/invite.py. verify_at is a time at which the token"
            " verifies."
        ),
        "signature_domain": Domain.INVITE.value.decode("ascii"),
        "signed_message": "u8(len(signature_domain)) || signature_domain || body",
        "clock_skew_seconds": CLOCK_SKEW_SECONDS,
        "vectors": vectors,
    }
    VECTORS_PATH.parent.mkdir(parents=True, exist_ok=True)
    VECTORS_PATH.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", "utf-8")


def _load_vectors() -> list[dict[str, Any]]:
    if os.environ.get(REGENERATE_ENV):
        _regenerate_vectors()
    vectors: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text("utf-8"))["vectors"]
    return vectors


VECTORS = _load_vectors()
vector_cases = pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])


def test_there_are_vectors_with_and_without_audience_and_hints() -> None:
    assert len(VECTORS) >= 2
    assert any(v["audience_seed"] is None and not v["addresses"] for v in VECTORS)
    assert any(v["audience_seed"] and v["addresses"] and v["bootstrap_urls"] for v in VECTORS)


@vector_cases
def test_vector_rebuilds_exactly(vector: dict[str, Any]) -> None:
    signed = _build_from_inputs(vector)
    assert signed.body.hex() == vector["body"]
    assert signed.signature.hex() == vector["signature"]
    assert signed.token == vector["token"]
    assert signed.invite.issuer.raw.hex() == vector["issuer_public_key"]


@vector_cases
def test_vector_token_parses_and_verifies(vector: dict[str, Any]) -> None:
    signed = SignedInvite.from_token(vector["token"])
    audience = vector["audience_public_key"]
    invite = signed.verify(
        vector["verify_at"],
        room_id=RoomId.from_hex(vector["room_id"]),
        audience=None if audience is None else PublicKey(bytes.fromhex(audience)),
        expected_issuer=PublicKey(bytes.fromhex(vector["issuer_public_key"])),
        issuer_role=Role.HOST,
    )
    assert invite == _build_from_inputs(vector).invite
    assert invite.room_name == vector["room_name"]
    assert invite.addresses == tuple(vector["addresses"])
    assert invite.bootstrap_urls == tuple(vector["bootstrap_urls"])


@vector_cases
def test_vector_matches_the_documented_layout(vector: dict[str, Any]) -> None:
    """The body follows the docstring's table and the signature its signed-message rule."""
    audience = vector["audience_public_key"]
    body = _spec_body(
        room_id=bytes.fromhex(vector["room_id"]),
        room_name=vector["room_name"].encode("utf-8"),
        issuer=bytes.fromhex(vector["issuer_public_key"]),
        audience=None if audience is None else bytes.fromhex(audience),
        role=int(Role.parse(vector["role"])),
        not_before=vector["not_before"],
        expires_at=vector["expires_at"],
        nonce=bytes.fromhex(vector["nonce"]),
        max_uses=vector["max_uses"],
        addresses=tuple(a.encode("ascii") for a in vector["addresses"]),
        urls=tuple(u.encode("ascii") for u in vector["bootstrap_urls"]),
    )
    assert body.hex() == vector["body"]
    label = Domain.INVITE.value
    key = nacl.signing.VerifyKey(bytes.fromhex(vector["issuer_public_key"]))
    key.verify(bytes([len(label)]) + label + body, bytes.fromhex(vector["signature"]))
    expected_seed = nacl.signing.SigningKey(bytes.fromhex(vector["issuer_seed"]))
    assert bytes(expected_seed.verify_key) == key.encode()
    assert vector["token"] == TOKEN_PREFIX + (
        base64.urlsafe_b64encode(body + bytes.fromhex(vector["signature"]))
    ).decode().rstrip("=")


# --- round trips -----------------------------------------------------------------------------

_seeds = st.binary(min_size=32, max_size=32)
_room_names = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Cf", "Zl", "Zp")),
    min_size=1,
    max_size=40,
).filter(lambda name: len(name.encode("utf-8")) <= MAX_ROOM_NAME_BYTES)
_hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda address: f"[{address}]"),
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,40}", fullmatch=True),
)
_addresses = st.builds(lambda host, port: f"{host}:{port}", _hosts, st.integers(1, 65535)).filter(
    lambda address: len(address) <= MAX_ADDRESS_BYTES
)
_urls = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}{path}",
    st.sampled_from(BOOTSTRAP_URL_SCHEMES),
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,40}(:[1-9][0-9]{0,3})?", fullmatch=True),
    st.from_regex(r"(/[A-Za-z0-9_.~-]{0,20}){0,3}", fullmatch=True),
)


@st.composite
def _invites(draw: st.DrawFn) -> tuple[Identity, Invite]:
    issuer = Identity.from_seed(draw(_seeds), "issuer")
    audience_seed = draw(st.none() | _seeds)
    not_before = draw(st.integers(0, 2**63))
    invite = Invite(
        room_id=RoomId(draw(st.binary(min_size=16, max_size=16))),
        room_name=draw(_room_names),
        issuer=issuer.public_key,
        audience=(
            None if audience_seed is None else Identity.from_seed(audience_seed, "a").public_key
        ),
        role=draw(st.sampled_from([Role.LISTENER, Role.SPEAKER, Role.MODERATOR])),
        not_before=not_before,
        expires_at=not_before + draw(st.integers(1, 2**62)),
        nonce=draw(st.binary(min_size=16, max_size=16)),
        max_uses=draw(st.integers(1, 0xFFFF)),
        addresses=draw(st.lists(_addresses, max_size=MAX_ADDRESSES)),
        bootstrap_urls=draw(st.lists(_urls, max_size=MAX_BOOTSTRAP_URLS)),
    )
    return issuer, invite


@PROPS
@given(_invites())
def test_every_field_round_trips(case: tuple[Identity, Invite]) -> None:
    issuer, invite = case
    signed = invite.sign(issuer)
    assert len(signed.token) <= MAX_TOKEN_LENGTH
    parsed = SignedInvite.from_token(signed.token)
    assert parsed == signed
    assert SignedInvite.from_bytes(signed.to_bytes()) == signed
    verified = parsed.verify(
        invite.not_before,
        room_id=invite.room_id,
        audience=invite.audience,
        expected_issuer=issuer.public_key,
        issuer_role=invite.role,
    )
    assert verified == invite
    for field in attrs.fields(Invite):
        assert getattr(verified, field.name) == getattr(invite, field.name)


def test_create_invite_fills_defaults() -> None:
    signed = create_invite(
        HOST, room_id=ROOM, room_name="Jam", role=Role.LISTENER, now=T0 + 0.75, lifetime=600
    )
    invite = signed.invite
    assert invite.not_before == T0
    assert invite.expires_at == T0 + 600
    assert invite.max_uses == 1
    assert invite.audience is None
    assert invite.addresses == ()
    assert invite.bootstrap_urls == ()
    assert invite.version == 1
    assert len(invite.nonce) == 16
    other = create_invite(
        HOST, room_id=ROOM, room_name="Jam", role=Role.LISTENER, now=T0, lifetime=600
    )
    assert other.invite.nonce != invite.nonce
    assert invite.issuer == HOST.public_key
    assert signed.verify(T0 + 0.75, room_id=ROOM) == invite


def test_create_invite_with_later_start_counts_lifetime_from_it() -> None:
    signed = create_invite(
        HOST,
        room_id=ROOM,
        room_name="Jam",
        role=Role.SPEAKER,
        now=T0,
        lifetime=HOUR,
        not_before=T0 + 86400,
    )
    assert (signed.invite.not_before, signed.invite.expires_at) == (T0 + 86400, T0 + 86400 + HOUR)


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda t: f"  {t}  \n", id="surrounding blanks"),
        pytest.param(lambda t: "\n".join(t[i : i + 40] for i in range(0, len(t), 40)), id="lf"),
        pytest.param(lambda t: "\r\n".join(t[i : i + 76] for i in range(0, len(t), 76)), id="crlf"),
        pytest.param(
            lambda t: "\n    ".join(t[i : i + 33] for i in range(0, len(t), 33)), id="indented"
        ),
        pytest.param(lambda t: f"\t{t[:3]}\n{t[3:]}\u00a0\n", id="split prefix, nbsp"),
    ],
)
def test_token_tolerates_whitespace_and_line_breaks(wrap: Callable[[str], str]) -> None:
    signed = _signed()
    assert SignedInvite.from_token(wrap(signed.token)) == signed


# --- every refusal has its own problem and message -------------------------------------------


def _tampered() -> object:
    data = bytearray(_signed().to_bytes())
    data[20] ^= 0x01  # inside the room name
    return SignedInvite.from_bytes(bytes(data)).verify(T0, audience=GUEST.public_key)


def _version_2() -> object:
    body = bytearray(_signed().body)
    body[0] = 2
    return SignedInvite.from_bytes(_sign_raw(bytes(body)))


def _host_role() -> object:
    body = _spec_body(role=int(Role.HOST))
    return SignedInvite.from_bytes(_sign_raw(body)).verify(T0)


REFUSALS: dict[str, tuple[Callable[[], object], InviteProblem, str]] = {
    "tampered": (_tampered, InviteProblem.TAMPERED, "signature does not match its contents"),
    "wrong signer": (
        lambda: _signed().verify(
            T0, audience=GUEST.public_key, expected_issuer=STRANGER.public_key
        ),
        InviteProblem.WRONG_ISSUER,
        f"signed by {HOST.fingerprint}, not by the expected issuer {STRANGER.fingerprint}",
    ),
    "expired": (
        lambda: _signed().verify(T0 + HOUR + 180, audience=GUEST.public_key),
        InviteProblem.EXPIRED,
        "invite expired 3 min ago (at 2026-11-22 11:00:00 UTC)",
    ),
    "not yet valid": (
        lambda: _signed().verify(T0 - 2 * HOUR, audience=GUEST.public_key),
        InviteProblem.NOT_YET_VALID,
        "invite is not valid yet: it starts in 2 h (at 2026-11-22 10:00:00 UTC)",
    ),
    "wrong room": (
        lambda: _signed().verify(T0, room_id=OTHER_ROOM, audience=GUEST.public_key),
        InviteProblem.WRONG_ROOM,
        "invite is for another room ('Friday jam', id a0a1a2a3a4a5…),"
        " not this one (id 000000000000…)",
    ),
    "another peer presents it": (
        lambda: _signed().verify(T0, audience=STRANGER.public_key),
        InviteProblem.WRONG_AUDIENCE,
        f"meant only for peer {GUEST.fingerprint}, not for {STRANGER.fingerprint}",
    ),
    "verified without the audience key": (
        lambda: _signed().verify(T0),
        InviteProblem.WRONG_AUDIENCE,
        f"meant only for peer {GUEST.fingerprint}, and no peer key was given",
    ),
    "role above the issuer's": (
        lambda: _signed(role=Role.MODERATOR).verify(
            T0, audience=GUEST.public_key, issuer_role=Role.SPEAKER
        ),
        InviteProblem.ROLE_TOO_HIGH,
        "invite grants the moderator role, above its issuer's own role (speaker)",
    ),
    "host role": (_host_role, InviteProblem.ROLE_TOO_HIGH, "grants the host role"),
    "unknown version": (_version_2, InviteProblem.UNKNOWN_VERSION, "format version 2"),
    "truncated": (
        lambda: SignedInvite.from_token(_signed().token[:-10]),
        InviteProblem.MALFORMED,
        "invite is",
    ),
    "garbage": (
        lambda: SignedInvite.from_token("hello, is this the room?"),
        InviteProblem.MALFORMED,
        "not a mitalk invite",
    ),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_refusal_problem_and_message(
    case: tuple[Callable[[], object], InviteProblem, str],
) -> None:
    action, problem, fragment = case
    error = _error(action)
    assert error.problem is problem
    assert fragment in str(error)
    assert isinstance(error, RemoteProtocolError)


def test_refusals_are_distinct() -> None:
    messages = {name: str(_error(case[0])) for name, case in REFUSALS.items()}
    assert len(set(messages.values())) == len(messages)
    problems = {case[1] for case in REFUSALS.values()}
    assert len(problems) == 9
    assert {p.name for p in InviteProblem} >= {"USED_UP", "REVOKED", "BANNED"}
    assert len({p.value for p in InviteProblem}) == len(InviteProblem)


def test_no_secret_in_messages_or_reprs() -> None:
    secrets = [HOST_SEED, GUEST_SEED, HOST.secret_seed()]
    texts = [str(_error(case[0])) for case in REFUSALS.values()]
    texts += [repr(_error(case[0])) for case in REFUSALS.values()]
    signed = _signed()
    texts += [repr(signed), repr(signed.invite), str(signed), repr(HOST)]
    for text in texts:
        for secret in secrets:
            assert secret.hex() not in text.lower()
            assert secret.hex().upper() not in text
    assert signed.token not in repr(signed) + str(signed)


def test_tampered_is_checked_before_who_signed_it() -> None:
    """A forged issuer field reads as tampering, not as an unexpected signer."""
    data = bytearray(_signed().to_bytes())
    data[1 + 16 + 2 + len("Friday jam")] ^= 0x80  # first byte of the issuer key
    problem = _problem(
        lambda: SignedInvite.from_bytes(bytes(data)).verify(
            T0, audience=GUEST.public_key, expected_issuer=HOST.public_key
        )
    )
    assert problem is InviteProblem.TAMPERED


def test_valid_signature_by_another_key_is_wrong_signer() -> None:
    forged = _invite(issuer=STRANGER.public_key).sign(STRANGER)
    assert forged.verify(T0, audience=GUEST.public_key) == forged.invite
    problem = _problem(
        lambda: forged.verify(T0, audience=GUEST.public_key, expected_issuer=HOST.public_key)
    )
    assert problem is InviteProblem.WRONG_ISSUER


def test_open_invite_admits_anyone() -> None:
    signed = _signed(audience=None)
    for presenter in (None, GUEST.public_key, STRANGER.public_key):
        assert signed.verify(T0, room_id=ROOM, audience=presenter).audience is None


def test_audience_bound_invite_admits_its_audience() -> None:
    assert _signed().verify(T0, room_id=ROOM, audience=GUEST.public_key).audience == (
        GUEST.public_key
    )


@pytest.mark.parametrize("role", [Role.LISTENER, Role.SPEAKER, Role.MODERATOR])
def test_roles_up_to_the_issuers_own_are_accepted(role: Role) -> None:
    signed = _signed(role=role)
    for issuer_role in Role:
        if role <= issuer_role:
            assert signed.verify(T0, audience=GUEST.public_key, issuer_role=issuer_role)
        else:
            problem = _problem(
                signed.verify, T0, audience=GUEST.public_key, issuer_role=issuer_role
            )
            assert problem is InviteProblem.ROLE_TOO_HIGH


def test_host_role_is_refused_even_with_a_host_issuer() -> None:
    signed = SignedInvite.from_bytes(_sign_raw(_spec_body(role=int(Role.HOST))))
    assert signed.invite.role is Role.HOST
    error = _error(lambda: signed.verify(T0, issuer_role=Role.HOST))
    assert error.problem is InviteProblem.ROLE_TOO_HIGH
    assert str(error) == "invite grants the host role, which no invite can grant"


def test_messages_read_well() -> None:
    expiry = T0 + HOUR
    cases = {
        expiry + 45: "invite expired 45 s ago (at 2026-11-22 11:00:00 UTC)",
        expiry + 3 * 60 + 59: "invite expired 3 min ago (at 2026-11-22 11:00:00 UTC)",
        expiry + 5 * HOUR + 30 * 60: "invite expired 5 h 30 min ago (at 2026-11-22 11:00:00 UTC)",
        expiry + 3 * 86400: "invite expired 3 days ago (at 2026-11-22 11:00:00 UTC)",
    }
    signed = _signed()
    for now, message in cases.items():
        error = _error(signed.verify, now, audience=GUEST.public_key, skew=0)
        assert str(error) == message
    early = _error(lambda: signed.verify(T0 - 2 * HOUR, audience=GUEST.public_key))
    assert str(early) == (
        "invite is not valid yet: it starts in 2 h (at 2026-11-22 10:00:00 UTC);"
        " if that looks wrong, check this computer's clock"
    )


def test_message_for_a_time_beyond_the_calendar() -> None:
    far = 2**64 - 2
    signed = _signed(not_before=far, expires_at=far + 1)
    error = _error(lambda: signed.verify(T0, audience=GUEST.public_key))
    assert error.problem is InviteProblem.NOT_YET_VALID
    assert f"unix time {far}" in str(error)


# --- clock skew: not_before - 60 <= now < expires_at + 60 ------------------------------------


def test_clock_skew_edges_are_exact() -> None:
    signed = _signed()
    ok = [T0 - 60, T0, T0 + HOUR, T0 + HOUR + 59, math.nextafter(T0 + HOUR + 60, 0)]
    for now in ok:
        assert signed.verify(now, audience=GUEST.public_key) == signed.invite
    early = [T0 - 61, math.nextafter(T0 - 60, 0)]
    for now in early:
        problem = _problem(signed.verify, now, audience=GUEST.public_key)
        assert problem is InviteProblem.NOT_YET_VALID
    late = [T0 + HOUR + 60, T0 + HOUR + 60.0, T0 + HOUR + 61]
    for now in late:
        problem = _problem(signed.verify, now, audience=GUEST.public_key)
        assert problem is InviteProblem.EXPIRED
    assert CLOCK_SKEW_SECONDS == 60


def test_skew_can_be_narrowed() -> None:
    signed = _signed()
    assert signed.verify(T0, audience=GUEST.public_key, skew=0)
    assert signed.verify(T0 + HOUR - 1, audience=GUEST.public_key, skew=0)
    problem = _problem(lambda: signed.verify(T0 - 1, audience=GUEST.public_key, skew=0))
    assert problem is InviteProblem.NOT_YET_VALID
    problem = _problem(lambda: signed.verify(T0 + HOUR, audience=GUEST.public_key, skew=0))
    assert problem is InviteProblem.EXPIRED


@pytest.mark.parametrize(
    ("now", "skew"), [(math.nan, 60), (math.inf, 60), (T0, -1), (T0, math.nan)]
)
def test_verify_rejects_bad_local_arguments(now: float, skew: float) -> None:
    with pytest.raises(LocalProtocolError):
        _signed().verify(now, audience=GUEST.public_key, skew=skew)


# --- creation refuses bad local input --------------------------------------------------------


def _create(**overrides: Any) -> SignedInvite:
    arguments: dict[str, Any] = dict(
        room_id=ROOM, room_name="Jam", role=Role.SPEAKER, now=T0, lifetime=HOUR
    )
    arguments.update(overrides)
    return create_invite(HOST, **arguments)


BAD_INPUTS: dict[str, dict[str, Any]] = {
    "max_uses 0": {"max_uses": 0},
    "max_uses negative": {"max_uses": -1},
    "max_uses above u16": {"max_uses": 0x10000},
    "max_uses bool": {"max_uses": True},
    "empty room name": {"room_name": ""},
    "room name 101 bytes": {"room_name": "x" * 101},
    "room name 102 utf-8 bytes": {"room_name": "é" * 51},
    "room name with newline": {"room_name": "bad\nname"},
    "room name with escape": {"room_name": "\x1b[31mred"},
    "room name with bidi override": {"room_name": "\u202egnp.exe"},
    "room name not text": {"room_name": b"Jam"},
    "room name with lone surrogate": {"room_name": "a\ud800"},
    "too many addresses": {"addresses": [f"10.0.0.{i}:1" for i in range(MAX_ADDRESSES + 1)]},
    "address without port": {"addresses": ["host"]},
    "address without host": {"addresses": [":80"]},
    "address port 0": {"addresses": ["host:0"]},
    "address port too big": {"addresses": ["host:65536"]},
    "address port leading zero": {"addresses": ["host:080"]},
    "address port not a number": {"addresses": ["host:http"]},
    "address unbracketed ipv6": {"addresses": ["::1:80"]},
    "address stray bracket": {"addresses": ["ho]st:80"]},
    "address with space": {"addresses": ["my host:80"]},
    "address non-ascii": {"addresses": ["hôst:80"]},
    "address too long": {"addresses": ["a" * (MAX_ADDRESS_BYTES - 1) + ":1"]},
    "addresses as one string": {"addresses": "10.0.0.1:80"},
    "address not a string": {"addresses": [("10.0.0.1", 80)]},
    "too many urls": {"bootstrap_urls": [f"wss://b{i}.example" for i in range(5)]},
    "url scheme ftp": {"bootstrap_urls": ["ftp://boot.example"]},
    "url without host": {"bootstrap_urls": ["wss://"]},
    "url without scheme": {"bootstrap_urls": ["boot.example"]},
    "url too long": {"bootstrap_urls": ["wss://" + "b" * (MAX_URL_BYTES - 5)]},
    "url with space": {"bootstrap_urls": ["wss://boot example"]},
    "lifetime 0": {"lifetime": 0},
    "lifetime negative": {"lifetime": -5},
    "lifetime float": {"lifetime": 1.5},
    "expiry beyond u64": {"now": 2**64 - 10, "lifetime": 20},
    "not_before negative": {"not_before": -1},
    "now nan": {"now": math.nan},
    "nonce too short": {"nonce": bytes(15)},
    "nonce not bytes": {"nonce": "0" * 16},
    "role host": {"role": Role.HOST},
    "role above issuer": {"role": Role.MODERATOR, "issuer_role": Role.SPEAKER},
}


@pytest.mark.parametrize("overrides", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_creation_refuses_bad_input(overrides: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        _create(**overrides)


def test_creation_accepts_every_bound_exactly() -> None:
    signed = _create(
        room_name="é" * 50,
        audience=GUEST.public_key,
        max_uses=0xFFFF,
        addresses=[f"{i}" + "a" * (MAX_ADDRESS_BYTES - 3) + ":1" for i in range(MAX_ADDRESSES)],
        bootstrap_urls=[
            f"wss://{i}" + "b" * (MAX_URL_BYTES - 7) for i in range(MAX_BOOTSTRAP_URLS)
        ],
        role=Role.MODERATOR,
        issuer_role=Role.MODERATOR,
    )
    assert len(signed.invite.room_name.encode()) == MAX_ROOM_NAME_BYTES
    assert len(signed.token) == MAX_TOKEN_LENGTH
    assert SignedInvite.from_token(signed.token) == signed


def test_invite_construction_checks_fields() -> None:
    with pytest.raises(LocalProtocolError):
        _invite(version=2)
    with pytest.raises(LocalProtocolError):
        _invite(expires_at=T0)
    with pytest.raises(LocalProtocolError):
        _invite(not_before=2**64)


def test_sign_refuses_host_role_and_foreign_identity() -> None:
    with pytest.raises(LocalProtocolError, match="host role"):
        _invite(role=Role.HOST).sign(HOST)
    with pytest.raises(LocalProtocolError, match="signing it"):
        _invite().sign(STRANGER)


def test_signed_invite_must_match_its_body() -> None:
    signed = _signed()
    with pytest.raises(LocalProtocolError):
        SignedInvite(invite=_invite(max_uses=9), body=signed.body, signature=signed.signature)
    with pytest.raises(LocalProtocolError):
        SignedInvite(invite=signed.invite, body=signed.body, signature=signed.signature[:-1])


# --- the parser: bad tokens and bad bodies ---------------------------------------------------

GARBAGE_TOKENS = {
    "empty": "",
    "only whitespace": " \n\t ",
    "no prefix": "aGVsbG8",
    "upper-case prefix": "MITALK:" + "A" * 200,
    "prefix only": "mitalk:",
    "standard base64 alphabet": "mitalk:ab+/" + "A" * 200,
    "padding": "mitalk:" + "A" * 202 + "==",
    "impossible length": "mitalk:" + "A" * 201,
    "non-canonical last character": None,
    "one byte": "mitalk:AQ",
    "far too long": "mitalk:" + "A" * (MAX_TOKEN_LENGTH * 20),
    "too long": "mitalk:" + "A" * MAX_TOKEN_LENGTH,
    "non-ascii": "mitalk:ÄÖÜ",
}


@pytest.mark.parametrize("name", GARBAGE_TOKENS)
def test_garbage_tokens_are_malformed(name: str) -> None:
    token = GARBAGE_TOKENS[name]
    if token is None:
        # The last character carries unused low bits; setting one gives the same bytes.
        valid = _signed().token
        assert len(valid[len(TOKEN_PREFIX) :]) % 4 != 0
        token = valid[:-1] + BASE64URL[BASE64URL.index(valid[-1]) | 1]
        assert token != valid
    error = _error(lambda: SignedInvite.from_token(token))
    assert error.problem is InviteProblem.MALFORMED
    assert str(error)


BAD_BODIES: dict[str, bytes] = {
    "max uses 0": _spec_body(max_uses=0),
    "expiry equals start": _spec_body(expires_at=T0),
    "unknown role code": _spec_body(role=7),
    "audience flag 2": _spec_body(audience=GUEST.public_key.raw, audience_flag=2),
    "audience flag without key": _spec_body(audience_flag=1),
    "room name empty": _spec_body(room_name=b""),
    "room name too long": _spec_body(room_name=b"x" * 101),
    "room name not utf-8": _spec_body(room_name=b"\xff\xfe"),
    "room name with escape": _spec_body(room_name=b"\x1b[2J"),
    "nine addresses": _spec_body(addresses=(b"h:1",) * 9),
    "bad address": _spec_body(addresses=(b"h:99999",)),
    "address too long": _spec_body(addresses=(b"a" * 63 + b":1",)),
    "five urls": _spec_body(urls=(b"wss://b",) * 5),
    "bad url": _spec_body(urls=(b"gopher://b",)),
    "trailing byte": _spec_body(trailer=b"\x00"),
    "version 0": _spec_body(version=0),
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_signed_but_invalid_bodies_are_refused(body: bytes) -> None:
    signed_data = _sign_raw(body)
    problem = _problem(lambda: SignedInvite.from_bytes(signed_data))
    assert problem in (InviteProblem.MALFORMED, InviteProblem.UNKNOWN_VERSION)
    token = TOKEN_PREFIX + base64.urlsafe_b64encode(signed_data).decode().rstrip("=")
    assert _problem(lambda: SignedInvite.from_token(token)) is problem


def test_spec_encoder_agrees_with_module() -> None:
    assert (
        _spec_body(max_uses=1)
        == _invite(
            role=Role.SPEAKER, audience=None, max_uses=1, addresses=(), bootstrap_urls=()
        ).encode()
    )


def test_truncations_of_a_valid_invite_are_malformed() -> None:
    data = _signed().to_bytes()
    for length in range(1, len(data)):
        problem = _problem(SignedInvite.from_bytes, data[:length])
        assert problem is InviteProblem.MALFORMED
    token = _signed().token
    for length in range(len(token)):
        assert _problem(SignedInvite.from_token, token[:length]) is InviteProblem.MALFORMED


def _verify_fully(signed: SignedInvite) -> Invite:
    return signed.verify(T0, room_id=ROOM, audience=GUEST.public_key, issuer_role=Role.HOST)


@FUZZ
@given(st.text())
@example("mitalk:")
@example("mitalk:\x00")
def test_random_text_gives_only_invite_errors(text: str) -> None:
    with pytest.raises(InviteError):
        _verify_fully(SignedInvite.from_token(text))


@FUZZ
@given(st.text(alphabet=BASE64URL + " \n"))
def test_random_base64_gives_only_invite_errors(text: str) -> None:
    with pytest.raises(InviteError):
        _verify_fully(SignedInvite.from_token(TOKEN_PREFIX + "AQ" + text))


@FUZZ
@given(st.one_of(st.binary(max_size=1500), st.binary(max_size=1500).map(lambda b: b"\x01" + b)))
def test_random_bytes_give_only_invite_errors(data: bytes) -> None:
    with pytest.raises(InviteError):
        _verify_fully(SignedInvite.from_bytes(data))


_VALID = _signed()


@FUZZ
@given(
    position=st.integers(0, len(_VALID.token) - 1),
    replacement=st.characters(),
    mode=st.sampled_from(["replace", "delete", "insert", "truncate"]),
)
def test_single_character_mutations_of_a_token_are_refused(
    position: int, replacement: str, mode: str
) -> None:
    token = _VALID.token
    if mode == "replace":
        assume(replacement != token[position])
        mutated = token[:position] + replacement + token[position + 1 :]
    elif mode == "delete":
        mutated = token[:position] + token[position + 1 :]
    elif mode == "insert":
        assume(not replacement.isspace())
        mutated = token[:position] + replacement + token[position:]
    else:
        mutated = token[:position]
    with pytest.raises(InviteError):
        _verify_fully(SignedInvite.from_token(mutated))


@FUZZ
@given(
    position=st.integers(0, len(_VALID.to_bytes()) - 1),
    flip=st.integers(1, 255),
)
def test_any_change_to_a_signed_invite_is_refused(position: int, flip: int) -> None:
    data = bytearray(_VALID.to_bytes())
    data[position] ^= flip
    try:
        parsed = SignedInvite.from_bytes(bytes(data))
    except InviteError as error:
        assert error.problem in (InviteProblem.MALFORMED, InviteProblem.UNKNOWN_VERSION)
        return
    assert _problem(lambda: _verify_fully(parsed)) is InviteProblem.TAMPERED


def test_the_valid_token_used_for_fuzzing_verifies() -> None:
    assert _verify_fully(SignedInvite.from_token(_VALID.token)) == _VALID.invite


# --- the sans-I/O rule -----------------------------------------------------------------------

FORBIDDEN = {"trio", "socket", "time", "random", "os", "asyncio", "zeroconf", "sounddevice"}


def test_invite_module_does_no_io() -> None:
    source = Path(invite_module.__file__).read_text("utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN
    # datetime may format timestamps, but the module never reads a clock.
    assert "now()" not in source and "utcnow" not in source and "today()" not in source
