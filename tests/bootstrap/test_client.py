"""The client library against real nodes: several nodes, dead and silent ones, liars, and
keeping a room announced, including by a successor after the host leaves."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import attrs
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from bootstrap.announcement import Announcement, Withdrawal, create_withdrawal
from bootstrap.protocol import ProofRequired, Rooms, encode_response
from bootstrap.registry import Outcome, Registry
from bootstrap.server import BootstrapServer
from mitalk_p2p.core.identity import Identity
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.term import Term
from mitalk_p2p.room_cli import _keep_announced
from mitalk_p2p.runtime import bootstrap_client as client
from mitalk_p2p.runtime.bootstrap_client import BootstrapError
from mitalk_p2p.runtime.peer_runtime import (
    HostRoom,
    JoinRoom,
    PeerConfig,
    RunningPeer,
    open_peer,
)
from tests.bootstrap import HOST, NOW, ROOM, make_announcement, room_id
from tests.bootstrap.nodes import dead_address, running_node

SECOND_TERM = Term.first().successor(rank=0, list_seq=5)
PROMPT = 3.0
"""Seconds within which an answer from a live node counts as prompt (it takes milliseconds)."""
BOUND = 10.0
"""Seconds a room of real peers may take for a step: far above normal."""


@contextmanager
def silent_address() -> Iterator[str]:
    """A loopback port whose kernel completes connections that nobody ever answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield f"127.0.0.1:{sock.getsockname()[1]}"


async def test_find_room_answers_promptly_while_other_nodes_are_down_or_silent() -> None:
    ann = make_announcement()
    async with running_node() as (live, _):
        await client.announce(live, ann)
        with dead_address() as down, silent_address() as silent:
            with trio.fail_after(PROMPT):  # the silent node alone would take 60 s
                assert await client.find_room([down, silent, live], ROOM,
                                              node_timeout=60.0) == ann
                assert await client.find_room([live, down], room_id(9)) is None


async def test_find_room_takes_the_first_node_that_knows_the_room() -> None:
    ann = make_announcement()
    async with running_node() as (knows, _), running_node() as (ignorant, _):
        await client.announce(knows, ann)
        assert await client.find_room([ignorant, knows], ROOM) == ann
        with dead_address() as first, dead_address() as second:
            with pytest.raises(BootstrapError, match="no bootstrap node answered") as caught:
                await client.find_room([first, second], ROOM)
            assert caught.value.code == "unavailable"


async def test_query_all_merges_the_freshest_answers_while_one_node_is_down() -> None:
    newer = make_announcement(term=SECOND_TERM, addresses=("198.51.100.7:4000",))
    other = make_announcement(room=room_id(5), name="Jazz Brunch", listener_count=1)
    async with running_node() as (one, _), running_node() as (two, _):
        with dead_address() as down:
            await client.announce(one, make_announcement())
            await client.announce(one, other)
            await client.announce(two, newer)
            found = await client.query_all([down, one, two], "jazz")
            assert found == [newer, other]


async def test_announce_all_reaches_the_live_node_when_another_is_dead() -> None:
    ann = make_announcement()
    async with running_node() as (live, _):
        with dead_address() as down, trio.fail_after(PROMPT):
            delivery = await client.announce_all([down, live], ann)
        assert delivery.accepted == (live,)
        assert [f.code for f in delivery.failed] == ["unreachable"]
        assert await client.lookup_id(live, ROOM) == ann


async def test_query_all_fails_only_when_every_node_does() -> None:
    with dead_address() as first, dead_address() as second:
        with pytest.raises(BootstrapError, match="no bootstrap node answered") as caught:
            await client.query_all([first, second], "jazz")
        assert "connection refused" in str(caught.value)
        assert "\n" not in str(caught.value)


async def test_client_errors_are_one_clear_line() -> None:
    with dead_address() as down:
        with pytest.raises(BootstrapError, match="unreachable: connection refused") as caught:
            await client.lookup_id(down, ROOM)
        assert caught.value.code == "unreachable"
    with pytest.raises(BootstrapError, match="not a numeric IP") as bad:
        await client.lookup_id("bootstrap.example:4400", ROOM)
    assert bad.value.code == "bad-address"


async def test_a_forged_answer_from_a_lying_node_is_dropped() -> None:
    forged = attrs.evolve(make_announcement(), addresses=("203.0.113.66:4000",))
    genuine = make_announcement(room=room_id(2), name="Real Jazz")

    async def liar(request: WebSocketRequest) -> None:
        websocket = await request.accept()
        await websocket.get_message()
        await websocket.send_message(encode_response(Rooms((forged, genuine))))
        with suppress(ConnectionClosed):
            await websocket.get_message()  # until the client closes

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, liar, "127.0.0.1", 0, None)
        assert await client.lookup_name(f"127.0.0.1:{server.port}", "jazz") == [genuine]
        nursery.cancel_scope.cancel()


async def test_a_node_that_keeps_asking_for_proof_is_given_up_on() -> None:
    asked = 0

    async def nagging(request: WebSocketRequest) -> None:
        nonlocal asked
        websocket = await request.accept()
        with suppress(ConnectionClosed):
            while True:
                await websocket.get_message()
                asked += 1
                await websocket.send_message(encode_response(ProofRequired(bytes(16))))

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, nagging, "127.0.0.1", 0, None)
        with pytest.raises(BootstrapError, match="kept asking for an address proof") as caught:
            await client.lookup_id(f"127.0.0.1:{server.port}", ROOM)
        assert caught.value.code == "address-proof-required"
        assert asked == client.MAX_PROOF_ROUNDS
        nursery.cancel_scope.cancel()


async def test_a_node_that_never_answers_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with silent_address() as silent:
        with pytest.raises(BootstrapError, match="did not answer within 2 s") as caught:
            await client.lookup_id(silent, ROOM, node_timeout=2.0)
        assert caught.value.code == "timeout"


# --- keeping a room announced ---------------------------------------------------------------


@attrs.define
class WatchedRegistry(Registry):
    """A registry that wakes the test whenever it accepts an announcement."""

    changed: trio.Event = attrs.Factory(trio.Event)

    def announce(self, announcement: Announcement, now: float) -> Outcome:
        outcome = super().announce(announcement, now)
        self.changed.set()
        self.changed = trio.Event()
        return outcome

    async def until(self, room: RoomId, condition: Callable[[Announcement], bool],
                    now: float | None = None) -> Announcement:
        """The room's entry once ``condition`` holds for it (``now``: unix time to look up at)."""
        while ((found := self.lookup_id(room, time.time() if now is None else now)) is None
               or not condition(found)):
            await self.changed.wait()
        return found


async def test_keep_announced_is_not_delayed_by_dead_nodes_and_withdraws_on_exit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    origin = trio.current_time()

    def wall_clock() -> float:
        return NOW + trio.current_time() - origin

    def fresh() -> Announcement:
        return make_announcement(now=wall_clock(), lifetime=120)

    def goodbye() -> Withdrawal:
        return create_withdrawal(HOST, room_id=ROOM, term=Term.first(), now=wall_clock())

    server = BootstrapServer(clock=wall_clock)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(server.serve, "127.0.0.1:0")
        with dead_address() as down, silent_address() as silent:
            async with trio.open_nursery() as announcer:
                delivery = await announcer.start(
                    lambda task_status: client.keep_announced(
                        [silent, address, down], fresh, interval=60.0, make_withdrawal=goodbye,
                        task_status=task_status,
                    )
                )
                assert delivery.accepted == (address,)
                assert sorted(f.code for f in delivery.failed) == ["timeout", "unreachable"]
                await trio.sleep(150)
                # Renewed at exactly 60 s and 120 s: the silent node's 5 s timeouts and
                # the dead node's retries every 5 s never held the live node back.
                found = await client.lookup_id(address, ROOM)
                assert found is not None and found.issued_at == NOW + 120
                assert server.registry.statistics().announcements_accepted == 3
                announcer.cancel_scope.cancel()
        assert await client.lookup_id(address, ROOM) is None
        assert server.registry.statistics().withdrawals == 1
        nursery.cancel_scope.cancel()


async def test_keep_announced_waits_while_there_is_nothing_to_announce(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ready = False

    def maybe() -> Announcement | None:
        return make_announcement(now=NOW) if ready else None

    registry = WatchedRegistry()
    async with running_node(registry=registry) as (address, _), trio.open_nursery() as nursery:
        nursery.start_soon(lambda: client.keep_announced([address], maybe, interval=60.0,
                                                         retry_interval=5.0))
        await trio.sleep(30)
        assert len(registry) == 0
        ready = True
        ready_at = trio.current_time()
        await registry.until(ROOM, lambda _: True, NOW)
        assert trio.current_time() - ready_at <= 5.0
        nursery.cancel_scope.cancel()


async def run_peer(config: PeerConfig, *,
                   task_status: trio.TaskStatus[RunningPeer] = trio.TASK_STATUS_IGNORED) -> None:
    """A peer in its own task, so that it can leave while others stay: until ``leave()``."""
    async with open_peer(config) as peer:
        task_status.started(peer)
        await peer.left.wait()


async def test_a_successor_takes_over_announcing_the_room_after_the_host_leaves() -> None:
    registry = WatchedRegistry()
    with trio.fail_after(BOUND):
        async with running_node(clock=time.time, registry=registry) as (address, _), \
                trio.open_nursery() as peers:
            host: RunningPeer = await peers.start(run_peer, PeerConfig(
                Identity.generate("Host"), HostRoom("Succession room")))
            heir: RunningPeer = await peers.start(run_peer, PeerConfig(
                Identity.generate("Heir"), JoinRoom(host.invite())))
            assert host.state is not None
            room = host.state.room_id
            async with trio.open_nursery() as announcing:
                announcing.start_soon(_keep_announced, [address], heir)  # silent while an heir
                async with trio.open_nursery() as host_announcing:
                    host_announcing.start_soon(_keep_announced, [address], host)
                    first = await registry.until(room, lambda a: a.host == host.me)
                    host_announcing.cancel_scope.cancel()
                assert registry.statistics().announcements_accepted == 1
                host.leave()
                second = await registry.until(room, lambda a: a.host == heir.me)
                assert second.signer == heir.me
                assert second.term > first.term
                assert second.addresses == (heir.control_address,)
                announcing.cancel_scope.cancel()
            heir.leave()
