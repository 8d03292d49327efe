"""The bootstrap node over real websockets on 127.0.0.1: requests, limits, address proof."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing
from wsproto.events import BytesMessage, CloseConnection

from bootstrap.announcement import create_withdrawal
from bootstrap.config import BootstrapConfig
from bootstrap.protocol import (
    COOKIE_SIZE,
    MAX_REQUEST_SIZE,
    NO_COOKIE,
    Announce,
    Error,
    LookupId,
    LookupName,
    ProofRequired,
    Prove,
    Rooms,
    decode_response,
    encode_request,
)
from bootstrap.registry import Registry, RegistryConfig
from bootstrap.server import MAX_WEBSOCKET_MESSAGE
from mitalk_p2p.core.identity import Identity
from mitalk_p2p.core.term import Term
from mitalk_p2p.runtime import bootstrap_client as client
from mitalk_p2p.runtime.bootstrap_client import BootstrapError
from tests.bootstrap import HOST, MODERATOR, NOW, ROOM, STRANGER, make_announcement, room_id
from tests.bootstrap.nodes import (
    WallClock,
    exchange,
    exchange_bytes,
    prove,
    raw_connection,
    read_until_closed,
    running_node,
    wsproto_connection,
)

SECOND_TERM = Term.first().successor(rank=0, list_seq=5)
SUCCESSOR = Identity.from_seed(bytes([9]) * 32, "successor")


async def test_announce_then_find_by_name_and_by_id() -> None:
    ann = make_announcement()
    async with running_node() as (address, server):
        assert await client.announce(address, ann) == "added"
        assert await client.announce(f"ws://{address}/", ann) == "kept"
        assert await client.lookup_name(address, "JAZZ") == [ann]
        assert await client.lookup_name(address, "polka") == []
        assert await client.lookup_id(address, ROOM) == ann
        assert await client.lookup_id(address, room_id(77)) is None
        assert server.registry.statistics().announcements_accepted == 1


async def test_unsigned_and_tampered_announcements_are_refused_with_a_code() -> None:
    ann = make_announcement()
    async with running_node() as (address, server):
        for bad in (attrs.evolve(ann, signature=bytes(64)),
                    attrs.evolve(ann, name="Totally Legit Jazz")):
            with pytest.raises(BootstrapError, match="bad-signature") as caught:
                await client.announce(address, bad)
            assert caught.value.code == "bad-signature"
            assert caught.value.node == address
        assert await client.lookup_name(address, "jazz") == []
        assert server.statistics().errors == {"bad-signature": 2}


async def test_a_stale_term_is_refused() -> None:
    async with running_node() as (address, _):
        await client.announce(address, make_announcement(term=SECOND_TERM))
        with pytest.raises(BootstrapError) as caught:
            await client.announce(address, make_announcement(term=Term.first(), now=NOW + 1))
        assert caught.value.code == "stale-term"
        found = await client.lookup_id(address, ROOM)
        assert found is not None and found.term == SECOND_TERM


async def test_nobody_but_the_host_can_redirect_a_room_and_a_successor_must_sign_itself() -> None:
    elsewhere = ("203.0.113.66:4000",)
    async with running_node() as (address, _):
        await client.announce(address, make_announcement())
        attempts = {
            # A stranger "moderating" for the host at the same term: refused.
            "not-authorized": make_announcement(signer=STRANGER, host=HOST, now=NOW + 1,
                                                addresses=elsewhere),
            # ...and at a higher term, for the host or for anybody else: refused.
            "not-host-signed": make_announcement(signer=STRANGER, host=SUCCESSOR,
                                                 term=SECOND_TERM, now=NOW + 1,
                                                 addresses=elsewhere),
        }
        for code, attempt in attempts.items():
            with pytest.raises(BootstrapError) as caught:
                await client.announce(address, attempt)
            assert caught.value.code == code
        found = await client.lookup_id(address, ROOM)
        assert found is not None and found.addresses == ("192.0.2.1:4000",)
        # A successor announcing itself under its new term takes over.
        successor = make_announcement(signer=SUCCESSOR, term=SECOND_TERM, now=NOW + 2,
                                      addresses=("198.51.100.7:4000",))
        assert await client.announce(address, successor) == "replaced"
        assert await client.lookup_id(address, ROOM) == successor


async def test_the_host_renews_and_withdraws_its_own_announcement() -> None:
    clock = WallClock()
    async with running_node(clock=clock) as (address, _):
        assert await client.announce(address, make_announcement(listener_count=3)) == "added"
        clock.now = NOW + 30
        renewed = make_announcement(now=NOW + 30, listener_count=9)
        assert await client.announce(address, renewed) == "replaced"
        assert await client.lookup_id(address, ROOM) == renewed
        with pytest.raises(BootstrapError) as caught:
            await client.withdraw(address, create_withdrawal(
                STRANGER, room_id=ROOM, term=Term.first(), now=NOW + 30))
        assert caught.value.code == "not-authorized"
        withdrawal = create_withdrawal(HOST, room_id=ROOM, term=Term.first(), now=NOW + 30)
        assert await client.withdraw(address, withdrawal)
        assert await client.lookup_id(address, ROOM) is None
        assert not await client.withdraw(address, withdrawal)


async def test_a_moderator_may_announce_for_its_host() -> None:
    by_moderator = make_announcement(signer=MODERATOR, host=HOST)
    async with running_node() as (address, _):
        assert await client.announce(address, by_moderator) == "added"
        assert await client.lookup_id(address, ROOM) == by_moderator


async def test_expired_rooms_disappear() -> None:
    clock = WallClock()
    async with running_node(clock=clock) as (address, _):
        await client.announce(address, make_announcement(lifetime=60))
        clock.now = NOW + 59
        assert await client.lookup_id(address, ROOM) is not None
        clock.now = NOW + 60
        assert await client.lookup_id(address, ROOM) is None
        assert await client.lookup_name(address, "jazz") == []
        with pytest.raises(BootstrapError) as caught:
            await client.announce(address, make_announcement(lifetime=60))
        assert caught.value.code == "expired"


async def test_the_node_sweeps_expired_rooms_periodically(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = WallClock()
    config = BootstrapConfig(expire_interval=30.0)
    async with running_node(config, clock) as (address, server):
        await client.announce(address, make_announcement(lifetime=60))
        clock.now = NOW + 61
        await trio.sleep(31)
        stats = server.registry.statistics()
        assert (stats.rooms, stats.expired) == (0, 1)


async def test_garbage_gets_an_error_reply_and_the_node_keeps_serving() -> None:
    garbage: list[bytes | str] = [b"", b"\xff" * 40, b"\x01\x01" + b"junk", "text, not binary"]
    async with running_node() as (address, server):
        async with raw_connection(address) as websocket:
            await prove(websocket, server)
            for message in garbage:
                reply = await exchange(websocket, message)
                assert isinstance(reply, Error) and reply.code == "malformed", reply
            assert await exchange(websocket, encode_request(LookupId(ROOM))) == Rooms(())
        assert await client.announce(address, make_announcement()) == "added"
        assert server.statistics().errors == {"malformed": 4}


# --- limits, each with its code ----------------------------------------------------------------


async def test_limit_message_size_too_large_then_closed() -> None:
    async with running_node(BootstrapConfig(close_timeout=0.05)) as (address, server):
        async with raw_connection(address) as websocket:
            reply = await exchange(websocket, bytes(MAX_REQUEST_SIZE + 1))
            assert isinstance(reply, Error) and reply.code == "too-large"
            assert await exchange(websocket, encode_request(LookupId(ROOM))) == Rooms(())
        # Far beyond the limit, the node stops reading and closes (1009), unbuffered, and
        # ends TCP itself when the client does not answer the closing handshake.
        async with wsproto_connection(address) as (stream, ws, events):
            await stream.send_all(ws.send(BytesMessage(data=bytes(MAX_WEBSOCKET_MESSAGE + 1))))
            with trio.fail_after(5):
                await read_until_closed(stream, ws, events)
            assert [e.code for e in events if isinstance(e, CloseConnection)] == [1009]
        assert server.statistics().errors == {"too-large": 2}


async def test_limit_rooms_in_the_registry() -> None:
    registry = Registry(RegistryConfig(max_rooms=2))
    async with running_node(registry=registry) as (address, _):
        for n in (1, 2):
            await client.announce(address, make_announcement(room=room_id(n)))
        with pytest.raises(BootstrapError, match="already holds 2 rooms") as caught:
            await client.announce(address, make_announcement(room=room_id(3)))
        assert caught.value.code == "registry-full"
        assert await client.announce(address, make_announcement(room=room_id(2), now=NOW + 1)) \
            == "replaced"  # a room already present may still renew


async def test_limit_addresses_per_room() -> None:
    registry = Registry(RegistryConfig(max_addresses=2))
    three = tuple(f"192.0.2.1:{port}" for port in (1, 2, 3))
    async with running_node(registry=registry) as (address, _):
        with pytest.raises(BootstrapError, match="at most 2 allowed") as caught:
            await client.announce(address, make_announcement(addresses=three))
        assert caught.value.code == "too-many-addresses"
        assert await client.announce(address, make_announcement(addresses=three[:2])) == "added"


async def test_limit_connections_per_source_address() -> None:
    config = BootstrapConfig(max_connections_per_ip=2)
    async with running_node(config) as (address, server):
        async with raw_connection(address), raw_connection(address):
            with pytest.raises(BootstrapError, match="refused the connection") as caught:
                await client.lookup_name(address, "jazz")
            assert caught.value.code == "too-many-connections"
            assert server.statistics().connections_open == 2
        assert await client.lookup_name(address, "jazz") == []
        stats = server.statistics()
        assert stats.connections_refused == 1
        assert stats.errors == {"too-many-connections": 1}


async def test_limit_request_rate_per_connection() -> None:
    config = BootstrapConfig(request_burst=4, request_rate=0.001)
    lookup = encode_request(LookupName("jazz"))
    async with running_node(config) as (address, server), raw_connection(address) as websocket:
        await prove(websocket, server)  # spends one token
        replies = [await exchange(websocket, lookup) for _ in range(5)]
        assert replies[:3] == [Rooms(())] * 3
        assert [r.code for r in replies[3:] if isinstance(r, Error)] == ["rate-limited"] * 2
        assert server.statistics().errors == {"rate-limited": 2}
        # Another connection has its own budget.
        assert await client.lookup_name(address, "jazz") == []


async def test_limit_idle_time(autojump_clock: trio.testing.MockClock) -> None:
    async with running_node(BootstrapConfig(idle_timeout=60.0)) as (address, server):
        async with wsproto_connection(address) as (stream, ws, events):
            assert server.statistics().connections_open == 1
            await trio.sleep(61)
            await read_until_closed(stream, ws, events)
            closes = [e for e in events if isinstance(e, CloseConnection)]
            assert [(c.code, c.reason) for c in closes] == [(1000, "idle-timeout")]
        assert server.statistics().idle_closed == 1
        assert server.statistics().connections_open == 0


# --- address proof -------------------------------------------------------------------------------


async def test_an_unproven_client_never_gets_a_reply_larger_than_its_request() -> None:
    async with running_node() as (address, server):
        for n in range(30):
            await client.announce(address, make_announcement(room=room_id(n), name=f"Jazz {n}"))
        requests: list[bytes | str] = [
            encode_request(LookupName("")),
            encode_request(LookupName("jazz")),
            encode_request(LookupName("Jazz 1")),
            encode_request(LookupId(room_id(3))),
            encode_request(Prove(NO_COOKIE, LookupName(""))),
            encode_request(Prove(bytes(range(COOKIE_SIZE)), LookupName(""))),  # forged cookie
            encode_request(Announce(make_announcement(room=room_id(3), name="Jazz 3"))),
            b"\x01\x03" + bytes(17),
            "text",
            b"\x01",
        ]
        sizes: list[tuple[int, int]] = []
        async with raw_connection(address) as websocket:
            for message in requests[:-1]:
                reply = await exchange_bytes(websocket, message)
                sizes.append((len(message), len(reply)))
                assert len(reply) <= len(message), (message, reply)
            await websocket.send_message(requests[-1])  # too small for any reply at all
            reply = await exchange_bytes(websocket, encode_request(LookupName("polka")))
            assert decode_response(reply) == Rooms(())  # the next reply is the next request's
        assert all(reply <= request for request, reply in sizes)
        proofs = server.statistics().proofs
        assert proofs["withheld"] == 1 and proofs["bad-cookie"] == 1
        assert proofs["required"] >= 5 and "proven" not in proofs


async def test_a_client_that_echoes_the_cookie_gets_the_full_answer() -> None:
    async with running_node() as (address, server):
        for n in range(30):
            await client.announce(address, make_announcement(room=room_id(n), name=f"Jazz {n}"))
        async with raw_connection(address) as websocket:
            lookup = LookupId(room_id(3))
            required = await exchange(websocket, encode_request(lookup))
            assert isinstance(required, ProofRequired) and len(required.cookie) == COOKIE_SIZE
            full = await exchange(websocket, encode_request(Prove(required.cookie, lookup)))
            assert isinstance(full, Rooms) and [r.room_id for r in full.rooms] == [room_id(3)]
            everything = await exchange(websocket, encode_request(LookupName("")))
            assert isinstance(everything, Rooms) and len(everything.rooms) == 20
        assert server.statistics().proofs["proven"] == 1


async def test_the_client_library_proves_its_address_transparently() -> None:
    async with running_node() as (address, server):
        for n in range(30):
            await client.announce(address, make_announcement(room=room_id(n), name=f"Jazz {n}"))
        assert len(await client.lookup_name(address, "jazz")) == 20
        assert len(await client.lookup_name(address, "")) == 20  # 4-byte request
        found = await client.lookup_id(address, room_id(7))
        assert found is not None and found.name == "Jazz 7"
        proofs = server.statistics().proofs
        assert proofs["proven"] == 3 and "bad-cookie" not in proofs
