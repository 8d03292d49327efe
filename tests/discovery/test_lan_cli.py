"""``mitalk host/join/rooms`` with real mDNS, as processes in the test's private LAN.

The host side and the guest side are separate network namespaces joined by a veth
pair (``netns.py``); nothing leaves them.  Every wait is for an event a process
prints, bounded by ``procs.BOUND``.
"""

from __future__ import annotations

import signal
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from mitalk_p2p.core.invite import SignedInvite

from .netns import GUEST_IP, HOST_IP, Lan
from .procs import Procs

PEER = ["--input", "none", "--output", "null", "--json-events", "--detach"]


@asynccontextmanager
async def _processes(lan: Lan, workdir: Path) -> AsyncIterator[Procs]:
    async with trio.open_nursery() as nursery:
        procs = Procs(lan, nursery, workdir)
        try:
            yield procs
        finally:
            with trio.CancelScope(shield=True):
                await procs.stop_all()
            nursery.cancel_scope.cancel()


def _ready(event: dict[str, Any]) -> bool:
    return event.get("event") == "ready"


def _mentions(address: str) -> Callable[[str], bool]:
    return lambda line: f"note: {address} " in line


def _listed_at(address: str) -> Callable[[dict[str, Any]], bool]:
    # A record can first be resolved without its addresses; they then come as an update.
    return lambda e: e.get("event") in ("room_seen", "room_updated") and address in e.get(
        "control", []
    )


def _seen(key: str, kind: str = "room_seen") -> Any:
    return lambda e: e.get("event") == kind and e.get("key") == key


async def test_an_open_room_is_listed_joined_without_an_invite_and_handed_over(
    lan: Lan, tmp_path: Path
) -> None:
    async with _processes(lan, tmp_path) as procs:
        rooms = await procs.mitalk(lan.guest_ns, "rooms", "rooms", "--seconds", "60", "--json")
        host = await procs.mitalk(
            lan.host_ns, "host", "host", "Open room", "--topic", "all welcome", "--open",
            "--listen", f"{HOST_IP}:7100", *PEER,
        )  # fmt: skip
        ready = await host.event("the host starting", _ready)
        host_key = ready["host_key"]
        seen = await rooms.event("the room appearing", _seen(host_key))
        assert seen["room_id"] == ready["room_id"] and seen["name"] == "Open room"
        assert seen["topic"] == "all welcome" and seen["open"] is True
        assert seen["control"] == [f"{HOST_IP}:7100"] and seen["listeners"] == 0

        closed = await procs.mitalk(
            lan.host_ns, "closed", "host", "Closed room", "--listen", f"{HOST_IP}:7101", *PEER
        )
        closed_key = (await closed.event("the closed room starting", _ready))["host_key"]
        await rooms.event("the closed room appearing", _seen(closed_key))
        refused = await procs.mitalk(
            lan.guest_ns, "refused", "join", "--pick", "Closed room", "--browse", "2",
            "--listen", f"{GUEST_IP}:7201", *PEER,
        )  # fmt: skip
        assert await refused.exit_code() == 2
        assert any("'Closed room' is invite-only" in line for line in refused.errors)

        guest = await procs.mitalk(
            lan.guest_ns, "guest", "join", "--pick", "open", "--browse", "2",
            "--listen", f"{GUEST_IP}:7200", *PEER,
        )  # fmt: skip
        joined = await guest.event("joining without an invite", _ready)
        assert joined["room_id"] == ready["room_id"] and joined["host_key"] == host_key
        assert joined["role"] == "listener"
        saved = tmp_path / "guest" / "invites" / f"{ready['room_id']}.token"
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        assert saved.read_text().startswith("mitalk:")
        updated = await rooms.event(
            "the listener count going up",
            lambda e: _seen(host_key, "room_updated")(e) and e["listeners"] == 1,
        )
        assert updated["room_id"] == ready["room_id"]

        # The host leaves: its record goes, and the guest, now the host, advertises the room.
        host.send(signal.SIGTERM)
        await rooms.event("the host's record going", _seen(host_key, "room_gone"))
        guest_key = (await guest.event("taking over", lambda e: e.get("event") == "took_over"))[
            "actor"
        ]["fp"]
        successor = await rooms.event(
            "the successor's record",
            lambda e: e.get("event") == "room_seen" and e.get("room_id") == ready["room_id"]
            and e.get("key") != host_key,
        )  # fmt: skip
        assert successor["fingerprint"].startswith(guest_key)
        assert successor["control"] == [f"{GUEST_IP}:7200"] and successor["open"] is False


async def test_a_spoofed_record_can_not_capture_a_joiner(lan: Lan, tmp_path: Path) -> None:
    invite_file = tmp_path / "invite.txt"
    async with _processes(lan, tmp_path) as procs:
        rooms = await procs.mitalk(lan.guest_ns, "rooms", "rooms", "--seconds", "90", "--json")
        host = await procs.mitalk(
            lan.host_ns, "host", "host", "Jazz", "--listen", f"{HOST_IP}:7100",
            "--no-address-hints", "--invite-file", str(invite_file), *PEER,
        )  # fmt: skip
        ready = await host.event("the host starting", _ready)
        host_key, room_id = ready["host_key"], ready["room_id"]
        assert SignedInvite.from_token(invite_file.read_text()).invite.addresses == ()
        await rooms.event("the genuine record", _seen(host_key))

        # Two impostors on the guest's side: one copies the host's key into its record,
        # the other advertises its own key; both host a room with the same id and name.
        copier = await procs.start(
            lan.guest_ns, "copier",
            ["-m", "tests.discovery.impostor", "--room-id", room_id, "--name", "Jazz",
             "--listen", f"{GUEST_IP}:7301", "--claim-key", host_key],
        )  # fmt: skip
        other = await procs.start(
            lan.guest_ns, "other",
            ["-m", "tests.discovery.impostor", "--room-id", room_id, "--name", "Jazz",
             "--listen", f"{GUEST_IP}:7302"],
        )  # fmt: skip
        copier_fp = (await copier.event("advertising", lambda e: e["event"] == "advertised"))["fp"]
        other_fp = (await other.event("advertising", lambda e: e["event"] == "advertised"))["fp"]
        for address in (f"{GUEST_IP}:7301", f"{GUEST_IP}:7302"):
            listed = await rooms.event(f"the fake at {address} listed", _listed_at(address))
            assert listed["room_id"] == room_id and listed["name"] == "Jazz"

        # Freeze the genuine host so the joiner first sees only the fakes.
        host.send(signal.SIGSTOP)
        guest = await procs.mitalk(
            lan.guest_ns, "guest", "join", f"@{invite_file}", "--listen", f"{GUEST_IP}:7200",
            "--search", "60", "--name", "guest", *PEER,
        )  # fmt: skip
        host_fp = next(e for e in rooms.events if e.get("key") == host_key)["fingerprint"]
        for address, fp in ((f"{GUEST_IP}:7301", copier_fp), (f"{GUEST_IP}:7302", other_fp)):
            line = await guest.stderr_line(f"refusing {address}", _mentions(address))
            assert "is not the room's host" in line, line
            assert f"it proved key {fp}, but the invite is from {host_fp}" in line, line
        assert not any(_ready(e) for e in guest.events)

        host.send(signal.SIGCONT)
        joined = await guest.event("joining the genuine room", _ready)
        assert joined["room_id"] == room_id and joined["host_key"] == host_key
        await host.event(
            "admitting the guest",
            lambda e: e.get("event") == "joined" and e["member"]["name"] == "guest",
        )

        for impostor in (copier, other):
            impostor.send(signal.SIGTERM)
            report = await impostor.event("its report", lambda e: e["event"] == "exit")
            assert report["admitted"] == [], f"{impostor.name} admitted {report['admitted']}"
            assert report["handshakes_failed"] >= 1  # the guest dialed it and gave up
