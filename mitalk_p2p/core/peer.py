"""A whole peer: the room replica, the media plane and, on the host, the tree coordinator.

This is the object both drivers drive.  Link messages are routed by kind: room
control to the replica, media messages to the media session, and tree reports
to the coordinator when this peer hosts.  After every input the peer brings the
media plane in line with the room (membership, roles, who hosts).
"""

from __future__ import annotations

import attrs

from .events import Event
from .identity import Identity, PublicKey
from .ids import RoomId
from .invite import SignedInvite
from .media import MediaConfig, MediaSession, MediaStatistics
from .media_events import MediaEvent, SendDatagram
from .media_messages import (
    ChildFound,
    ChildLost,
    MediaMessage,
    ParentSwitched,
    RelayOffer,
    TreePosition,
    encode_media_message,
    is_media_message,
)
from .ops import Op
from .relay_scores import RelayScoreStatistics
from .replica import Outbound, RoomConfig, RoomReplica, RoomStatistics, SendTo
from .room_state import RoomState
from .sender_keys import KeySource, system_key_source
from .tree import TreeLimits
from .tree_coordinator import TreeCoordinator

PeerOutbound = Outbound | SendDatagram
PeerEvent = Event | MediaEvent


@attrs.frozen
class PeerStatistics:
    room: RoomStatistics
    media: MediaStatistics
    tree_replans: int
    relay_scores: RelayScoreStatistics | None = None
    """On the host: relay scores, demotions and refused accusations."""


@attrs.define(eq=False, repr=False)
class Peer:
    replica: RoomReplica
    media: MediaSession
    fanout: int = 6
    coordinator: TreeCoordinator | None = None
    _events: list[PeerEvent] = attrs.Factory(list)
    _outbound: list[PeerOutbound] = attrs.Factory(list)
    _seen: tuple[int, int, object, PublicKey | None, bool] | None = None
    _replans_before: int = 0
    # The replica's next deadline, valid until the replica handles another input;
    # media datagrams (nearly all inputs) never reach the replica.
    _replica_deadline: tuple[float | None] | None = None

    @classmethod
    def create_room(
        cls,
        identity: Identity,
        room_id: RoomId,
        *,
        name: str,
        address: str,
        now: float,
        topic: str = "",
        room_config: RoomConfig | None = None,
        media_config: MediaConfig | None = None,
        key_source: KeySource = system_key_source,
        fanout: int = 6,
    ) -> Peer:
        replica = RoomReplica.create_room(
            identity, room_id, name=name, topic=topic, now=now, config=room_config
        )
        media = MediaSession(
            identity, room_id, address, media_config or MediaConfig(), key_source=key_source
        )
        peer = cls(replica, media, fanout=fanout)
        peer._sync(now)
        return peer

    @classmethod
    def joining(
        cls,
        identity: Identity,
        invite: SignedInvite,
        *,
        address: str,
        room_config: RoomConfig | None = None,
        media_config: MediaConfig | None = None,
        key_source: KeySource = system_key_source,
        fanout: int = 6,
    ) -> Peer:
        replica = RoomReplica.joining(identity, invite, room_config)
        media = MediaSession(
            identity,
            invite.invite.room_id,
            address,
            media_config or MediaConfig(),
            key_source=key_source,
        )
        return cls(replica, media, fanout=fanout)

    # --- queries -------------------------------------------------------------------

    @property
    def me(self) -> PublicKey:
        return self.replica.me

    @property
    def identity(self) -> Identity:
        return self.replica.identity

    @property
    def state(self) -> RoomState | None:
        return self.replica.state

    def statistics(self) -> PeerStatistics:
        coordinator = self.coordinator
        replans = coordinator.replans if coordinator else 0
        return PeerStatistics(
            self.replica.statistics(),
            self.media.statistics(),
            self._replans_before + replans,
            coordinator.score_statistics() if coordinator else None,
        )

    def outbound(self) -> list[PeerOutbound]:
        out, self._outbound = self._outbound, []
        return out

    def events(self) -> list[PeerEvent]:
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float | None:
        # Asked after every input, so written without temporary lists.
        if self._replica_deadline is None:
            self._replica_deadline = (self.replica.next_deadline(),)
        best = self._replica_deadline[0]
        media = self.media.next_deadline()
        if media is not None and (best is None or media < best):
            best = media
        if self.coordinator is not None:
            planned = self.coordinator.next_deadline()
            if planned is not None and (best is None or planned < best):
                best = planned
        return best

    def __repr__(self) -> str:
        return f"Peer({self.identity.display_name!r}, host={self.replica.is_host})"

    # --- inputs --------------------------------------------------------------------

    def join_message(self, handshake_hash: bytes) -> bytes:
        self._replica_deadline = None
        return self.replica.join_message(handshake_hash)

    def act(self, op: Op, now: float) -> None:
        """A local user action; raises :class:`~.rejection.Rejected` when not allowed."""
        self._replica_deadline = None
        self.replica.act(op, now)
        self._sync(now)

    def depart(self, now: float) -> None:
        self._replica_deadline = None
        self.replica.depart(now)
        self._sync(now)

    def receive_link(
        self,
        data: bytes,
        sender: PublicKey,
        now: float,
        *,
        handshake_hash: bytes = b"",
        unix_time: float | None = None,
    ) -> None:
        """One message from authenticated peer ``sender`` on a secure link."""
        if is_media_message(data):
            report = self.media.receive_link(data, sender, now)
            if report is not None:
                self._to_coordinator(sender, report, now)
        else:
            self._replica_deadline = None
            self.replica.receive(
                data, sender, now, handshake_hash=handshake_hash, unix_time=unix_time
            )
        self._sync(now)

    def receive_datagram(self, data: bytes, address: str, now: float) -> None:
        self.media.receive_datagram(data, address, now)
        self._collect_media(now)

    def send_frame(self, payload: bytes, capture_time: float, now: float) -> bool:
        sent = self.media.send_frame(payload, capture_time, now)
        self._collect_media(now)
        return sent

    def handle_timer(self, now: float) -> None:
        self._replica_deadline = None
        self.replica.handle_timer(now)
        self.media.handle_timer(now)
        self._sync(now)
        if self.coordinator is not None:
            for key, position in self.coordinator.handle_timer(now):
                self._deliver_position(key, position, now)
            self._collect_media(now)

    # --- internals -----------------------------------------------------------------

    def _to_coordinator(self, sender: PublicKey, report: MediaMessage, now: float) -> None:
        coordinator = self.coordinator
        if coordinator is None:
            self.media.count_drop("report-not-host")
            return
        if isinstance(report, RelayOffer):
            coordinator.on_offer(sender, report, now)
        elif isinstance(report, (ParentSwitched, ChildLost, ChildFound)):
            coordinator.on_report(sender, report, now)

    def _deliver_position(self, key: PublicKey, position: TreePosition, now: float) -> None:
        if key == self.me:
            self.media.apply_position(position, now)
        else:
            self._outbound.append(SendTo(key, encode_media_message(position)))

    def _sync(self, now: float) -> None:
        """Bring the media plane and coordinator in line with the room."""
        replica = self.replica
        self._replica_deadline = None
        self._events.extend(replica.events())
        self._outbound.extend(replica.outbound())
        state = replica.state
        seen = (
            id(state),
            state.seq if state else -1,
            state.term if state else None,
            replica.leader,
            replica.joined,
        )
        if seen != self._seen:
            host_moved = self._seen is None or self._seen[3] != replica.leader
            self._seen = seen
            self.media.roster_changed(state if replica.joined else None, replica.leader, now)
            if host_moved:
                self.media.host_changed()
            self._update_coordinator(now)
        self._collect_media(now)

    def _update_coordinator(self, now: float) -> None:
        state = self.replica.state
        if not self.replica.is_host or state is None:
            if self.coordinator is not None:
                self._replans_before += self.coordinator.replans
            self.coordinator = None
            return
        if self.coordinator is None:
            self.coordinator = TreeCoordinator(self.me, TreeLimits(fanout=self.fanout))
        self.coordinator.members_changed(frozenset(state.members), now)
        self.coordinator.set_own_offer(self.media.current_offer(), now)

    def _collect_media(self, now: float) -> None:
        media = self.media
        if media.has_output():
            self._outbound.extend(media.outbound())
            self._events.extend(media.events())
        reports = media.take_host_reports()
        if reports and self.coordinator is not None:
            for report in reports:
                self.coordinator.on_report(self.me, report, now)
