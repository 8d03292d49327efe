"""A real peer: the core :class:`~..core.peer.Peer` driven by trio, sockets and audio.

This is the trio twin of the simulator's driver.  The same core object gets
its inputs from real sources (a UDP socket for media, websocket links for
control, one timer from ``trio.current_time()``, a microphone or file for
speech) and its outputs go to real sinks.  Everything lives in one nursery
owned by :func:`open_peer`::

    async with open_peer(config) as peer:
        peer.act(RaiseHand())
        await peer.left.wait()

Leaving, whether by ``/leave``, Ctrl-C or cancellation, sends the room a
signed leave and flushes the links (for at most a second) before the sockets
close, so the room reacts at once instead of waiting for a timeout.
"""

from __future__ import annotations

import enum
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio

from ..audio.io import FrameInput
from ..audio.playout import Playback, run_playback
from ..codec import CodecConfig, OpusEncoder, is_dtx
from ..core.errors import MitalkError, RemoteProtocolError, leaf_exceptions
from ..core.events import JoinedRoom, JoinRefusedEvent, LeftRoom
from ..core.handshake import WrongPeerError
from ..core.identity import Identity, PublicKey
from ..core.ids import ROOM_ID_SIZE, RoomId
from ..core.invite import SignedInvite, create_invite
from ..core.jitter import PlayFrame
from ..core.media import MediaConfig
from ..core.media_events import AudioOut, FrameReceived, SendDatagram
from ..core.ops import Op
from ..core.peer import Peer, PeerEvent, PeerStatistics
from ..core.replica import Broadcast, RoomConfig, SendTo
from ..core.roles import Role
from ..core.room_state import RoomState
from ..core.sender_keys import KeySource, refuse_simulated_keys, system_key_source
from .capture_clock import CaptureClock
from .control_plane import ControlPlane, ControlStatistics
from .link_records import Channel
from .media_meter import MediaMeter
from .timers import Timer, TimerService, open_timer_service
from .udp import UdpEndpoint, UdpStatistics, open_udp_endpoint

logger = logging.getLogger(__name__)

JOIN_TIMEOUT: Final = 10.0
LEAVE_FLUSH: Final = 1.0
MAX_FRAME_LOG: Final = 200_000
"""Per-frame timing records kept for reports (about an hour of one speaker)."""


class JoinFailure(enum.Enum):
    """Why a join failed, for callers that try another address or give up."""

    UNREACHABLE = "unreachable"
    """No address answered as the room's host (refused, timed out, or a wrong key)."""
    REFUSED = "refused"
    """The host answered and refused the join (an expired or used-up invite, a kick)."""
    NO_ANSWER = "no-answer"
    """The host's link came up but no admission arrived in time."""
    NO_ADDRESS = "no-address"
    """There was no address to try."""


class JoinError(MitalkError):
    """The room could not be joined; the message says why in one line."""

    def __init__(
        self,
        message: str,
        failure: JoinFailure = JoinFailure.UNREACHABLE,
        problems: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.problems = problems
        """For ``UNREACHABLE``: (address, what went wrong there), in the order tried."""


@attrs.frozen
class HostRoom:
    """Start a new room with this peer as its host."""

    name: str
    topic: str = ""
    room_id: RoomId | None = None
    """Fixed only in tests; a new room gets a random id."""


@attrs.frozen
class JoinRoom:
    """Join the room an invite names, through the addresses it carries."""

    invite: SignedInvite
    via: tuple[str, ...] = ()
    """Control addresses to try before the invite's own (a discovered room)."""


@attrs.frozen
class PeerConfig:
    identity: Identity
    room: HostRoom | JoinRoom
    control_address: str = "127.0.0.1:0"
    """Where the websocket server for control links listens (port 0: any)."""
    media_address: str = "127.0.0.1:0"
    """Where the UDP socket for media frames is bound (port 0: any)."""
    audio_input: FrameInput | None = None
    playback: Playback | None = None
    codec: CodecConfig = attrs.Factory(CodecConfig)
    media_config: MediaConfig = attrs.Factory(MediaConfig)
    room_config: RoomConfig | None = None
    fanout: int = 6
    key_source: KeySource = system_key_source
    join_timeout: float = JOIN_TIMEOUT
    record_frames: bool = False
    """Keep a timing record per frame sent and received (for reports and benchmarks)."""
    media_meter: MediaMeter | None = None
    """Benchmark instrumentation of the media receive path (see :mod:`.media_meter`)."""
    timers: TimerService | None = None
    """A timer service shared with other peers on this trio loop (None: the peer runs its own)."""


@attrs.frozen
class RuntimeStatistics:
    peer: PeerStatistics
    control: ControlStatistics
    udp: UdpStatistics
    frames_captured: int
    frames_encoded: int
    frames_dtx: int
    inputs_dropped: int
    """Network inputs the core refused with an error (counted, never raised)."""


@attrs.define
class FrameLog:
    """Frame timings on the host-wide monotonic clock (``time.monotonic``).

    ``sent`` maps a frame's sequence number to when this peer handed it to the
    media plane; ``received`` holds (speaker, seq, arrival) per frame accepted,
    and ``played`` (speaker, seq, playout) per frame the jitter buffer released.
    Processes on one host share the clock, so the logs can be joined.
    """

    sent: dict[int, float] = attrs.Factory(dict)
    received: list[tuple[PublicKey, int, float]] = attrs.Factory(list)
    played: list[tuple[PublicKey, int, float]] = attrs.Factory(list)


EventCallback = Callable[[PeerEvent], None]


@attrs.define(eq=False, repr=False)
class RunningPeer:
    """A peer in a room.  Made by :func:`open_peer`; all methods run in its trio thread."""

    config: PeerConfig
    core: Peer
    udp: UdpEndpoint
    plane: ControlPlane
    nursery: trio.Nursery
    joined: trio.Event = attrs.Factory(trio.Event)
    left: trio.Event = attrs.Factory(trio.Event)
    """Set once this peer is no longer a member: it left, was kicked, or the room ended."""
    left_reason: str | None = None
    frame_log: FrameLog = attrs.Factory(FrameLog)
    _subscribers: list[EventCallback] = attrs.Factory(list)
    _changed: trio.Event = attrs.Factory(trio.Event)
    _timer: Timer | None = None
    _refusal: str | None = None
    _shared_offset: float = 0.0
    _frames_captured: int = 0
    _frames_encoded: int = 0
    _frames_dtx: int = 0
    _inputs_dropped: int = 0

    # --- queries -------------------------------------------------------------------

    @property
    def me(self) -> PublicKey:
        return self.core.me

    @property
    def identity(self) -> Identity:
        return self.core.identity

    @property
    def state(self) -> RoomState | None:
        return self.core.state if self.core.replica.joined else None

    @property
    def control_address(self) -> str:
        return self.plane.own_address

    @property
    def media_address(self) -> str:
        return self.udp.local_address

    @property
    def role(self) -> Role | None:
        state = self.state
        return state.role_of(self.me) if state is not None else None

    def name_of(self, key: PublicKey) -> str:
        state = self.state
        member = state.members.get(key) if state is not None else None
        return member.name if member is not None else key.short

    def statistics(self) -> RuntimeStatistics:
        return RuntimeStatistics(
            self.core.statistics(),
            self.plane.statistics(),
            self.udp.statistics(),
            self._frames_captured,
            self._frames_encoded,
            self._frames_dtx,
            self._inputs_dropped,
        )

    def shared_time(self, now: float | None = None) -> float:
        """``now`` (trio time) on the host-wide monotonic clock."""
        return (trio.current_time() if now is None else now) + self._shared_offset

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds; it is re-checked after every input."""
        while not condition():
            await self._changed.wait()

    # --- actions -------------------------------------------------------------------

    def subscribe(self, callback: EventCallback) -> None:
        """Call ``callback`` with every room and media event (not per-frame audio)."""
        self._subscribers.append(callback)

    def act(self, op: Op) -> None:
        """A user action; raises :class:`~..core.rejection.Rejected` when not allowed."""
        try:
            self.core.act(op, trio.current_time())
        finally:
            self._after_input()

    def invite(
        self,
        *,
        role: Role = Role.LISTENER,
        lifetime: int = 3600,
        max_uses: int = 1,
        audience: PublicKey | None = None,
    ) -> SignedInvite:
        """An invite to this room, signed by this peer, carrying its control address."""
        state = self.state
        my_role = self.role
        if state is None or my_role is None or not my_role.moderates:
            raise MitalkError("only the host or a moderator can make invites")
        return create_invite(
            self.identity,
            room_id=state.room_id,
            room_name=state.name,
            role=role,
            now=time.time(),
            lifetime=lifetime,
            audience=audience,
            max_uses=max_uses,
            addresses=(self.control_address,),
            issuer_role=my_role,
        )

    def leave(self) -> None:
        """Leave the room: :func:`open_peer` sends the signed leave as it exits."""
        if self.left_reason is None:
            self.left_reason = "left"
        self.left.set()

    # --- the driver ----------------------------------------------------------------

    def _after_input(self) -> None:
        """Send what the core queued, deliver its events, and re-arm the timer."""
        core = self.core
        for item in core.outbound():
            if type(item) is SendDatagram:
                self.udp.send(item.data, item.address)
            elif type(item) is SendTo:
                self.plane.send(item.peer, item.data)
            elif type(item) is Broadcast:
                for key in item.recipients:
                    self.plane.send(key, item.data)
        events = core.events()
        if events:
            self._deliver(events)
        deadline = core.next_deadline()
        timer = self._timer
        if deadline is not None and timer is not None and deadline < timer.deadline:
            timer.arm(deadline)
        self._changed.set()
        self._changed = trio.Event()

    def _deliver(self, events: list[PeerEvent]) -> None:
        playback = self.config.playback
        for event in events:
            kind = type(event)
            if kind is AudioOut:
                if playback is not None:
                    playback.accept(event)  # type: ignore[arg-type]
                if self.config.record_frames:
                    self._note_played(event)  # type: ignore[arg-type]
                continue
            if kind is FrameReceived:
                if self.config.record_frames and len(self.frame_log.received) < MAX_FRAME_LOG:
                    self.frame_log.received.append(
                        (event.speaker, event.seq, time.monotonic())  # type: ignore[union-attr]
                    )
                continue
            if kind is JoinedRoom:
                self.joined.set()
            elif kind is JoinRefusedEvent:
                self._refusal = event.message  # type: ignore[union-attr]
                self.joined.set()
            elif kind is LeftRoom:
                if self.left_reason is None:
                    self.left_reason = event.reason  # type: ignore[union-attr]
                self.left.set()
            for callback in self._subscribers:
                callback(event)

    def _note_played(self, event: AudioOut) -> None:
        played = self.frame_log.played
        if type(event.playout) is PlayFrame and len(played) < MAX_FRAME_LOG:
            played.append((event.speaker, event.playout.seq, time.monotonic()))

    def _on_core_message(self, sender: PublicKey, data: bytes, handshake_hash: bytes) -> None:
        try:
            self.core.receive_link(
                data,
                sender,
                trio.current_time(),
                handshake_hash=handshake_hash,
                unix_time=time.time(),
            )
        except RemoteProtocolError as exc:
            self._inputs_dropped += 1
            logger.debug("dropped a message from %s: %s", sender.short, exc)
        self._after_input()

    def _start_timer(self, timers: TimerService) -> None:
        self._timer = timers.timer(self._on_timer)
        deadline = self.core.next_deadline()
        if deadline is not None:
            self._timer.arm(deadline)

    def _on_timer(self) -> None:
        """The core's deadline passed (the timer is disarmed when this runs)."""
        self.core.handle_timer(trio.current_time())
        self._after_input()

    async def _receive_media(self) -> None:
        core, udp = self.core, self.udp
        meter = self.config.media_meter
        while True:
            batch = await udp.receive_batch()
            if meter is not None:
                meter.handling()
            now = trio.current_time()
            for data, source in batch:
                try:
                    core.receive_datagram(data, source, now)
                except RemoteProtocolError:
                    self._inputs_dropped += 1
            self._after_input()
            if meter is not None:
                meter.handled()

    async def _capture(self, source: FrameInput) -> None:
        encoder = OpusEncoder(self.config.codec)
        clock = CaptureClock(self.config.codec.frame_ms / 1000)
        media = self.core.media
        record = self.config.record_frames
        while True:
            pcm = await source.read_frame()
            if pcm is None:
                return
            captured_at = clock.stamp(trio.current_time())
            self._frames_captured += 1
            if not media.can_send:
                continue
            packet = encoder.encode(pcm)
            self._frames_encoded += 1
            if is_dtx(packet):
                self._frames_dtx += 1
                continue
            now = trio.current_time()
            seq = media.next_seq
            sent = self.core.send_frame(packet, captured_at, now)
            if sent and record and len(self.frame_log.sent) < MAX_FRAME_LOG:
                self.frame_log.sent[seq] = time.monotonic()
            self._after_input()

    async def _join(self, join: JoinRoom) -> None:
        invite = join.invite
        issuer = invite.invite.issuer
        addresses = list(dict.fromkeys((*join.via, *invite.invite.addresses)))
        if not addresses:
            raise JoinError(
                "the invite carries no address to reach the room at", JoinFailure.NO_ADDRESS
            )
        problems: list[tuple[str, str]] = []
        for address in addresses:
            try:
                link = await self.plane.connect(address, issuer)
            except (OSError, MitalkError, trio.TooSlowError) as exc:
                problems.append((address, _describe_dial_error(exc)))
                continue
            except Exception as exc:  # trio-websocket's connection errors
                problems.append((address, _describe_dial_error(exc)))
                continue
            self.plane.learn(issuer, address)
            link.send(Channel.CORE, self.core.join_message(link.handshake_hash))
            break
        else:
            described = "; ".join(f"{address}: {problem}" for address, problem in problems)
            raise JoinError(
                "could not reach the room: " + described, JoinFailure.UNREACHABLE, tuple(problems)
            )
        with trio.move_on_after(self.config.join_timeout):
            await self.joined.wait()
        if self._refusal is not None:
            raise JoinError(
                f"the room refused to let you in: {self._refusal}", JoinFailure.REFUSED
            )
        if not self.joined.is_set():
            raise JoinError(
                f"no answer from the room within {self.config.join_timeout:g} s "
                f"(tried {', '.join(addresses)})",
                JoinFailure.NO_ANSWER,
            )


def _describe_dial_error(exc: BaseException) -> str:
    leaves = leaf_exceptions(exc)
    if len(leaves) == 1:
        exc = leaves[0]
    if isinstance(exc, WrongPeerError):
        return (
            f"not the room's host: it proved key {exc.actual.fingerprint}, but the invite is"
            f" from {exc.expected.fingerprint}"
        )
    text = str(exc)
    if isinstance(exc, ConnectionRefusedError) or "refused" in text.lower():
        return "connection refused (nothing is listening there)"
    if isinstance(exc, trio.TooSlowError):
        return "the handshake timed out"
    return text or type(exc).__name__


def _new_core(config: PeerConfig, media_address: str, key_source: KeySource) -> Peer:
    media_config = config.media_config
    if config.record_frames and not media_config.report_frames:
        media_config = attrs.evolve(media_config, report_frames=True)
    room = config.room
    if isinstance(room, HostRoom):
        return Peer.create_room(
            config.identity,
            room.room_id or RoomId(secrets.token_bytes(ROOM_ID_SIZE)),
            name=room.name,
            topic=room.topic,
            address=media_address,
            now=trio.current_time(),
            room_config=config.room_config,
            media_config=media_config,
            key_source=key_source,
            fanout=config.fanout,
        )
    return Peer.joining(
        config.identity,
        room.invite,
        address=media_address,
        room_config=config.room_config,
        media_config=media_config,
        key_source=key_source,
        fanout=config.fanout,
    )


@asynccontextmanager
async def open_peer(config: PeerConfig) -> AsyncIterator[RunningPeer]:
    """Start a peer: host a room or join one, and run it until the block exits.

    Raises :class:`JoinError` when joining fails.  On exit, by any route, the
    peer sends a signed leave, flushes its links and closes every socket.
    """
    try:
        async with _run_peer(config) as peer:
            yield peer
    except BaseExceptionGroup as group:
        raise _sole_exception(group) from None


def _sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception a nursery wrapped, or the group itself when there are several."""
    leaves = list(leaf_exceptions(group))
    return leaves[0] if len(leaves) == 1 else group


@asynccontextmanager
async def _run_peer(config: PeerConfig) -> AsyncIterator[RunningPeer]:
    if config.timers is not None:
        async with _run_peer_with(config, config.timers) as peer:
            yield peer
    else:
        async with open_timer_service() as timers, _run_peer_with(config, timers) as peer:
            yield peer


@asynccontextmanager
async def _run_peer_with(config: PeerConfig, timers: TimerService) -> AsyncIterator[RunningPeer]:
    key_source = refuse_simulated_keys(config.key_source)
    async with open_udp_endpoint(config.media_address) as udp, trio.open_nursery() as nursery:
        core = _new_core(config, udp.local_address, key_source)
        holder: list[RunningPeer] = []
        plane = ControlPlane(
            config.identity,
            core.replica.room_id,
            on_core=lambda *args: holder[0]._on_core_message(*args),
            is_host=lambda: core.replica.is_host,
            is_member=lambda key: _is_member(core, key),
        )
        peer = RunningPeer(config, core, udp, plane, nursery)
        peer._shared_offset = time.monotonic() - trio.current_time()
        udp.attach_meter(config.media_meter)
        holder.append(peer)
        await nursery.start(plane.serve, config.control_address)
        peer._start_timer(timers)
        nursery.start_soon(peer._receive_media)
        try:
            if isinstance(config.room, JoinRoom):
                await peer._join(config.room)
            else:
                peer.joined.set()
            peer._after_input()
            if config.audio_input is not None:
                nursery.start_soon(peer._capture, config.audio_input)
            if config.playback is not None:
                nursery.start_soon(
                    run_playback, config.playback, config.media_config.frame_seconds
                )
            yield peer
        finally:
            with trio.CancelScope(shield=True):
                await _depart(peer)
            nursery.cancel_scope.cancel()
            if peer._timer is not None:
                peer._timer.disarm()
            if config.playback is not None:
                config.playback.close()


def _is_member(core: Peer, key: PublicKey) -> bool:
    """Whether ``key`` is in the room as this peer knows it (the directory is for members)."""
    state = core.state
    return state is not None and key in state.members


async def _depart(peer: RunningPeer) -> None:
    """Send the signed leave (if still a member) and flush the links."""
    core = peer.core
    if core.replica.joined:
        try:
            core.depart(trio.current_time())
        except MitalkError as exc:
            logger.info("could not send a leave: %s", exc)
        peer._after_input()
    with trio.move_on_after(LEAVE_FLUSH):
        await peer.plane.close_links()


async def serve_peer(
    config: PeerConfig, *, task_status: trio.TaskStatus[RunningPeer] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a peer until it leaves; for ``nursery.start(serve_peer, config)``."""
    async with open_peer(config) as peer:
        task_status.started(peer)
        await peer.left.wait()
