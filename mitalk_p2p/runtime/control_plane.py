"""All of a peer's control links: a websocket server, dialing on demand, a directory.

The core addresses control messages by key (:class:`~..core.replica.SendTo`).
:meth:`ControlPlane.send` finds an open link to that key, or queues the message
(a bounded queue per key) and dials the key's address from the directory.  A
failed dial backs off exponentially; the room protocol's own retries
(heartbeats, resync requests, claims) bring new attempts, which is how a peer
recovers by itself after its network comes back.

Incoming connections are answered as Noise responders.  Each TCP connection
is first checked against a per-source-address budget (:mod:`..core.admission`):
one that is over it gets an HTTP 429 (or 503) and is closed before a websocket
or any handshake state exists.  At most ``max_handshakes`` run at once, each
bounded by a timeout, and a handshake keeps no state before it completes beyond
its own task.  Whatever a connection does, it ends when its handler does: the
TCP stream is closed then, even if the peer never answers a closing handshake.

With ``is_member``, the directory is for members only: the host sends it to a
linked peer only once the room has admitted it, and a peer keeps contacts only
from members; a stranger's own address waits on its link until it is admitted.
So a peer that is refused, or never asks to join, learns no member's key or
address and can't fill the directory.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable, Iterator
from typing import Final

import attrs
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketRequest

from ..core.admission import Admission, Verdict
from ..core.errors import MitalkError, WireError, leaf_exceptions
from ..core.handshake import HandshakeError, HandshakeReplayGuard
from ..core.identity import Identity, PublicKey
from ..core.ids import RoomId
from .addresses import format_address, parse_address
from .contacts import Contact, decode_contacts, encode_contacts
from .link_records import DEFAULT_MAX_MESSAGE, Channel
from .links import SecureLink, initiate, respond

logger = logging.getLogger(__name__)

PENDING_PER_KEY: Final = 256
LINKS_PER_KEY: Final = 2
FIRST_BACKOFF: Final = 0.25
MAX_BACKOFF: Final = 4.0
CONNECT_TIMEOUT: Final = 3.0
DIRECTORY_FLUSH: Final = 0.25
"""Seconds the host gathers newly learned addresses before passing them on."""
MAX_WEBSOCKET_MESSAGE: Final = 70_000
"""One Noise message and websocket framing: nothing larger is ever legitimate."""
REFUSAL_TIMEOUT: Final = 0.5
"""Seconds spent telling a refused connection why, before it is closed regardless."""
_REFUSALS: Final = {
    Verdict.RATE_LIMITED: b"429 Too Many Requests",
    Verdict.SOURCE_FULL: b"429 Too Many Requests",
    Verdict.TABLE_FULL: b"503 Service Unavailable",
}
_CONNECTION_ERRORS = (
    ConnectionClosed,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    OSError,
)

CoreHandler = Callable[[PublicKey, bytes, bytes], None]
"""Called with (sender, message, link handshake hash) for each core message."""

_DIAL_FAILURES = (
    OSError,
    trio_websocket.HandshakeError,
    ConnectionClosed,
    HandshakeError,
    trio.TooSlowError,
)


@contextlib.contextmanager
def _one_error() -> Iterator[None]:
    """Re-raise a nursery's lone exception as itself, so callers can catch it by type
    (a handshake that failed or timed out inside the websocket's nursery)."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = leaf_exceptions(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


@attrs.define
class ControlStatistics:
    links_open: int = 0
    links_dialed: int = 0
    links_accepted: int = 0
    dial_failures: int = 0
    handshakes_failed: int = 0
    handshakes_refused_busy: int = 0
    """Refused because ``max_handshakes`` were running, or every tracked source held one."""
    handshakes_rate_limited: int = 0
    """Refused before the handshake: the source address started too many lately."""
    links_refused_source: int = 0
    """Refused before the handshake: the source address held too many connections."""
    links_failed: int = 0
    """Links closed because the peer sent something malformed or oversized."""
    contacts_ignored: int = 0
    """Contacts a peer that is not a member announced for keys other than its own."""
    messages_queued: int = 0
    messages_dropped: int = 0
    """Messages for a key with no link that could not wait: queue full or dial failed."""
    bad_contacts: int = 0


@attrs.define(eq=False, repr=False)
class ControlPlane:
    identity: Identity
    room_id: RoomId
    on_core: CoreHandler
    is_host: Callable[[], bool]
    max_handshakes: int = 64
    own_address: str = ""
    """This peer's control address as others should dial it, once serving."""
    admission: Admission = attrs.Factory(Admission)
    """The per-source-address budget every incoming connection is checked against."""
    is_member: Callable[[PublicKey], bool] | None = None
    """Whether a key is a member of the room; ``None`` treats every linked peer as one."""
    _nursery: trio.Nursery | None = None
    _links: dict[PublicKey, list[SecureLink]] = attrs.Factory(dict)
    _contacts: dict[PublicKey, str] = attrs.Factory(dict)
    _self_announced: set[PublicKey] = attrs.Factory(set)
    _pending: dict[PublicKey, deque[bytes]] = attrs.Factory(dict)
    _dialing: set[PublicKey] = attrs.Factory(set)
    _backoff: dict[PublicKey, tuple[float, float]] = attrs.Factory(dict)
    _directory_news: list[Contact] = attrs.Factory(list)
    _news_event: trio.Event = attrs.Factory(trio.Event)
    _handshakes: int = 0
    _replay_guard: HandshakeReplayGuard = attrs.Factory(HandshakeReplayGuard)
    _all_links: set[SecureLink] = attrs.Factory(set)
    _links_gone: trio.Event = attrs.Factory(trio.Event)
    _strangers: dict[PublicKey, str | None] = attrs.Factory(dict)
    """Linked keys that are not members (yet), with the address each announced itself."""
    _stats: ControlStatistics = attrs.Factory(ControlStatistics)

    # --- lifecycle -----------------------------------------------------------------

    async def serve(
        self, address: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on ``address`` (``HOST:PORT``, port 0 for any) until cancelled."""
        host, port = parse_address(address, any_port=True)
        listeners = await trio.open_tcp_listeners(port, host=host)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(
                functools.partial(
                    trio.serve_listeners, self._serve_connection, listeners, handler_nursery=nursery
                )
            )
            self.own_address = format_address(host, listeners[0].socket.getsockname()[1])
            nursery.start_soon(self._pass_on_directory)
            task_status.started(self.own_address)

    async def close_links(self) -> None:
        """Send what is queued on every link, close them all, and wait until they are.

        Callers bound the wait with a cancel scope.
        """
        for link in list(self._all_links):
            link.finish()
        while self._all_links:
            await self._links_gone.wait()
            self._links_gone = trio.Event()

    # --- queries -------------------------------------------------------------------

    def statistics(self) -> ControlStatistics:
        """Counters of this plane; the admission budget has its own, ``admission.statistics()``."""
        self._stats.links_open = len(self._all_links)
        return attrs.evolve(self._stats)

    def linked(self) -> list[PublicKey]:
        return [key for key, links in self._links.items() if links]

    def contact_of(self, key: PublicKey) -> str | None:
        return self._contacts.get(key)

    # --- sending -------------------------------------------------------------------

    def send(self, key: PublicKey, data: bytes) -> None:
        """Send ``data`` to ``key``: over a link if one is open, else queued while dialing."""
        if key == self.identity.public_key:
            return
        for link in reversed(self._links.get(key, ())):
            if link.send(Channel.CORE, data):
                self._check_admitted(key)
                return
        pending = self._pending.setdefault(key, deque())
        if len(pending) >= PENDING_PER_KEY:
            pending.popleft()
            self._stats.messages_dropped += 1
        pending.append(data)
        self._stats.messages_queued += 1
        self._dial_soon(key)

    def learn(self, key: PublicKey, address: str, *, announced_by_self: bool = False) -> None:
        """Note ``key``'s control address (an invite, the directory, or the key itself)."""
        if key == self.identity.public_key:
            return
        if key in self._self_announced and not announced_by_self:
            return
        try:
            parse_address(address)
        except ValueError:
            self._stats.bad_contacts += 1
            return
        known = self._contacts.get(key)
        self._contacts[key] = address
        if announced_by_self:
            self._self_announced.add(key)
        if known != address:
            self._backoff.pop(key, None)
            if self.is_host():
                self._directory_news.append(Contact(key, address))
                self._news_event.set()
        if self._pending.get(key):
            self._dial_soon(key)

    async def connect(self, address: str, expected: PublicKey) -> SecureLink:
        """Dial ``address`` now and return the open link (used to join a room)."""
        assert self._nursery is not None, "serve() first"
        host, port = parse_address(address)
        self._stats.links_dialed += 1
        link: SecureLink = await self._nursery.start(self._dial_and_run, host, port, expected)
        return link

    # --- internals: dialing ----------------------------------------------------------

    def _dial_soon(self, key: PublicKey) -> None:
        address = self._contacts.get(key)
        if address is None or key in self._dialing or self._nursery is None:
            return
        not_before, _ = self._backoff.get(key, (0.0, 0.0))
        if trio.current_time() < not_before:
            return
        self._dialing.add(key)
        self._stats.links_dialed += 1
        self._nursery.start_soon(self._dial_key, key, address)

    async def _dial_key(self, key: PublicKey, address: str) -> None:
        host, port = parse_address(address)
        try:
            await self._dial_and_run(host, port, key)
        except (*_DIAL_FAILURES, MitalkError) as exc:
            self._dial_failed(key, address, exc)
        except BaseExceptionGroup as group:
            # Several failures at once from the websocket's nursery: still a failed dial,
            # unless something else (a cancellation, a bug) is among them.
            if not all(
                isinstance(leaf, (*_DIAL_FAILURES, MitalkError))
                for leaf in leaf_exceptions(group)
            ):
                raise
            self._dial_failed(key, address, group)
        finally:
            self._dialing.discard(key)

    def _dial_failed(self, key: PublicKey, address: str, exc: BaseException) -> None:
        self._stats.dial_failures += 1
        _, delay = self._backoff.get(key, (0.0, FIRST_BACKOFF / 2))
        delay = min(MAX_BACKOFF, delay * 2)
        self._backoff[key] = (trio.current_time() + delay, delay)
        dropped = self._pending.pop(key, None)
        if dropped:
            self._stats.messages_dropped += len(dropped)
        logger.info("could not reach %s at %s: %s", key.short, address, exc or type(exc).__name__)

    async def _dial_and_run(
        self,
        host: str,
        port: int,
        expected: PublicKey,
        task_status: trio.TaskStatus[SecureLink] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        # The TCP stream is ours to close: trio-websocket's own open_websocket leaks
        # the socket when it is cancelled during the websocket handshake.
        with trio.fail_after(CONNECT_TIMEOUT):
            stream = await trio.open_tcp_stream(host, port)
        try:
            with _one_error():
                await self._run_websocket(stream, host, expected, task_status)
        finally:
            await trio.aclose_forcefully(stream)

    async def _run_websocket(
        self,
        stream: trio.SocketStream,
        host: str,
        expected: PublicKey,
        task_status: trio.TaskStatus[SecureLink],
    ) -> None:
        async with trio.open_nursery() as websocket_nursery:
            with trio.fail_after(CONNECT_TIMEOUT):
                websocket = await trio_websocket.wrap_client_stream(
                    websocket_nursery,
                    stream,
                    host,
                    "/",
                    max_message_size=MAX_WEBSOCKET_MESSAGE,
                )
            try:
                link = await initiate(
                    websocket, self.identity, self.room_id, expected_remote=expected
                )
                self._backoff.pop(expected, None)
                self._register(link)
                task_status.started(link)
                await self._run_link(link)
            finally:
                websocket_nursery.cancel_scope.cancel()

    # --- internals: answering ------------------------------------------------------

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        """One incoming TCP connection, from its first byte to its close; never raises."""
        source = _peer_ip(stream)
        verdict = self.admission.admit(source, trio.current_time())
        try:
            if verdict is not Verdict.ADMITTED:
                self._count_refusal(verdict)
                await _refuse(stream, _REFUSALS[verdict])
                return
            try:
                async with trio.open_nursery() as connection_nursery:
                    request = None
                    with trio.move_on_after(CONNECT_TIMEOUT):
                        request = await trio_websocket.wrap_server_stream(
                            connection_nursery, stream, max_message_size=MAX_WEBSOCKET_MESSAGE
                        )
                    if request is not None:
                        await self._accept(request)
                    connection_nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                if not all(isinstance(e, _CONNECTION_ERRORS) for e in leaf_exceptions(group)):
                    raise
            except _CONNECTION_ERRORS:
                pass
        finally:
            if verdict is Verdict.ADMITTED:
                self.admission.release(source, trio.current_time())
            await trio.aclose_forcefully(stream)

    def _count_refusal(self, verdict: Verdict) -> None:
        if verdict is Verdict.RATE_LIMITED:
            self._stats.handshakes_rate_limited += 1
        elif verdict is Verdict.SOURCE_FULL:
            self._stats.links_refused_source += 1
        else:
            self._stats.handshakes_refused_busy += 1

    async def _accept(self, request: WebSocketRequest) -> None:
        if self._handshakes >= self.max_handshakes:
            self._stats.handshakes_refused_busy += 1
            await request.reject(503)
            return
        self._handshakes += 1
        try:
            websocket = await request.accept()
            try:
                link = await respond(websocket, self.identity, self.room_id, self._replay_guard)
            finally:
                self._handshakes -= 1
        except (HandshakeError, ConnectionClosed, trio.TooSlowError) as exc:
            self._stats.handshakes_failed += 1
            logger.info("refused an incoming link: %s", exc or type(exc).__name__)
            return
        self._stats.links_accepted += 1
        self._register(link)
        await self._run_link(link)

    # --- internals: links ----------------------------------------------------------

    def _register(self, link: SecureLink) -> None:
        key = link.remote
        links = self._links.setdefault(key, [])
        links.append(link)
        self._all_links.add(link)
        while len(links) > LINKS_PER_KEY:
            links.pop(0).finish()
        if self.own_address:
            link.send(Channel.CONTACTS, encode_contacts([Contact(self.identity.public_key,
                                                                 self.own_address)]))
        if not self._member(key):
            self._strangers.setdefault(key, None)
        elif key not in self._strangers:
            self._send_directory(link)
        for data in self._pending.pop(key, ()):
            link.send(Channel.CORE, data)
        self._check_admitted(key)  # a stranger admitted meanwhile

    def _member(self, key: PublicKey) -> bool:
        return self.is_member is None or self.is_member(key)

    def _send_directory(self, link: SecureLink) -> None:
        """On the host: every address it knows, to a member on a new link."""
        if not self.is_host() or not self._contacts:
            return
        directory = [Contact(k, a) for k, a in self._contacts.items() if k != link.remote]
        for start in range(0, len(directory), 1000):
            link.send(Channel.CONTACTS, encode_contacts(directory[start : start + 1000]))

    def _check_admitted(self, key: PublicKey) -> None:
        """A stranger that has become a member: keep its address, give it the directory.

        Called after each message to or from ``key``; the host sends a joiner its
        snapshot right after admitting it, so the directory follows the snapshot.
        """
        if key not in self._strangers or not self._member(key):
            return
        address = self._strangers.pop(key)
        if address is not None:
            self.learn(key, address, announced_by_self=True)
        links = self._links.get(key)
        if links:
            self._send_directory(links[-1])

    async def _run_link(self, link: SecureLink) -> None:
        try:
            await link.run(self._on_link_message)
        finally:
            links = self._links.get(link.remote)
            if links is not None and link in links:
                links.remove(link)
                if not links:
                    del self._links[link.remote]
                    self._strangers.pop(link.remote, None)
            if link.failed:
                self._stats.links_failed += 1
            self._all_links.discard(link)
            self._links_gone.set()

    def _on_link_message(self, link: SecureLink, channel: Channel, data: bytes) -> None:
        if channel is Channel.CORE:
            self.on_core(link.remote, data, link.handshake_hash)
            self._check_admitted(link.remote)
            return
        try:
            contacts = decode_contacts(data)
        except WireError:
            self._stats.bad_contacts += 1
            return
        if not self._member(link.remote):
            own = [c.address for c in contacts if c.key == link.remote]
            self._stats.contacts_ignored += len(contacts) - len(own)
            if own and link.remote in self._strangers:
                self._strangers[link.remote] = own[-1]
            return
        for contact in contacts:
            self.learn(contact.key, contact.address, announced_by_self=contact.key == link.remote)

    async def _pass_on_directory(self) -> None:
        """On the host: send newly learned addresses to every linked member, in batches."""
        while True:
            await self._news_event.wait()
            await trio.sleep(DIRECTORY_FLUSH)
            self._news_event = trio.Event()
            news, self._directory_news = self._directory_news, []
            if not self.is_host():
                continue
            for start in range(0, len(news), 1000):
                message = encode_contacts(news[start : start + 1000])
                for key, links in self._links.items():
                    if links and self._member(key):
                        links[-1].send(Channel.CONTACTS, message)


def _peer_ip(stream: trio.SocketStream) -> str:
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:  # already reset: one shared source for all such, refused soon enough
        return "unknown"


async def _refuse(stream: trio.SocketStream, status: bytes) -> None:
    """Answer the websocket upgrade with ``status`` without reading it, so the dialer
    gets a clear rejection instead of a timeout; then the caller closes."""
    response = b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    with trio.move_on_after(REFUSAL_TIMEOUT), contextlib.suppress(*_CONNECTION_ERRORS):
        await stream.send_all(response)


assert DEFAULT_MAX_MESSAGE > MAX_WEBSOCKET_MESSAGE
