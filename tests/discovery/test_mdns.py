"""zeroconf under trio, for real, inside a private two-namespace LAN (see ``netns.py``).

The advertiser runs in one namespace and the browser in the other, so every
record crosses the veth pair as multicast.  Waits are bounded by ``fail_after``;
registering takes about 1.5 s (zeroconf probes for a unique name first).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
import trio
from zeroconf import InterfaceChoice, ServiceInfo, Zeroconf

from mitalk_p2p.core.identity import Identity
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.invite import create_invite
from mitalk_p2p.core.roles import Role
from mitalk_p2p.discovery.candidates import (
    LAN,
    Candidate,
    MdnsSettings,
    order_candidates,
    search_round,
)
from mitalk_p2p.discovery.mdns import (
    Advert,
    RoomEvent,
    RoomGone,
    RoomSeen,
    TokenBridge,
    default_zeroconf,
    open_room_advertiser,
    open_room_browser,
    open_zeroconf,
)
from mitalk_p2p.discovery.room_record import SERVICE_TYPE, RoomRecord
from mitalk_p2p.discovery.switch import MdnsError

from .conftest import MDNS_ON
from .netns import HOST_IP, Lan, in_netns

BOUND = 15.0
HOST = Identity.from_seed(bytes(range(32)), "Host")
ROOM = RoomId(bytes(range(16)))


def _advert(listeners: int = 2, *, open_room: bool = False) -> Advert:
    invite = (
        create_invite(HOST, room_id=ROOM, room_name="Jazz", role=Role.LISTENER,
                      now=time.time(), lifetime=600, max_uses=65535)
        if open_room else None
    )  # fmt: skip
    record = RoomRecord(
        room_id=ROOM, name="Jazz", host_key=HOST.public_key, listeners=listeners,
        control_port=7000, topic="late night", open_invite=invite,
    )  # fmt: skip
    return Advert(record, (HOST_IP,), 7001)


async def _next(events: trio.MemoryReceiveChannel[RoomEvent]) -> RoomEvent:
    with trio.fail_after(BOUND):
        return await events.receive()


# --- the bridge, without any network --------------------------------------------------


async def test_the_token_bridge_hands_items_from_threads_to_the_trio_thread() -> None:
    trio_thread = threading.get_ident()
    received: list[tuple[int, int]] = []
    all_in = trio.Event()

    def handle(item: int) -> None:
        received.append((item, threading.get_ident()))
        if item == 13:
            raise ValueError("a handler bug must not crash the run")
        if len(received) == 100:
            all_in.set()

    bridge: TokenBridge[int] = TokenBridge.here(handle)
    posters = [threading.Thread(target=lambda k=k: [bridge.post(k * 50 + i) for i in range(50)])
               for k in range(2)]  # fmt: skip
    for thread in posters:
        thread.start()
    with trio.fail_after(BOUND):
        await all_in.wait()
    for thread in posters:
        await trio.to_thread.run_sync(thread.join)
    assert sorted(item for item, _ in received) == list(range(100))
    assert {thread for _, thread in received} == {trio_thread}
    assert (bridge.delivered, bridge.failed) == (99, 1)

    bridge.close()
    assert await trio.to_thread.run_sync(bridge.post, 1000) is False
    await trio.testing.wait_all_tasks_blocked()
    assert len(received) == 100 and bridge.undeliverable == 1


async def test_mdns_off_refuses_to_open_anything() -> None:
    def never(_interfaces: object) -> None:
        raise AssertionError("zeroconf must not be created when mDNS is off")

    with pytest.raises(MdnsError, match="MITALK_MDNS=off"):
        async with open_zeroconf(env={"MITALK_MDNS": "off"}, create=never):  # type: ignore[arg-type]
            pass


# --- real zeroconf in the private LAN ---------------------------------------------------


async def test_advertise_browse_update_and_withdraw(
    host_side: MdnsSettings, guest_side: MdnsSettings
) -> None:
    async with (
        open_zeroconf(guest_side.interfaces, env=guest_side.env, create=guest_side.create)
        as browsing_zc,
        open_room_browser(browsing_zc) as browser,
        open_zeroconf(host_side.interfaces, env=host_side.env, create=host_side.create)
        as advertising_zc,
    ):
        async with open_room_advertiser(advertising_zc, _advert(), min_interval=0.2) as adv:
            seen = await _next(browser.events)
            assert isinstance(seen, RoomSeen) and not seen.updated
            assert seen.record == _advert().record
            assert seen.hosts == (HOST_IP,)
            assert seen.control_addresses == (f"{HOST_IP}:7000",)
            assert seen.media_addresses == (f"{HOST_IP}:7001",)
            assert seen.instance == adv.name
            assert browser.rooms == {seen.instance: seen}

            adv.update(_advert(listeners=3))
            adv.update(_advert(listeners=5))  # coalesced with the one before, or sent after
            while True:
                updated = await _next(browser.events)
                assert isinstance(updated, RoomSeen) and updated.updated
                if updated.record.listeners == 5:
                    break
                assert updated.record.listeners == 3
        gone = await _next(browser.events)
        assert isinstance(gone, RoomGone) and gone.instance == seen.instance
        assert gone.record.listeners == 5
        assert browser.rooms == {}
        stats = browser.statistics()
        assert stats.records_ignored == 0 and stats.bridge_failures == 0


async def test_a_garbled_record_is_dropped_and_counted_and_others_still_seen(
    host_side: MdnsSettings, guest_side: MdnsSettings
) -> None:
    good = _advert(open_room=True)
    forged = dict(good.record.to_properties())
    forged["fp"] = b"AAAA-BBBB-CCCC-DDDD"  # not the key's fingerprint
    garbled = ServiceInfo(
        SERVICE_TYPE, f"Forged._{SERVICE_TYPE}".replace("._", ".", 1), port=7003,
        properties=forged, server="forged.local.", addresses=[socket.inet_aton(HOST_IP)],
    )  # fmt: skip
    async with (
        open_zeroconf(guest_side.interfaces, env=guest_side.env, create=guest_side.create)
        as browsing_zc,
        open_room_browser(browsing_zc) as browser,
        open_zeroconf(host_side.interfaces, env=host_side.env, create=host_side.create)
        as advertising_zc,
    ):
        await trio.to_thread.run_sync(advertising_zc.register_service, garbled)
        async with open_room_advertiser(advertising_zc, good):
            with trio.fail_after(BOUND):
                await browser.wait_for(
                    lambda: len(browser.rooms) == 1 and browser.statistics().records_ignored >= 1
                )
            (seen,) = browser.rooms.values()
            assert seen.record.open_invite is not None
            assert seen.record == good.record
        await trio.to_thread.run_sync(advertising_zc.unregister_service, garbled)


async def test_search_round_finds_the_room_and_orders_the_issuers_records_first(
    host_side: MdnsSettings, guest_side: MdnsSettings
) -> None:
    async with (
        open_zeroconf(host_side.interfaces, env=host_side.env, create=host_side.create) as zc,
        open_room_advertiser(zc, _advert()),
    ):
        started = trio.current_time()
        found = await search_round(
            room_id=ROOM, issuer=HOST.public_key, mdns=guest_side,
            deadline=trio.current_time() + BOUND,
        )  # fmt: skip
        assert found == [Candidate(f"{HOST_IP}:7000", LAN, HOST.public_key)]
        assert trio.current_time() - started < BOUND
        again = await search_round(
            room_id=ROOM, issuer=HOST.public_key, mdns=guest_side, exclude={f"{HOST_IP}:7000"},
            deadline=trio.current_time() + 2.0,
        )  # fmt: skip
        assert again == []


def test_candidate_order_is_reproducible() -> None:
    other = Identity.from_seed(bytes(range(1, 33)), "Other").public_key
    issuer = HOST.public_key
    shuffled = [
        Candidate("10.0.0.9:1", LAN, other),
        Candidate("10.0.0.2:1", LAN, issuer),
        Candidate("10.0.0.1:1", "from a bootstrap node"),
        Candidate("10.0.0.3:1", LAN, issuer),
        Candidate("10.0.0.1:1", LAN, issuer),
        Candidate("10.0.0.5:1", "picked from the room list"),
    ]
    ordered = order_candidates(shuffled, issuer)
    assert [c.address for c in ordered] == [
        "10.0.0.5:1", "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.9:1",
    ]  # fmt: skip
    assert ordered[1].source == "from a bootstrap node"
    assert order_candidates(reversed(shuffled), issuer) == ordered


async def test_an_address_no_interface_has_is_one_clear_error(lan: Lan) -> None:
    def create(interfaces: list[str] | InterfaceChoice) -> Zeroconf:
        return in_netns(lan.guest_ns, lambda: default_zeroconf(interfaces))

    with pytest.raises(MdnsError, match=r"could not start on 10\.231\.99\.99: .*no interface"):
        async with open_zeroconf(("10.231.99.99",), env=MDNS_ON, create=create):
            pass
