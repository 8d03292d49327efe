"""The wire protocol, address-proof cookies and a connection's replies, all without I/O."""

from __future__ import annotations

from collections import Counter
from contextlib import suppress

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from bootstrap.address_proof import CookieMinter
from bootstrap.announcement import create_withdrawal
from bootstrap.protocol import (
    COOKIE_SIZE,
    MAX_REQUEST_SIZE,
    NO_COOKIE,
    PROOF_REQUIRED_SIZE,
    Announce,
    Error,
    LookupId,
    LookupName,
    Ok,
    ProofRequired,
    Prove,
    Request,
    Response,
    Rooms,
    Withdraw,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    peel_proof,
)
from bootstrap.registry import Registry
from bootstrap.session import Session, TokenBucket, answer
from mitalk_p2p.core.errors import WireError
from mitalk_p2p.core.term import Term
from tests.bootstrap import HOST, NOW, ROOM, make_announcement, room_id

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
COOKIE = bytes(range(1, COOKIE_SIZE + 1))


@pytest.mark.parametrize(
    "request_",
    [
        Announce(make_announcement()),
        Withdraw(create_withdrawal(HOST, room_id=ROOM, term=Term.first(), now=NOW)),
        LookupId(ROOM),
        LookupName("jazz"),
        Prove(COOKIE, LookupName("jazz")),
        Prove(NO_COOKIE, Announce(make_announcement())),
    ],
)
def test_requests_round_trip(request_: Request) -> None:
    assert decode_request(encode_request(request_)) == request_


@pytest.mark.parametrize(
    "response",
    [Ok("added"), Rooms(()), Rooms((make_announcement(),)), Error("stale-term", "too old"),
     ProofRequired(COOKIE), ProofRequired()],
)
def test_responses_round_trip(response: Response) -> None:
    assert decode_response(encode_response(response)) == response


def test_a_proof_request_is_exactly_as_large_as_a_room_id_lookup() -> None:
    assert len(encode_response(ProofRequired(COOKIE))) == PROOF_REQUIRED_SIZE
    assert len(encode_request(LookupId(ROOM))) == PROOF_REQUIRED_SIZE
    assert len(encode_response(ProofRequired())) == 2


def test_oversized_and_foreign_messages_are_refused() -> None:
    with pytest.raises(WireError, match="exceeds") as caught:
        decode_request(bytes(MAX_REQUEST_SIZE + 1))
    assert getattr(caught.value, "code", None) == "too-large"
    with pytest.raises(WireError, match="version 9"):
        decode_request(b"\x09\x03" + bytes(16))
    with pytest.raises(WireError, match="unknown kind"):
        decode_request(b"\x01\x7f")
    with pytest.raises(WireError, match="trailing"):
        decode_request(encode_request(LookupId(ROOM)) + b"\x00")
    with pytest.raises(WireError, match="cookie"):
        decode_response(b"\x01\x84" + bytes(5))


def test_proofs_do_not_nest_even_thousands_deep() -> None:
    inner = encode_request(LookupId(ROOM))
    nested = inner
    for _ in range(3000):  # would overflow the stack if decoding recursed
        nested = b"\x01\x05" + COOKIE + nested
    with pytest.raises(WireError, match="may not wrap another proof"):
        decode_request(nested)
    assert peel_proof(encode_request(Prove(COOKIE, LookupId(ROOM)))) == (COOKIE, inner)
    assert peel_proof(inner) is None


@FUZZ
@given(st.binary(max_size=300))
def test_random_messages_only_ever_raise_wire_errors(data: bytes) -> None:
    for parse in (decode_request, decode_response):
        with suppress(WireError):
            parse(data)


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=50))
def test_answer_never_raises(message: bytes | str) -> None:
    reply = answer(Registry(), message, NOW)
    assert isinstance(reply, Error | Rooms | Ok)


# --- cookies -------------------------------------------------------------------------------


def test_a_cookie_is_bound_to_its_address_its_node_and_its_time() -> None:
    minter = CookieMinter(period=60.0)
    cookie = minter.issue("192.0.2.7", 1000.0)
    assert len(cookie) == COOKIE_SIZE
    assert minter.check("192.0.2.7", cookie, 1000.0)
    assert minter.check("192.0.2.7", cookie, 1079.0)  # the next period still counts
    assert not minter.check("192.0.2.7", cookie, 1140.0)  # two periods on: stale
    assert not minter.check("192.0.2.8", cookie, 1000.0)
    assert not CookieMinter().check("192.0.2.7", cookie, 1000.0)  # another node (or restart)
    assert not minter.check("192.0.2.7", NO_COOKIE, 1000.0)
    assert not minter.check("192.0.2.7", cookie[:-1], 1000.0)
    assert repr(minter.secret) not in repr(minter)


# --- one connection, without I/O -------------------------------------------------------------


def session(registry: Registry, *, burst: int = 100) -> Session:
    return Session("192.0.2.7", registry, CookieMinter(), TokenBucket.full(1.0, burst, 0.0))


def busy_registry(rooms: int = 5) -> Registry:
    registry = Registry()
    for n in range(rooms):
        registry.announce(make_announcement(room=room_id(n), name=f"Jazz {n}"), NOW)
    return registry


@FUZZ
@given(st.lists(st.binary(max_size=120) | st.sampled_from([
    encode_request(LookupName("")),
    encode_request(LookupName("jazz")),
    encode_request(LookupId(room_id(1))),
    encode_request(Prove(NO_COOKIE, LookupName(""))),
    encode_request(Prove(COOKIE, LookupId(room_id(1)))),
    encode_request(Announce(make_announcement(room=room_id(1), name="Jazz 1"))),
]), max_size=8))
def test_an_unproven_connection_never_gets_a_reply_larger_than_its_request(
    messages: list[bytes],
) -> None:
    connection = session(busy_registry())
    for message in messages:
        reply = connection.respond(message, 1.0, NOW)
        assert reply is None or len(reply) <= len(message)
    assert not connection.proven


def test_a_cookie_from_the_node_proves_the_connection_and_gets_the_full_reply() -> None:
    connection = session(busy_registry())
    lookup = encode_request(LookupName(""))
    assert connection.respond(lookup, 1.0, NOW) == encode_response(ProofRequired())
    padded = encode_request(Prove(NO_COOKIE, LookupName("")))
    first = decode_response(connection.respond(padded, 1.0, NOW) or b"")
    assert isinstance(first, ProofRequired) and len(first.cookie) == COOKIE_SIZE
    proven = encode_request(Prove(first.cookie, LookupName("")))
    full = decode_response(connection.respond(proven, 2.0, NOW) or b"")
    assert isinstance(full, Rooms) and len(full.rooms) == 5
    assert connection.proven
    assert len(connection.respond(lookup, 3.0, NOW) or b"") > len(lookup)  # proven for good
    assert connection.proofs == Counter({"required": 2, "proven": 1})


def test_a_forged_cookie_proves_nothing_and_is_counted() -> None:
    connection = session(busy_registry())
    forged = encode_request(Prove(COOKIE, LookupName("")))
    reply = decode_response(connection.respond(forged, 1.0, NOW) or b"")
    assert isinstance(reply, ProofRequired) and reply.cookie != COOKIE
    assert not connection.proven
    assert connection.proofs["bad-cookie"] == 1


def test_small_replies_need_no_proof_and_tiny_requests_get_none() -> None:
    connection = session(Registry())
    ann = encode_request(Announce(make_announcement()))
    assert decode_response(connection.respond(ann, 1.0, NOW) or b"") == Ok("added")
    lookup = encode_request(LookupName("polka"))
    assert decode_response(connection.respond(lookup, 1.0, NOW) or b"") == Rooms(())
    assert connection.respond(b"\x01", 1.0, NOW) is None  # malformed, and too small to answer
    assert connection.errors == Counter({"malformed": 1})
    assert connection.proofs == Counter({"withheld": 1})


def test_a_spent_budget_is_rate_limited_before_anything_is_decoded() -> None:
    connection = session(Registry(), burst=2)
    lookup = encode_request(Prove(NO_COOKIE, LookupName("polka")))
    assert [connection.respond(lookup, 0.0, NOW) for _ in range(2)] == \
        [encode_response(Rooms(()))] * 2
    limited = decode_response(connection.respond(lookup, 0.0, NOW) or b"")
    assert isinstance(limited, ProofRequired)  # the error would be larger than the request
    assert connection.errors == Counter({"rate-limited": 1})
    assert connection.respond(lookup, 1.0, NOW) == encode_response(Rooms(()))  # refilled
