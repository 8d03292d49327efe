"""An attacker's end of control links, on 127.0.0.1: raw dials that record what comes back.

A :class:`Tap` is one real secure link (websocket, Noise XX, records) that an
attacking identity opened to a peer.  It records every message the peer sends on
it, by channel, so a test can assert on exactly what leaked.  Waiting is on an
event set by each arrival, never by polling.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import trio
import trio_websocket

from mitalk_p2p.core.control import Kind, decode_message
from mitalk_p2p.core.errors import leaf_exceptions
from mitalk_p2p.core.identity import Identity, PublicKey
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.media_messages import decode_media_message, is_media_message
from mitalk_p2p.runtime.addresses import parse_address
from mitalk_p2p.runtime.contacts import Contact, decode_contacts
from mitalk_p2p.runtime.control_plane import ControlPlane
from mitalk_p2p.runtime.link_records import Channel
from mitalk_p2p.runtime.links import SecureLink, initiate

BOUND = 10.0
"""Seconds any single wait may take before a test fails: far above normal."""


@attrs.define(eq=False)
class Tap:
    """A secure link an attacker dialed, and everything that arrived on it."""

    link: SecureLink
    core: list[bytes] = attrs.Factory(list)
    contacts: list[Contact] = attrs.Factory(list)
    arrivals: list[str] = attrs.Factory(list)
    """Everything received, in order: ``"CONTACTS"`` or the kind of a core message."""
    closed: trio.Event = attrs.Factory(trio.Event)
    _changed: trio.Event = attrs.Factory(trio.Event)

    def send(self, data: bytes) -> None:
        assert self.link.send(Channel.CORE, data), "the link is closed"

    def kinds(self) -> list[str]:
        """Each core message received, by kind: a control ``Kind`` name or a media class."""
        return [_kind(data) for data in self.core]

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        with trio.fail_after(BOUND):
            while not condition():
                await self._changed.wait()

    def _arrived(self, _link: SecureLink, channel: Channel, data: bytes) -> None:
        if channel is Channel.CORE:
            self.core.append(data)
            self.arrivals.append(_kind(data))
        else:
            self.contacts.extend(decode_contacts(data))
            self.arrivals.append("CONTACTS")
        self._changed.set()
        self._changed = trio.Event()

    async def _run(self) -> None:
        try:
            await self.link.run(self._arrived)
        finally:
            self.closed.set()
            self._changed.set()


def _kind(data: bytes) -> str:
    if is_media_message(data):
        return type(decode_media_message(data)).__name__
    return Kind(decode_message(data)[0]).name


@asynccontextmanager
async def tap(
    address: str, identity: Identity, room_id: RoomId, expected: PublicKey | None
) -> AsyncIterator[Tap]:
    """Dial ``address`` as ``identity`` and keep the link open for the block."""
    host, port = parse_address(address)
    stream = await trio.open_tcp_stream(host, port)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(BOUND):
                websocket = await trio_websocket.wrap_client_stream(nursery, stream, host, "/")
                link = await initiate(websocket, identity, room_id, expected_remote=expected)
            listening = Tap(link)
            nursery.start_soon(listening._run)
            try:
                yield listening
            finally:
                link.close("the attacker hung up")
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


async def knock(address: str) -> int | None:
    """Open a websocket to ``address`` and hang up: ``None`` if accepted, else the HTTP
    status the refusal carried."""
    host, port = parse_address(address)
    stream = await trio.open_tcp_stream(host, port)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(BOUND):
                await trio_websocket.wrap_client_stream(nursery, stream, host, "/")
            nursery.cancel_scope.cancel()
        return None
    except BaseExceptionGroup as group:
        refusals = {e.status_code for e in leaf_exceptions(group)
                    if isinstance(e, trio_websocket.ConnectionRejected)}  # fmt: skip
        if len(refusals) != 1 or len(leaf_exceptions(group)) != 1:
            raise
        return refusals.pop()
    finally:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def serving_plane(
    identity: Identity,
    room_id: RoomId,
    *,
    received: list[tuple[PublicKey, bytes]] | None = None,
    is_host: bool = True,
    configure: Callable[[ControlPlane], None] = lambda _plane: None,
) -> AsyncIterator[ControlPlane]:
    """A control plane serving on 127.0.0.1, recording the core messages it receives."""
    inbox = received if received is not None else []
    plane = ControlPlane(
        identity,
        room_id,
        on_core=lambda sender, data, _hash: inbox.append((sender, data)),
        is_host=lambda: is_host,
    )
    configure(plane)
    async with trio.open_nursery() as nursery:
        await nursery.start(plane.serve, "127.0.0.1:0")
        yield plane
        nursery.cancel_scope.cancel()
