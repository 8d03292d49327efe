"""Signed announcements and withdrawals: exact bytes, round trips, refusals, a fuzzed parser."""

from __future__ import annotations

import contextlib

import attrs
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from bootstrap.announcement import (
    MAX_ADDRESSES,
    MAX_ANNOUNCEMENT_SIZE,
    Announcement,
    Withdrawal,
    create_withdrawal,
)
from mitalk_p2p.core.errors import LocalProtocolError, WireError
from mitalk_p2p.core.identity import Domain
from mitalk_p2p.core.term import Term
from tests.bootstrap import HOST, MODERATOR, NOW, ROOM, make_announcement

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Fixed keys and inputs give exactly these bytes (Ed25519 signatures are deterministic).
VECTOR_HEX = (
    "01000102030405060708090a0b0c0d0e0f000f4c617465204e69676874204a617a7a000c736d6f6f"
    "74682074756e65738a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
    "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c0000000100000000"
    "000000000000000003000000006553f100000000006553f35802000e3139322e302e322e313a3430"
    "303000125b323030313a6462383a3a315d3a34303030e85871c50fe92da367d5482b522b8cf0936e"
    "b07f6457b1bf1eec0a561ed1310e782e1810812753754c772d5dc5e481dc017967a725d393def45e"
    "1afa67314806"
)


def _vector() -> Announcement:
    return make_announcement(addresses=("192.0.2.1:4000", "[2001:db8::1]:4000"))


def test_fixed_inputs_give_the_published_bytes() -> None:
    assert _vector().to_bytes().hex() == VECTOR_HEX


def test_round_trip_and_signature() -> None:
    ann = _vector()
    decoded = Announcement.from_bytes(ann.to_bytes())
    assert decoded == ann
    assert decoded.verify()
    assert (decoded.issued_at, decoded.expires_at) == (NOW, NOW + 600)
    assert decoded.host == decoded.signer == HOST.public_key


def test_a_moderator_may_sign_for_the_host() -> None:
    ann = make_announcement(signer=MODERATOR, host=HOST)
    assert ann.host == HOST.public_key
    assert ann.signer == MODERATOR.public_key
    assert Announcement.from_bytes(ann.to_bytes()).verify()


def test_every_changed_byte_is_caught() -> None:
    data = _vector().to_bytes()
    for index in range(len(data)):
        tampered = bytearray(data)
        tampered[index] ^= 0x01
        try:
            decoded = Announcement.from_bytes(bytes(tampered))
        except WireError:
            continue
        assert not decoded.verify(), f"byte {index} changed without detection"


def test_changed_fields_no_longer_verify() -> None:
    ann = make_announcement()
    assert not attrs.evolve(ann, listener_count=999).verify()
    assert not attrs.evolve(ann, signer=MODERATOR.public_key).verify()
    assert not attrs.evolve(ann, signature=bytes(64)).verify()


def test_a_signature_under_another_domain_does_not_verify() -> None:
    ann = make_announcement()
    forged = attrs.evolve(ann, signature=HOST.sign(Domain.INVITE, ann.body()))
    assert not forged.verify()


def test_trailing_and_missing_bytes_are_refused() -> None:
    data = make_announcement().to_bytes()
    with pytest.raises(WireError, match="trailing"):
        Announcement.from_bytes(data + b"\x00")
    with pytest.raises(WireError, match="truncated"):
        Announcement.from_bytes(data[:-1])
    with pytest.raises(WireError, match="larger than any valid"):
        Announcement.from_bytes(bytes(MAX_ANNOUNCEMENT_SIZE + 1))


def test_terms_are_encoded_in_full() -> None:
    term = Term(7, rank=2, list_seq=41)
    assert Announcement.from_bytes(make_announcement(term=term).to_bytes()).term == term


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": ""}, "name must be 1 to 100 bytes"),
        ({"name": "é" * 51}, "name must be 1 to 100 bytes"),
        ({"name": "bad\nname"}, "control character"),
        ({"name": "evil\u202eman"}, "control character"),
        ({"addresses": ()}, "1 to 8 addresses"),
        ({"addresses": tuple(f"192.0.2.1:{p}" for p in range(1, 10))}, "1 to 8 addresses"),
        ({"addresses": ("192.0.2.1:1", "192.0.2.1:1")}, "same address twice"),
        ({"addresses": ("localhost:4000",)}, "not a numeric IP"),
        ({"addresses": ("192.0.2.1:0",)}, "port must be"),
        ({"addresses": ("[2001:DB8::1]:4000",)}, "not written canonically"),
        ({"addresses": ("192.0.2.1:04000",)}, "not written canonically"),
        ({"listener_count": 2**32}, "listener count"),
        ({"lifetime": 0}, "lifetime"),
        ({"now": -5}, "issued at"),
    ],
)
def test_invalid_fields_are_the_callers_error(changes: dict[str, object], message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        make_announcement(**changes)  # type: ignore[arg-type]


def test_the_topic_has_its_own_limit() -> None:
    ann = make_announcement()
    with pytest.raises(WireError, match="topic must be 0 to 300 bytes"):
        attrs.evolve(ann, topic="x" * 301)
    assert attrs.evolve(ann, topic="").topic == ""


def test_a_decoded_announcement_with_a_bad_address_is_a_wire_error() -> None:
    data = bytearray(make_announcement(addresses=("192.0.2.1:4000",)).to_bytes())
    at = data.index(b"192.0.2.1:4000")
    data[at : at + 3] = b"abc"
    with pytest.raises(WireError, match="not a numeric IP"):
        Announcement.from_bytes(bytes(data))


def test_too_many_addresses_on_the_wire_is_refused_before_reading_them() -> None:
    data = bytearray(make_announcement().to_bytes())
    count_at = data.index(b"\x00\x0e192.0.2.1:4000") - 1
    data[count_at] = MAX_ADDRESSES + 1
    with pytest.raises(WireError, match="at most 8 allowed"):
        Announcement.from_bytes(bytes(data))


def test_withdrawal_round_trip_and_kind_separation() -> None:
    withdrawal = create_withdrawal(HOST, room_id=ROOM, term=Term.first(), now=NOW)
    data = withdrawal.to_bytes()
    assert Withdrawal.from_bytes(data) == withdrawal
    assert withdrawal.verify()
    with pytest.raises(WireError, match="not an announcement"):
        Announcement.from_bytes(data)
    with pytest.raises(WireError, match="not a withdrawal"):
        Withdrawal.from_bytes(make_announcement().to_bytes())
    assert not attrs.evolve(withdrawal, withdrawn_at=NOW + 1).verify()


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_only_ever_raise_wire_errors(data: bytes) -> None:
    for parse in (Announcement.from_bytes, Withdrawal.from_bytes):
        with contextlib.suppress(WireError):
            parse(data)


@FUZZ
@given(st.data())
def test_mutated_announcements_only_ever_raise_wire_errors(data: st.DataObject) -> None:
    encoded = bytearray(_vector().to_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(encoded) - 1))
        encoded[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    try:
        decoded = Announcement.from_bytes(bytes(encoded[:cut]))
    except WireError:
        return
    assert decoded.to_bytes() == bytes(encoded[:cut])
