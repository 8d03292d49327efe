"""One peer's media plane: sealing, verifying, relaying and playing out frames.

A sans-I/O state machine like :class:`~.replica.RoomReplica`.  Its inputs are
datagrams from media addresses (``receive_datagram``), media messages on secure
links (``receive_link``), the room roster whenever it changes
(``roster_changed``), the local speaker's Opus packets (``send_frame``) and
timer ticks, each with ``now``.  Its outputs are datagrams, link messages and
events (playout slots, parent changes, key changes).

The life of a received frame, in order of cost:

1. parse the clear header; wrong room → drop;
2. the speaker must hold the floor in the roster this peer knows → else drop
   (so a listener's frames die at the first relay);
3. generation and counter sanity, and the replay window → duplicates and
   absurd jumps are dropped before any crypto;
4. the speaker's Ed25519 signature → a bad one is dropped and held against the
   neighbour it came from;
5. mark it seen, note its counter against the parent's delivery record (a
   relay that withholds most frames is left), and forward it on every other
   tree edge: relays forward ciphertext they never open;
6. send it, as a witness sample, to the members that have this peer as their
   backup parent, if it is the first of its speaker's frames to arrive in a run
   of counters they sample (:mod:`.witness`);
7. decrypt with the speaker's sender key (or hold it until the key arrives) and
   hand it to that speaker's jitter buffer.

A witness sample from this peer's own backup parent goes through steps 1–4 only
when it would show this peer's parent lagging, and then only feeds the parent's
delivery record: it is never played or forwarded (a relay that passes on
nothing at all is left this way).

Every drop is counted by reason in :meth:`MediaSession.statistics`; nothing a
remote peer sends raises out of this object.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Sequence

import attrs

from .errors import LocalProtocolError, RemoteProtocolError
from .identity import Identity, PublicKey
from .ids import RoomId
from .incoming import SAMPLE_RATE, SpeakerStream
from .jitter import JitterConfig, JitterStatistics
from .media_events import (
    AudioOut,
    FrameReceived,
    MediaEvent,
    ParentChanged,
    SendDatagram,
    SenderKeyChanged,
)
from .media_frame import (
    FRAME_TYPE,
    FrameHeader,
    KeyGeneration,
    frame_signature_valid,
    open_frame,
    parse_header,
    room_tag,
    seal_frame,
)
from .media_messages import (
    PROBE_TYPE,
    ChildFound,
    ChildLost,
    KeyAck,
    KeyGrant,
    KeyRequest,
    MediaMessage,
    ParentSwitched,
    Probe,
    RelayOffer,
    SwitchReason,
    TreePosition,
    decode_media_message,
    encode_media_message,
)
from .replica import SendTo
from .room_state import Member, RoomState
from .sender_keys import Keyring, KeySource, SenderKey, SpeakerKeys, system_key_source
from .tree_links import (
    ChildDropped,
    ChildSeen,
    LinkStatistics,
    Switched,
    TreeLinks,
    TreeOutcome,
)
from .witness import LAGGING_SECONDS, WITNESS_TYPE, WitnessTable, peek, wrap

logger = logging.getLogger(__name__)

MAX_SEQ = 0xFFFF_FFFF
MAX_SLOTS_PER_TICK = 50
"""Playout slots one timer tick may catch up on per speaker (a driver that stalled a second)."""
_SWITCH_REASONS = {
    SwitchReason.SILENT: "silent",
    SwitchReason.CORRUPT: "corrupt",
    SwitchReason.DETACHED: "detached",
    SwitchReason.LOSSY: "lossy",
}


def _positive(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise LocalProtocolError(f"{attribute.name} must be at least 1, got {value}")


def _divides_stride(instance: MediaConfig, attribute: attrs.Attribute[int], value: int) -> None:
    _positive(instance, attribute, value)
    if instance.witness_stride % value:
        raise LocalProtocolError(
            f"witness_dense_stride {value} must divide witness_stride {instance.witness_stride}"
        )


@attrs.frozen
class MediaConfig:
    frame_seconds: float = 0.020
    """Duration of one Opus frame: 0.010, 0.020 or 0.040."""
    relay_capacity: int = 6
    """Children this peer offers to relay to; 0 means leaf only."""
    probe_interval: float = 0.2
    """Seconds between a child's probes to its parent."""
    probe_misses: int = 3
    """Unanswered probe intervals after which a parent (or child) counts as gone."""
    rotation_timeout: float = 1.0
    """Longest a speaker waits for acks before switching to a rotated key anyway."""
    corrupt_threshold: int = 8
    """Frames failing verification from one parent before this peer leaves it."""
    lossy_threshold: float = 0.8
    """Fraction of the speakers' frames a parent may fail to pass on before this peer
    leaves it for its backup (measured from the frames' counters)."""
    lossy_window: float = 1.0
    """Seconds of frames over which that fraction is measured."""
    witness_stride: int = attrs.field(default=32, validator=_positive)
    """A backup parent sends the members it backs up one frame of each speaker in every
    run of this many counters, so they can tell a parent that withholds frames from a
    quiet speaker (:mod:`.witness`).  32 costs about 3 % of the audio on that link."""
    witness_dense_stride: int = attrs.field(default=4, validator=_divides_stride)
    """The same for a member whose parent lags behind those samples, for a moment (it
    must divide ``witness_stride``)."""
    withhold_seconds: float = attrs.field(
        default=attrs.Factory(lambda c: c.probe_interval * (c.probe_misses + 2), takes_self=True)
    )
    """How far (in seconds of a speaker's frames) the witness samples may run ahead of
    the parent before this peer leaves it.  It must outlast a repair above an honest
    parent: ``probe_misses`` intervals until the orphan notices, one for the timer,
    and one for its new parent's first frames."""
    key_request_interval: float = 1.0
    """Minimum seconds between two key requests to one speaker."""
    jitter: JitterConfig | None = attrs.Factory(JitterConfig)
    """Jitter buffer settings; ``None`` for a relay-only peer that plays nothing."""
    report_frames: bool = False
    """Emit a :class:`FrameReceived` event per accepted frame (simulator metrics)."""


@attrs.frozen
class MediaStatistics:
    frames_sent: int
    frames_forwarded: int
    frames_accepted: int
    frames_decrypted: int
    key_grants_sent: int
    key_rotations: int
    parent_switches: int
    parent: PublicKey | None
    dropped: dict[str, int]
    links: tuple[LinkStatistics, ...]
    speakers: dict[PublicKey, JitterStatistics]
    witness_frames_sent: int = 0
    """Frames sent as witness samples to members this peer backs up."""
    witness_frames_received: int = 0
    """Witness samples from this peer's backup parent that were taken in (not dropped)."""

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


MediaOutbound = SendDatagram | SendTo


@attrs.define(eq=False, repr=False)
class MediaSession:
    identity: Identity
    room_id: RoomId
    address: str
    """This peer's media address as the driver names it (``host:port`` or a simulator name)."""
    config: MediaConfig = attrs.Factory(MediaConfig)
    key_source: KeySource = system_key_source

    host: PublicKey | None = None
    _tag: bytes = b""
    _members: dict[PublicKey, Member] = attrs.Factory(dict)
    _member_keys: set[PublicKey] = attrs.Factory(set)
    _state: RoomState | None = None
    _by_index: dict[int, PublicKey] = attrs.Factory(dict)
    _index_of: dict[PublicKey, int] = attrs.Factory(dict)
    _roster_version: int = 0
    _speaker_keys: SpeakerKeys | None = None
    _floor: bool = False
    _next_seq: int = 0
    _streams: dict[PublicKey, SpeakerStream] = attrs.Factory(dict)
    _links: TreeLinks = attrs.field(init=False)
    _tree_host: PublicKey | None = None
    _tree_version: int = -1
    _outbound: list[MediaOutbound] = attrs.Factory(list)
    _events: list[MediaEvent] = attrs.Factory(list)
    _counts: collections.Counter[str] = attrs.Factory(collections.Counter)
    _dropped: collections.Counter[str] = attrs.Factory(collections.Counter)
    _offered: RelayOffer | None = None
    _host_reports: list[MediaMessage] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self._tag = room_tag(self.room_id)
        config = self.config
        # A witness request every three seconds, each good for 7.5: one may be lost.
        witness_every = max(1, round(3.0 / config.probe_interval))
        self._links = TreeLinks(
            self.identity.public_key,
            self._tag,
            interval=config.probe_interval,
            misses=config.probe_misses,
            lossy_threshold=config.lossy_threshold,
            lossy_window=config.lossy_window,
            withhold_frames=math.ceil(config.withhold_seconds / config.frame_seconds - 1e-9),
            lagging_frames=max(2, math.ceil(LAGGING_SECONDS / config.frame_seconds - 1e-9)),
            witness_fresh=2 * config.withhold_seconds,
            witness_every=witness_every,
            settle=config.withhold_seconds,
            witness=WitnessTable(
                config.witness_stride,
                config.witness_dense_stride,
                lease=2.5 * witness_every * config.probe_interval,
                dense_lease=2 * config.probe_interval,
            ),
        )

    # --- queries -------------------------------------------------------------------

    @property
    def me(self) -> PublicKey:
        return self.identity.public_key

    @property
    def parent(self) -> PublicKey | None:
        return self._links.parent.key if self._links.parent else None

    @property
    def children(self) -> tuple[PublicKey, ...]:
        return tuple(sorted(self._links.children))

    @property
    def can_send(self) -> bool:
        """Whether :meth:`send_frame` would send now: on stage, keyed, and not muted.

        Drivers ask before encoding, so a listener's microphone costs no CPU.
        """
        member = self._members.get(self.me)
        return member is not None and self._speaker_keys is not None and member.audible

    @property
    def sending_generation(self) -> KeyGeneration | None:
        return self._speaker_keys.current.generation if self._speaker_keys else None

    @property
    def next_seq(self) -> int:
        """The sequence number the next frame this peer sends will carry."""
        return self._next_seq

    def held_keys(self, speaker: PublicKey) -> Keyring | None:
        """The sender keys this peer holds for ``speaker`` (for inspection and tests)."""
        stream = self._streams.get(speaker)
        return stream.keyring if stream is not None else None

    def statistics(self) -> MediaStatistics:
        c = self._counts
        dropped = dict(self._dropped)
        if self._links.witness.refused:
            dropped["witness-table-full"] = self._links.witness.refused
        return MediaStatistics(
            frames_sent=c["frames_sent"],
            frames_forwarded=c["frames_forwarded"],
            frames_accepted=c["frames_accepted"],
            frames_decrypted=c["frames_decrypted"],
            key_grants_sent=c["key_grants_sent"],
            key_rotations=c["key_rotations"],
            parent_switches=c["parent_switches"],
            parent=self.parent,
            dropped=dropped,
            links=tuple(self._links.statistics()),
            speakers={
                key: stream.jitter.statistics()
                for key, stream in sorted(self._streams.items())
                if stream.jitter is not None
            },
            witness_frames_sent=c["witness_frames_sent"],
            witness_frames_received=c["witness_frames_received"],
        )

    def outbound(self) -> list[MediaOutbound]:
        out, self._outbound = self._outbound, []
        return out

    def events(self) -> list[MediaEvent]:
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float | None:
        if not self._members:
            return None
        best = self._links.next_deadline()
        keys = self._speaker_keys
        if keys is not None and keys.pending is not None and keys.deadline < best:
            best = keys.deadline
        for stream in self._streams.values():
            if stream.jitter is not None:
                due = stream.jitter.next_playout()
                if due is not None and due < best:
                    best = due
        return best

    def __repr__(self) -> str:
        return f"MediaSession({self.identity.display_name!r}, parent={self.parent})"

    # --- the roster ------------------------------------------------------------------

    def roster_changed(self, state: RoomState | None, host: PublicKey | None, now: float) -> None:
        """The room's membership or roles changed: keep keys and floor checks in step.

        The session keeps a live reference to the replica's member table, so a
        mute or a role change is seen by the very next frame; this call handles
        what needs action (joins, departures, this peer's own floor).
        """
        members: dict[PublicKey, Member] = {}
        if state is not None and self.me in state.members:
            members = state.members
        changes = (
            state.roster_changes_since(self._roster_version)
            if state is not None and state is self._state and members
            else None
        )
        self._state = state
        self._members = members
        self.host = host
        self._roster_version = state.roster_version if state is not None else 0
        if changes is not None:
            joined, left = self._follow_roster(changes)
        else:
            joined, left = self._rebuild_roster()
        if not members:
            self._speaker_keys = None
            self._floor = False
            return
        self._update_floor(now, joined, left)
        parent = self._links.parent
        if parent is not None and parent.key in left:
            self._apply_tree_outcomes(self._links.parent_left(now), now)
        if self._offered is None:
            # The first offer goes out as soon as there is a host to take it; later
            # changes in link quality are sent from the timer.
            self._offer_relay()

    def _follow_roster(self, changed: list[PublicKey]) -> tuple[list[PublicKey], list[PublicKey]]:
        """Apply a few roster changes: who joined and who left, in key order."""
        joined: list[PublicKey] = []
        left: list[PublicKey] = []
        members, known = self._members, self._member_keys
        for key in sorted(set(changed)):
            old_index = self._index_of.pop(key, None)
            if old_index is not None and self._by_index.get(old_index) == key:
                del self._by_index[old_index]
            member = members.get(key)
            if member is not None:
                self._by_index[member.joined_seq] = key
                self._index_of[key] = member.joined_seq
                stream = self._streams.get(key)
                if stream is not None and stream.index != member.joined_seq:
                    del self._streams[key]
                if key not in known:
                    known.add(key)
                    if key != self.me:
                        joined.append(key)
            else:
                self._streams.pop(key, None)
                if key in known:
                    known.discard(key)
                    if key != self.me:
                        left.append(key)
        return joined, left

    def _rebuild_roster(self) -> tuple[list[PublicKey], list[PublicKey]]:
        """Compare the whole roster with what this session last knew."""
        members = self._members
        old_keys, new_keys = self._member_keys, members.keys()
        joined = sorted(new_keys - old_keys - {self.me})
        left = sorted(old_keys - new_keys - {self.me})
        self._member_keys = set(new_keys)
        self._by_index = {m.joined_seq: key for key, m in members.items()}
        self._index_of = {key: m.joined_seq for key, m in members.items()}
        for key in sorted(self._streams):
            member = members.get(key)
            if member is None or member.joined_seq != self._streams[key].index:
                del self._streams[key]
        return joined, left

    def _update_floor(self, now: float, joined: list[PublicKey], left: list[PublicKey]) -> None:
        me = self._members[self.me]
        holds = me.role.holds_floor
        keys = self._speaker_keys
        if holds and (keys is None or not self._floor):
            epoch = keys.newest_epoch + 1 if keys is not None else 0
            self._speaker_keys = SpeakerKeys(SenderKey.fresh(epoch, self.key_source))
            self._floor = True
            self._events.append(SenderKeyChanged(self._speaker_keys.current.generation, "fresh"))
            for member in self._others():
                self._grant(member, self._speaker_keys.current)
            return
        self._floor = holds
        if not holds or keys is None:
            return
        if left:
            pending = keys.begin_rotation(
                self.key_source, set(self._others()), now + self.config.rotation_timeout
            )
            for member in self._others():
                self._grant(member, pending)
            self._maybe_finish_rotation(now)
        if joined:
            granted = keys.ratchet()
            self._events.append(SenderKeyChanged(keys.current.generation, "ratchet"))
            for member in joined:
                for key in granted:
                    self._grant(member, key)

    def _others(self) -> list[PublicKey]:
        return sorted(k for k in self._members if k != self.me)

    def _grant(self, member: PublicKey, key: SenderKey) -> None:
        index = self._members[self.me].joined_seq
        grant = KeyGrant(index, key.generation, key.secret)
        self._outbound.append(SendTo(member, encode_media_message(grant)))
        self._counts["key_grants_sent"] += 1

    def _maybe_finish_rotation(self, now: float) -> None:
        keys = self._speaker_keys
        if keys is not None and keys.complete_if_due(now):
            self._counts["key_rotations"] += 1
            self._events.append(SenderKeyChanged(keys.current.generation, "rotation"))

    def _offer_relay(self) -> None:
        offer = RelayOffer(self.address, self.config.relay_capacity, self._links.median_rtt_ms())
        stale = self._offered is None or (
            offer.address != self._offered.address
            or offer.capacity != self._offered.capacity
            or abs(offer.rtt_ms - self._offered.rtt_ms) > max(5, self._offered.rtt_ms // 4)
        )
        if self.host is not None and self.host != self.me and stale:
            self._outbound.append(SendTo(self.host, encode_media_message(offer)))
            self._offered = offer

    def current_offer(self) -> RelayOffer:
        """What this peer offers the tree (the host uses its own offer directly)."""
        return RelayOffer(self.address, self.config.relay_capacity, self._links.median_rtt_ms())

    def host_changed(self) -> None:
        """A new host needs this peer's relay offer again."""
        self._offered = None
        self._offer_relay()

    # --- speaking ------------------------------------------------------------------

    def send_frame(self, payload: bytes, capture_time: float, now: float) -> bool:
        """Seal one Opus packet and send it on every tree edge.

        Returns False (and sends nothing) when this peer does not hold the floor
        or is muted.  ``capture_time`` is seconds on this peer's media clock.
        """
        member = self._members.get(self.me)
        keys = self._speaker_keys
        if member is None or keys is None or not member.audible:
            return False
        if self._next_seq > MAX_SEQ:
            raise LocalProtocolError("frame counter exhausted; rejoin the room")
        header = FrameHeader(
            self._tag,
            member.joined_seq,
            keys.current.generation,
            self._next_seq,
            round(capture_time * SAMPLE_RATE),
        )
        self._next_seq += 1
        datagram = seal_frame(
            header,
            payload,
            room_id=self.room_id,
            sender_key=keys.current.secret,
            speaker=self.identity,
        )
        self._counts["frames_sent"] += 1
        for address in self._links.forward_addresses(None):
            self._outbound.append(SendDatagram(address, datagram))
        witness = self._links.witness
        if witness.stride_now and header.seq >= witness.next_sample.get(header.speaker, 0):
            self._send_witness(self.me, header, datagram, now)
        return True

    # --- datagrams ---------------------------------------------------------------------

    def receive_datagram(self, data: bytes, address: str, now: float) -> None:
        """Handle one UDP datagram from ``address``."""
        if not data:
            self._drop("malformed")
            return
        try:
            if data[0] == FRAME_TYPE:
                self._on_frame(data, address, now)
            elif data[0] == PROBE_TYPE:
                self._on_probe(Probe.decode(data), address, now)
            elif data[0] == WITNESS_TYPE:
                self._on_witness(data, address, now)
            else:
                self._drop("unknown-datagram")
        except RemoteProtocolError:
            self._drop("malformed")

    def _on_probe(self, probe: Probe, address: str, now: float) -> None:
        if probe.room_tag != self._tag:
            self._drop("wrong-room")
            return
        if probe.sender not in self._members or self.me not in self._members:
            self._drop("not-member")
            return
        self._apply_tree_outcomes(self._links.on_probe(probe, address, now), now)

    def _on_frame(self, data: bytes, address: str, now: float) -> None:
        header = parse_header(data)
        if header.room_tag != self._tag:
            self._drop("wrong-room")
            return
        speaker = self._by_index.get(header.speaker)
        if speaker is None or speaker == self.me:
            self._drop("unknown-speaker" if speaker is None else "own-frame")
            return
        if not self._members[speaker].audible:
            self._drop("not-on-floor")
            return
        stream = self._stream(speaker, header.speaker)
        problem = stream.precheck(header, now)
        if problem is not None:
            self._drop(problem)
            return
        if not frame_signature_valid(data, self.room_id, speaker):
            self._drop("bad-signature")
            self._apply_tree_outcomes(
                self._links.note_corrupt(address, self.config.corrupt_threshold, now), now
            )
            return
        stream.accept(header, now)
        self._links.heard_from(address, now)
        self._links.note_delivery(address, header.speaker, header.seq, now)
        self._counts["frames_accepted"] += 1
        targets = self._links.forward_addresses(address)
        if targets:
            self._outbound.extend([SendDatagram(target, data) for target in targets])
            self._counts["frames_forwarded"] += len(targets)
        witness = self._links.witness
        if witness.stride_now and header.seq >= witness.next_sample.get(header.speaker, 0):
            self._send_witness(speaker, header, data, now)
        self._play(stream, header, data, now, now)

    def _send_witness(
        self, speaker: PublicKey, header: FrameHeader, data: bytes, now: float
    ) -> None:
        """Send a sampled frame to the members this peer backs up (not to its speaker)."""
        targets = self._links.witness.sample(header.speaker, header.seq, now)
        if not targets:
            return
        datagram = wrap(data)
        for key, address in targets:
            if key != speaker:
                self._outbound.append(SendDatagram(address, datagram))
                self._counts["witness_frames_sent"] += 1

    def _on_witness(self, data: bytes, address: str, now: float) -> None:
        """A witness sample: evidence of a speaker's progress, never played or forwarded."""
        links = self._links
        if not links.witness_from(address):
            self._drop("witness-unasked")
            return
        tag, index, seq = peek(data)
        if tag != self._tag:
            self._drop("wrong-room")
            return
        speaker = self._by_index.get(index)
        if speaker is None or speaker == self.me:
            self._drop("unknown-speaker" if speaker is None else "own-frame")
            return
        if not self._members[speaker].audible:
            self._drop("not-on-floor")
            return
        if links.witness_sample(index, seq, now):
            # Only a sample that would show the parent lagging costs more than this.
            frame = data[1:]
            header = parse_header(frame)
            stream = self._stream(speaker, index)
            problem = stream.precheck(header, now)
            if problem is None and not frame_signature_valid(frame, self.room_id, speaker):
                problem = "bad-signature"
            if problem == "duplicate":
                pass  # held already: the parent (or the one before) passed it on
            elif problem is not None:
                self._drop(problem)
                return
            else:
                self._apply_tree_outcomes(links.note_witness(index, seq, now), now)
        self._counts["witness_frames_received"] += 1

    def _stream(self, speaker: PublicKey, index: int) -> SpeakerStream:
        stream = self._streams.get(speaker)
        if stream is None:
            stream = SpeakerStream.create(
                speaker, index, self.config.jitter, self.config.frame_seconds
            )
            self._streams[speaker] = stream
        return stream

    def _play(
        self, stream: SpeakerStream, header: FrameHeader, data: bytes, arrived: float, now: float
    ) -> None:
        secret = stream.keyring.key_for(header.generation)
        if secret is None:
            stream.pending.append((header, data, arrived))
            self._drop_soft("awaiting-key")
            self._request_key(stream, header.generation, now)
            return
        try:
            payload = open_frame(header, data, room_id=self.room_id, sender_key=secret)
        except RemoteProtocolError:
            self._drop("decrypt-failed")
            return
        self._counts["frames_decrypted"] += 1
        capture_time = stream.capture_time(header.timestamp)
        if self.config.report_frames:
            self._events.append(FrameReceived(stream.key, header.seq, capture_time, arrived))
        if stream.jitter is not None:
            stream.jitter.push(header.seq, capture_time, payload, now)

    def _request_key(self, stream: SpeakerStream, generation: KeyGeneration, now: float) -> None:
        if now - stream.last_key_request < self.config.key_request_interval:
            return
        stream.last_key_request = now
        request = encode_media_message(KeyRequest(generation))
        self._outbound.append(SendTo(stream.key, request))

    def _drop(self, reason: str) -> None:
        self._dropped[reason] += 1

    def count_drop(self, reason: str) -> None:
        """Count an input the caller refused on this session's behalf."""
        self._drop(reason)

    def _drop_soft(self, reason: str) -> None:
        """A frame held back, not lost: counted apart from drops."""
        self._counts[reason] += 1

    # --- link messages -----------------------------------------------------------------

    def receive_link(self, data: bytes, sender: PublicKey, now: float) -> MediaMessage | None:
        """Handle a media message from authenticated peer ``sender``.

        Messages meant for the host's tree coordinator (relay offers, switch and
        loss reports) are returned for the caller to route; others are handled here.
        """
        try:
            message = decode_media_message(data)
        except RemoteProtocolError:
            self._drop("malformed-link-message")
            return None
        if sender not in self._members:
            self._drop("not-member")
            return None
        if isinstance(message, KeyGrant):
            self._on_grant(message, sender, now)
        elif isinstance(message, KeyAck):
            if self._speaker_keys is not None and self._speaker_keys.acknowledge(
                sender, message.generation
            ):
                self._counts["key_rotations"] += 1
                self._events.append(
                    SenderKeyChanged(self._speaker_keys.current.generation, "rotation")
                )
        elif isinstance(message, KeyRequest):
            self._on_key_request(sender)
        elif isinstance(message, TreePosition):
            self._on_position(message, sender, now)
        else:
            return message
        return None

    def _on_grant(self, grant: KeyGrant, sender: PublicKey, now: float) -> None:
        member = self._members[sender]
        if member.joined_seq != grant.speaker_index:
            self._drop("grant-index-mismatch")
            return
        stream = self._stream(sender, grant.speaker_index)
        stream.keyring.install(SenderKey(grant.generation, grant.secret))
        self._outbound.append(SendTo(sender, encode_media_message(KeyAck(grant.generation))))
        waiting = list(stream.pending)
        stream.pending.clear()
        for header, data, arrived in waiting:
            self._play(stream, header, data, arrived, now)

    def _on_key_request(self, sender: PublicKey) -> None:
        keys = self._speaker_keys
        if keys is None or not self._floor:
            return
        self._grant(sender, keys.current)
        if keys.pending is not None:
            self._grant(sender, keys.pending)

    def _on_position(self, position: TreePosition, sender: PublicKey, now: float) -> None:
        if sender != self.host:
            self._drop("position-not-from-host")
            return
        if sender == self._tree_host and position.version <= self._tree_version:
            self._drop("stale-position")
            return
        self._tree_host, self._tree_version = sender, position.version
        before = self.parent
        self._apply_tree_outcomes(self._links.apply_position(position, now), now)
        if self.parent != before:
            self._events.append(ParentChanged(self.parent, "assigned"))

    def apply_position(self, position: TreePosition, now: float) -> None:
        """The host's own position, straight from its coordinator."""
        self._tree_host, self._tree_version = self.me, position.version
        self._apply_tree_outcomes(self._links.apply_position(position, now), now)

    # --- timers --------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        if not self._members:
            return
        self._apply_tree_outcomes(self._links.tick(now), now)
        if self._speaker_keys is not None and self._speaker_keys.pending is not None:
            self._maybe_finish_rotation(now)
        for key, stream in sorted(self._streams.items()):
            buffer = stream.jitter
            for _ in range(MAX_SLOTS_PER_TICK):
                due = buffer.next_playout() if buffer is not None else None
                if buffer is None or due is None or due > now:
                    break
                self._events.append(AudioOut(key, buffer.pop(now)))
        self._offer_relay()

    def _apply_tree_outcomes(self, outcomes: Sequence[TreeOutcome], now: float) -> None:
        for outcome in outcomes:
            if isinstance(outcome, SendDatagram):
                self._outbound.append(outcome)
            elif isinstance(outcome, Switched):
                self._counts["parent_switches"] += 1
                reason = _SWITCH_REASONS[outcome.reason]
                self._events.append(ParentChanged(outcome.new, reason))
                report = ParentSwitched(
                    self._links.version, outcome.old, outcome.new, outcome.reason
                )
                self._report(report)
            elif isinstance(outcome, ChildDropped):
                self._report(ChildLost(self._links.version, outcome.child))
            elif isinstance(outcome, ChildSeen):
                self._report(ChildFound(self._links.version, outcome.child))

    def _report(self, message: MediaMessage) -> None:
        if self.host is not None and self.host != self.me:
            self._outbound.append(SendTo(self.host, encode_media_message(message)))
        else:
            self._host_reports.append(message)

    def take_host_reports(self) -> list[MediaMessage]:
        """Reports this peer made while it is the host itself (for its own coordinator)."""
        if not self._host_reports:
            return []
        out, self._host_reports = self._host_reports, []
        return out

    def has_output(self) -> bool:
        """Whether :meth:`outbound` or :meth:`events` has anything to hand over."""
        return bool(self._outbound or self._events)
