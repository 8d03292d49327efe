"""Secure control links: a Noise handshake, then encrypted records, over a websocket.

Each websocket message carries exactly one Noise message: the three handshake
messages first, then transport records (see :mod:`.link_records`).  A link is
driven by one task, :meth:`SecureLink.run`, which reads records and hands whole
messages to a callback, while a second task writes what :meth:`SecureLink.send`
queued.  ``send`` never waits: a link whose queue is full is too slow to keep,
and the message is dropped and counted (the room protocol repairs gaps with
heartbeats and resyncs).  A record that fails to decrypt or reassemble, or a
websocket message over the size limit, ends the link and marks it ``failed``;
it never escapes as an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.frame_protocol import CloseReason

from ..core.errors import MitalkError, RemoteProtocolError
from ..core.handshake import (
    HandshakeError,
    HandshakeReplayGuard,
    LinkEstablished,
    LinkHandshake,
    SecureChannel,
    SendHandshakeMessage,
)
from ..core.identity import Identity, PublicKey
from ..core.ids import RoomId
from .link_records import Channel, Reassembler, split_message

logger = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT: Final = 5.0
SEND_QUEUE: Final = 1024
"""Messages queued per link before it counts as stalled and drops."""


class LinkClosed(MitalkError):
    """The link was closed; nothing more can be sent on it."""


MessageHandler = Callable[["SecureLink", Channel, bytes], None]


@attrs.define(eq=False, repr=False)
class SecureLink:
    """One authenticated, encrypted control link to ``remote``."""

    websocket: WebSocketConnection
    channel: SecureChannel
    dialed: bool
    """True when this side opened the link."""
    _send_queue: trio.MemorySendChannel[bytes]
    _outgoing: trio.MemoryReceiveChannel[bytes]
    messages_sent: int = 0
    messages_received: int = 0
    messages_dropped: int = 0
    closed_reason: str | None = None
    failed: bool = False
    """The link ended because the peer sent something malformed or oversized."""

    @classmethod
    def over(cls, websocket: WebSocketConnection, established: LinkEstablished, *, dialed: bool
             ) -> SecureLink:
        send, receive = trio.open_memory_channel[bytes](SEND_QUEUE)
        return cls(websocket, established.channel, dialed, send, receive)

    @property
    def remote(self) -> PublicKey:
        return self.channel.remote_identity

    @property
    def handshake_hash(self) -> bytes:
        return self.channel.handshake_hash

    @property
    def is_open(self) -> bool:
        return self.closed_reason is None

    def send(self, channel: Channel, data: bytes) -> bool:
        """Queue one message; False (and counted) when the link is closed or stalled."""
        if self.closed_reason is not None:
            self.messages_dropped += 1
            return False
        try:
            for record in split_message(channel, data):
                self._send_queue.send_nowait(self.channel.encrypt(record))
        except trio.WouldBlock:
            self.messages_dropped += 1
            return False
        except (trio.ClosedResourceError, MitalkError):
            self.messages_dropped += 1
            return False
        self.messages_sent += 1
        return True

    async def run(self, on_message: MessageHandler) -> None:
        """Carry the link until either side closes it or it fails; then close it."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                await self._read_loop(on_message)
                nursery.cancel_scope.cancel()
        finally:
            self.close("closed")
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self.websocket.aclose()

    def finish(self) -> None:
        """Stop taking messages; send what is queued, then close the websocket."""
        if self.closed_reason is None:
            self.closed_reason = "finished"
            self._send_queue.close()

    def close(self, reason: str) -> None:
        """Close at once: queued messages are dropped and the keys forgotten."""
        if self.closed_reason is None:
            self.closed_reason = reason
        self._send_queue.close()
        self.channel.close()

    async def _read_loop(self, on_message: MessageHandler) -> None:
        reassembler = Reassembler()
        while True:
            try:
                raw = await self.websocket.get_message()
            except ConnectionClosed as exc:
                if exc.reason is not None and exc.reason.code == CloseReason.MESSAGE_TOO_BIG:
                    self._fail("the peer sent a message over the size limit")
                else:
                    self.close("closed by the peer")
                return
            if isinstance(raw, str):
                self._fail("the peer sent a text message")
                return
            try:
                whole = reassembler.add(self.channel.decrypt(raw))
            except (RemoteProtocolError, MitalkError) as exc:
                self._fail(str(exc))
                return
            if whole is not None:
                self.messages_received += 1
                on_message(self, *whole)

    def _fail(self, reason: str) -> None:
        logger.info("closing the link to %s: %s", self.remote.short, reason)
        self.failed = True
        self.close(reason)

    async def _write_loop(self) -> None:
        try:
            async for record in self._outgoing:
                await self.websocket.send_message(record)
            # finish(): everything queued is sent; a clean close ends the read loop.
            await self.websocket.aclose()
        except ConnectionClosed:
            self.close("closed by the peer")


async def _expect_binary(websocket: WebSocketConnection) -> bytes:
    message = await websocket.get_message()
    if isinstance(message, str):
        raise HandshakeError("the peer sent text during the handshake")
    return message


async def initiate(
    websocket: WebSocketConnection,
    identity: Identity,
    room_id: RoomId,
    *,
    expected_remote: PublicKey | None,
) -> SecureLink:
    """Run the initiator's side; raises :class:`HandshakeError` or ``ConnectionClosed``."""
    handshake = LinkHandshake.initiator(identity, room_id, expected_remote=expected_remote)
    with trio.fail_after(HANDSHAKE_TIMEOUT):
        await websocket.send_message(handshake.start())
        outputs = handshake.receive(await _expect_binary(websocket))
        for output in outputs:
            if isinstance(output, SendHandshakeMessage):
                await websocket.send_message(output.data)
    return SecureLink.over(websocket, handshake.established, dialed=True)


async def respond(
    websocket: WebSocketConnection,
    identity: Identity,
    room_id: RoomId,
    replay_guard: HandshakeReplayGuard,
) -> SecureLink:
    """Run the responder's side; raises :class:`HandshakeError` or ``ConnectionClosed``."""
    handshake = LinkHandshake.responder(identity, room_id, replay_guard=replay_guard)
    with trio.fail_after(HANDSHAKE_TIMEOUT):
        for output in handshake.receive(await _expect_binary(websocket)):
            if isinstance(output, SendHandshakeMessage):
                await websocket.send_message(output.data)
        handshake.receive(await _expect_binary(websocket))
    return SecureLink.over(websocket, handshake.established, dialed=False)
