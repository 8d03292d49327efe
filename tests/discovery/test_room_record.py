"""The TXT record of a room: round trips, strict decoding, garbage (no network)."""

from __future__ import annotations

import contextlib
import time

import hypothesis.strategies as st
import pytest
from hypothesis import given

from mitalk_p2p.core.control import PROTOCOL_VERSION
from mitalk_p2p.core.errors import LocalProtocolError
from mitalk_p2p.core.identity import Identity
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.invite import SignedInvite, create_invite
from mitalk_p2p.core.roles import Role
from mitalk_p2p.discovery.room_record import (
    MAX_TXT_STRING,
    RecordError,
    RoomRecord,
    instance_name,
    trim_utf8,
)

HOST = Identity.from_seed(bytes(range(32)), "Host")
OTHER = Identity.from_seed(bytes(range(1, 33)), "Other")
ROOM = RoomId(bytes(range(16)))


def _invite(issuer: Identity = HOST, *, role: Role = Role.LISTENER, room: RoomId = ROOM,
            name: str = "Café ☕") -> SignedInvite:  # fmt: skip
    return create_invite(
        issuer, room_id=room, room_name=name, role=role, now=time.time(), lifetime=3600,
        max_uses=65535,
    )  # fmt: skip


def _record(**changes: object) -> RoomRecord:
    fields: dict[str, object] = dict(
        room_id=ROOM, name="Café ☕", host_key=HOST.public_key, listeners=3, control_port=7000,
        topic="jazz",
    )  # fmt: skip
    fields.update(changes)
    return RoomRecord(**fields)  # type: ignore[arg-type]


def _wire(record: RoomRecord) -> dict[bytes, bytes | None]:
    """The record as a browser receives it: byte keys and values."""
    return {key.encode(): value for key, value in record.to_properties().items()}


def test_round_trip_with_every_field() -> None:
    record = _record(open_invite=_invite())
    properties = record.to_properties()
    assert properties["v"] == str(PROTOCOL_VERSION).encode()
    assert properties["id"] == ROOM.hex.encode()
    assert properties["fp"] == HOST.fingerprint.encode()
    assert properties["n"] == b"3" and properties["ctl"] == b"7000"
    assert {"inv0", "inv1"} <= set(properties)  # the invite is split over several strings
    for key, value in properties.items():
        assert len(key) + 1 + len(value) <= MAX_TXT_STRING
    assert RoomRecord.from_properties(_wire(record)) == record


def test_round_trip_minimal_and_keys_ignore_case() -> None:
    record = _record(topic="")
    wire = {key.upper(): value for key, value in _wire(record).items()}
    assert "topic" not in record.to_properties()
    assert RoomRecord.from_properties(wire) == record


def test_unknown_keys_are_ignored() -> None:
    wire = _wire(_record())
    wire[b"future"] = b"whatever"
    wire[b"flag"] = None
    wire["ключ".encode()] = b"x"
    assert RoomRecord.from_properties(wire) == _record()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (b"v", b"2", "protocol version 2"),
        (b"v", b"01", "not a decimal number"),
        (b"id", ROOM.hex.upper().encode(), "32 lowercase hex"),
        (b"id", b"00" * 15, "32 lowercase hex"),
        (b"key", b"zz" * 32, "64 lowercase hex"),
        (b"fp", OTHER.fingerprint.encode(), "not that of the key"),
        (b"n", b"-1", "not a decimal number"),
        (b"n", b"1000001", "out of range"),
        (b"ctl", b"0", "control port"),
        (b"ctl", b"65536", "out of range"),
        (b"name", b"", "room name"),
        (b"name", b"a\nb", "control character"),
        (b"name", b"\xff", "not UTF-8"),
        (b"name", "\u202eevil".encode(), "control character"),
        (b"topic", b"x" * 161, "topic"),
        (b"name", None, "has no value"),
    ],
)
def test_a_garbled_field_rejects_the_record(key: bytes, value: bytes | None, message: str) -> None:
    wire = _wire(_record())
    wire[key] = value
    with pytest.raises(RecordError, match=message):
        RoomRecord.from_properties(wire)


@pytest.mark.parametrize("missing", [b"v", b"id", b"name", b"key", b"fp", b"n", b"ctl"])
def test_a_missing_field_rejects_the_record(missing: bytes) -> None:
    wire = _wire(_record())
    del wire[missing]
    with pytest.raises(RecordError, match="missing"):
        RoomRecord.from_properties(wire)


def test_a_key_twice_in_different_case_is_refused() -> None:
    wire = _wire(_record())
    wire[b"NAME"] = b"Other"
    with pytest.raises(RecordError, match="twice"):
        RoomRecord.from_properties(wire)


def _with_invite_parts(parts: dict[bytes, bytes]) -> dict[bytes, bytes | None]:
    wire = _wire(_record())
    wire.update(parts)
    return wire


def _parts(invite: SignedInvite) -> dict[bytes, bytes]:
    token = invite.token.encode()
    chunks = [token[i : i + 200] for i in range(0, len(token), 200)]
    return {f"inv{i}".encode(): chunk for i, chunk in enumerate(chunks)}


@pytest.mark.parametrize(
    ("invite", "message"),
    [
        (_invite(OTHER), "not issued by the record's key"),
        (_invite(room=RoomId(bytes(16))), "another room"),
        (_invite(role=Role.SPEAKER), "listener only"),
    ],
)
def test_an_open_invite_must_be_a_listener_invite_from_the_key(
    invite: SignedInvite, message: str
) -> None:
    with pytest.raises(RecordError, match=message):
        RoomRecord.from_properties(_with_invite_parts(_parts(invite)))


def test_an_audience_bound_or_forged_open_invite_is_refused() -> None:
    bound = create_invite(
        HOST, room_id=ROOM, room_name="x", role=Role.LISTENER, now=time.time(), lifetime=60,
        audience=OTHER.public_key,
    )  # fmt: skip
    with pytest.raises(RecordError, match="one peer only"):
        RoomRecord.from_properties(_with_invite_parts(_parts(bound)))
    genuine = _invite()
    forged = SignedInvite(invite=genuine.invite, body=genuine.body, signature=bytes(64))
    with pytest.raises(RecordError, match="signature"):
        RoomRecord.from_properties(_with_invite_parts(_parts(forged)))


def test_open_invite_parts_must_be_complete() -> None:
    parts = _parts(_invite())
    assert len(parts) >= 2
    del parts[b"inv0"]
    with pytest.raises(RecordError, match="without gaps"):
        RoomRecord.from_properties(_with_invite_parts(parts))
    truncated = _parts(_invite())
    truncated[b"inv1"] = truncated[b"inv1"][:-5]
    with pytest.raises(RecordError, match="open invite is unusable"):
        RoomRecord.from_properties(_with_invite_parts(truncated))


def test_construction_refuses_what_would_not_encode() -> None:
    with pytest.raises(LocalProtocolError):
        _record(name="x" * 101)
    with pytest.raises(LocalProtocolError):
        _record(topic="y" * 161)
    with pytest.raises(LocalProtocolError):
        _record(open_invite=_invite(OTHER))


@given(
    st.dictionaries(
        st.sampled_from([b"v", b"id", b"name", b"key", b"fp", b"n", b"ctl", b"topic", b"inv0",
                         b"inv1", b"x"]) | st.binary(max_size=8),
        st.none() | st.binary(max_size=300),
        max_size=12,
    )
)  # fmt: skip
def test_garbage_raises_only_record_error(properties: dict[bytes, bytes | None]) -> None:
    try:
        record = RoomRecord.from_properties(properties)
    except RecordError:
        return
    assert RoomRecord.from_properties(_wire(record)) == record


@given(st.binary(max_size=40), st.integers(0, 10))
def test_garbage_mutations_of_a_valid_record(noise: bytes, index: int) -> None:
    wire = _wire(_record(open_invite=_invite()))
    key = sorted(wire)[index % len(wire)]
    wire[key] = noise
    with contextlib.suppress(RecordError):
        RoomRecord.from_properties(wire)


def test_instance_names_fit_a_dns_label_and_differ_per_host() -> None:
    long = instance_name("é" * 100, HOST.public_key)
    assert len(long.encode()) <= 63 and long.endswith(f"({HOST.public_key.short})")
    assert instance_name("v1.2 room", HOST.public_key) == f"v1-2 room ({HOST.public_key.short})"
    assert instance_name("Jazz", HOST.public_key) != instance_name("Jazz", OTHER.public_key)
    assert trim_utf8("aé", 2) == "a"
