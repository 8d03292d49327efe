"""A room of ``mitalk`` processes spread over the hosts of a :class:`NetnsLab`.

:class:`LanRoom` starts each peer (and the bootstrap node) as a real process in
its own namespace, reads its ``--json-events`` lines, and types console
commands into its stdin, as :mod:`mitalk_p2p.live_demo` does on 127.0.0.1.
Each peer listens on its host's lab address, so every byte of the room crosses
the lab's bridge.  Stopping closes every peer's stdin (the console's cue to
leave), waits a bounded time, and kills whatever is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from mitalk_p2p.core.invite import SignedInvite
from mitalk_p2p.discovery.switch import MDNS_ENV
from mitalk_p2p.live_demo import DATA, DemoPeer, read_events

from .netns_lab import NetnsLab

CONTROL_PORT: Final = 7000
MEDIA_PORT: Final = 7001
BOOTSTRAP_PORT: Final = 4400
STOP_TIMEOUT: Final = 10.0
"""Seconds the peers get to leave after their stdin closes, before they are killed."""
SOURCE: Final = DATA / "speech-host.wav"
"""What the host says (looped)."""

Predicate = Callable[[dict[str, Any]], bool]


def event(name: str, **fields: object) -> Predicate:
    """Matches a JSON event by name and fields; a member field matches by display name."""

    def matches(record: dict[str, Any]) -> bool:
        if record.get("event") != name:
            return False
        for key, value in fields.items():
            got = record.get(key)
            if isinstance(got, dict):
                got = got.get("name")
            if got != value:
                return False
        return True

    return matches


@attrs.define(eq=False)
class LanRoom:
    """The processes of one room on the lab, each known by name."""

    lab: NetnsLab
    workdir: Path
    nursery: trio.Nursery
    mdns: bool
    """Whether the processes may use mDNS (``MITALK_MDNS``, which the suite sets to off)."""
    peers: dict[str, DemoPeer] = attrs.Factory(dict)
    namespaces: dict[str, str] = attrs.Factory(dict)
    """Each process's namespace, by name."""

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            MDNS_ENV: "on" if self.mdns else "off",
        }

    async def start(self, namespace: str, name: str, argv: Sequence[str]) -> DemoPeer:
        """Run ``argv`` in ``namespace``; its stderr goes to ``<workdir>/<name>.log``."""
        log = os.open(self.workdir / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            process = await self.lab.open_process(
                namespace,
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=self.environment(),
            )
        finally:
            os.close(log)
        peer = DemoPeer(name, process)
        self.peers[name] = peer
        self.namespaces[name] = namespace
        self.nursery.start_soon(read_events, peer)
        return peer

    async def start_bootstrap(self, namespace: str) -> tuple[DemoPeer, str]:
        """The bootstrap node on ``namespace``; returns it and its ``HOST:PORT`` once it listens."""
        address = f"{self.lab.address(namespace)}:{BOOTSTRAP_PORT}"
        node = await self.start(
            namespace,
            "Bootstrap",
            [sys.executable, "-m", "tests.lan.observed_bootstrap", "--listen", address],
        )
        listening = await node.wait_for("the bootstrap node listening", event("listening"))
        return node, str(listening["address"])

    async def start_mitalk(self, namespace: str, name: str, arguments: Sequence[str]) -> DemoPeer:
        """``mitalk <arguments>`` as ``name`` on ``namespace``, with JSON events and a report."""
        address = self.lab.address(namespace)
        report = self.workdir / f"{name}.json"
        command = [
            sys.executable, "-m", "mitalk_p2p", "--profile", str(self.workdir / name),
            *arguments,
            "--listen", f"{address}:{CONTROL_PORT}", "--media", f"{address}:{MEDIA_PORT}",
            "--name", name, "--json-events", "--report", str(report),
        ]  # fmt: skip
        peer = await self.start(namespace, name, command)
        peer.report = report
        return peer

    def wav(self, name: str) -> Path:
        """Where ``name`` writes what it hears (pass ``--output wav:`` this path)."""
        return self.workdir / f"{name}.wav"

    def report(self, name: str) -> dict[str, Any]:
        peer = self.peers[name]
        assert peer.report is not None and peer.report.exists(), f"{name} wrote no report"
        record = json.loads(peer.report.read_text(encoding="utf-8"))
        assert isinstance(record, dict)
        return record

    def logs(self) -> str:
        """The end of every process's stderr, for failure messages."""
        parts = []
        for name in self.peers:
            path = self.workdir / f"{name}.log"
            text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
            tail = "\n".join(text.splitlines()[-15:])
            parts.append(f"--- {name} ({self.namespaces[name]}) ---\n{tail}")
        return "\n".join(parts)

    async def stop(self) -> None:
        """Let every process leave; kill those that don't within :data:`STOP_TIMEOUT`."""
        for peer in self.peers.values():
            if peer.process.returncode is not None:
                continue
            if peer.report is None:  # not a room member: nothing to leave
                peer.process.terminate()
            elif peer.process.stdin is not None:
                with trio.move_on_after(1):
                    await peer.process.stdin.aclose()
        with trio.move_on_after(STOP_TIMEOUT):
            for peer in self.peers.values():
                await peer.process.wait()
        for peer in self.peers.values():
            if peer.process.returncode is None:
                peer.process.kill()
                await peer.process.wait()
            if peer.process.stdin is not None:
                await peer.process.stdin.aclose()


@asynccontextmanager
async def open_lan_room(lab: NetnsLab, workdir: Path, *, mdns: bool) -> AsyncIterator[LanRoom]:
    """A :class:`LanRoom` whose processes are all stopped on the way out."""
    async with trio.open_nursery() as nursery:
        room = LanRoom(lab, workdir, nursery, mdns)
        try:
            yield room
        except BaseException:
            print(room.logs())
            raise
        finally:
            with trio.CancelScope(shield=True):
                await room.stop()
            nursery.cancel_scope.cancel()


@attrs.frozen
class BootstrapRoom:
    """A room formed through a bootstrap node: what :func:`form_bootstrap_room` started."""

    node: DemoPeer
    node_address: str
    host: DemoPeer
    listeners: tuple[DemoPeer, ...]
    ready: dict[str, Any]
    """The host's ready event."""


async def form_bootstrap_room(room: LanRoom, *, listeners: int = 3) -> BootstrapRoom:
    """Bootstrap node on the last host, the room's host on the first, listeners in between.

    mDNS is off (``--no-mdns``) and the invite names no address, so the listeners
    can only find the room through the node.  The host talks (a looped
    recording) from the start.
    """
    namespaces = room.lab.namespaces
    assert listeners + 2 <= len(namespaces), "the lab is too small for this room"
    node, node_address = await room.start_bootstrap(namespaces[-1])
    invite = room.workdir / "invite.txt"
    host = await room.start_mitalk(
        namespaces[0],
        "Host",
        ["host", "LAN room", "--no-mdns", "--bootstrap", node_address,
         "--invite-file", str(invite), "--no-address-hints", "--invite-uses", str(listeners),
         "--fanout", "2", "--input", f"wav:{SOURCE}", "--loop", "--output", "null"],
    )  # fmt: skip
    ready = await host.wait_for("the host starting", event("ready"))
    assert SignedInvite.from_token(invite.read_text()).invite.addresses == ()
    room_id = ready["room_id"]
    await node.wait_for(
        "the room's announcement",
        lambda record: record.get("event") == "announced" and record.get("room_id") == room_id,
    )
    joined = []
    for index in range(1, listeners + 1):
        name = f"L{index}"
        joined.append(
            await room.start_mitalk(
                namespaces[index],
                name,
                ["join", f"@{invite}", "--no-mdns", "--bootstrap", node_address,
                 "--input", "none", "--output", f"wav:{room.wav(name)}"],
            )
        )
    for peer in joined:
        await peer.wait_for("joining through the bootstrap node", event("ready"))
    return BootstrapRoom(node, node_address, host, tuple(joined), ready)
