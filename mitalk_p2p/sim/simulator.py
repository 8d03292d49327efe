"""The deterministic multi-peer simulator: whole peers on a virtual clock and a seeded network.

Each simulated peer is a :class:`~mitalk_p2p.core.peer.Peer`, the object the
trio runtime drives; the simulator is the other driver.  It keeps one event
heap (timers, link messages, datagrams, speech ticks, scheduled actions), passes
each peer its own clock (virtual time plus the peer's clock offset), routes
what peers send through :class:`~.network.Network`, and writes a
:class:`~.trace.Trace`.

Speakers really encode Opus (or send Opus-sized synthetic payloads) and every
frame is really sealed, signed, verified and decrypted.  Because hundreds of
peers check the same bytes, the run shares an exact memo of those checks
(:mod:`mitalk_p2p.core.crypto_memo`): a tampered frame is different bytes and is
checked, and refused, for real.
"""

from __future__ import annotations

import gc
import hashlib
import heapq
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import cast

import attrs

from ..audio.sources import PcmSource
from ..codec import CodecConfig, OpusDecoder, OpusEncoder, is_dtx
from ..core.events import JoinedRoom as JoinedRoomEvent
from ..core.events import JoinRefusedEvent, LeftRoom, MembersMerged, RoomChanged, TermStarted
from ..core.identity import Identity, PublicKey
from ..core.ids import RoomId
from ..core.invite import SignedInvite, create_invite
from ..core.jitter import Conceal, PlayFrame, RecoverWithFec, Stretch
from ..core.media import MediaConfig
from ..core.media_events import (
    AudioOut,
    FrameReceived,
    ParentChanged,
    SendDatagram,
    SenderKeyChanged,
)
from ..core.ops import Op
from ..core.peer import Peer, PeerEvent, PeerOutbound
from ..core.rejection import Rejected
from ..core.replica import Broadcast, RoomConfig, SendTo
from ..core.roles import Role
from ..core.sender_keys import SeededKeySource
from ..core.term import Term
from . import trace as t
from .control_net import establish_link
from .network import LinkModel, Network, Uplink

UNIX_EPOCH = 1_800_000_000.0
"""The wall-clock time the simulated day starts at (peers add their clock offset)."""
MONOTONIC_START = 10_000.0
"""What peers' monotonic clocks read when the simulation starts, as a real clock reads
some arbitrary large value; each peer's clock offset is added to it."""
MAX_EVENTS = 200_000_000

_TIMER, _LINK, _DATAGRAM, _SPEAK, _CALL = range(5)


class SimulationError(RuntimeError):
    """The simulation was asked something impossible (an unknown peer, a bad action)."""


@attrs.frozen(kw_only=True)
class PeerSpec:
    name: str
    relay_capacity: int = 6
    uplink: Uplink = attrs.Factory(Uplink)
    clock_offset: float = 0.0
    """Seconds this peer's clocks run ahead (negative: behind) of virtual time."""


@attrs.define(eq=False)
class SimPeer:
    index: int
    spec: PeerSpec
    identity: Identity
    address: str
    peer: Peer | None = None
    status: str = "idle"
    """``idle`` (not started), ``joining``, ``member``, ``crashed``, ``left``, ``removed``."""
    decoders: dict[int, OpusDecoder] = attrs.Factory(dict)
    clock_shift: float = attrs.field(init=False)
    """What this peer's monotonic clock reads at virtual time zero."""

    def __attrs_post_init__(self) -> None:
        self.clock_shift = MONOTONIC_START + self.spec.clock_offset

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def running(self) -> bool:
        return self.status in ("joining", "member", "removed")


@attrs.define(eq=False)
class _Speech:
    speaker: int
    source: PcmSource
    encoder: OpusEncoder | None
    until: float
    payload_size: int


@attrs.define(eq=False)
class PlayoutCounters:
    played_samples: int = 0
    concealed_samples: int = 0
    fec_samples: int = 0


@attrs.define(eq=False)
class Simulator:
    """Build with :meth:`create`; then add peers, act, speak and :meth:`run_until`."""

    room_id: RoomId
    seed: int
    peers: list[SimPeer]
    network: Network
    trace: t.Trace
    room_config: RoomConfig
    media_config: MediaConfig
    fanout: int
    codec: CodecConfig
    decode_audio: bool
    now: float = 0.0
    playout: PlayoutCounters = attrs.Factory(PlayoutCounters)
    counters: dict[str, int] = attrs.Factory(dict)
    _by_name: dict[str, SimPeer] = attrs.Factory(dict)
    _by_key: dict[PublicKey, int] = attrs.Factory(dict)
    _by_address: dict[str, int] = attrs.Factory(dict)
    _heap: list[tuple[float, int, int, int, object]] = attrs.Factory(list)
    _counter: int = 0
    _timer_at: dict[int, float] = attrs.Factory(dict)
    _links: dict[tuple[int, int], bytes] = attrs.Factory(dict)
    _sent_at: list[dict[int, float]] = attrs.Factory(list)
    _terms_seen: set[tuple[int, str]] = attrs.Factory(set)
    _replans_seen: dict[int, int] = attrs.Factory(dict)
    _taps: dict[int, list[tuple[float, int, bytes]]] = attrs.Factory(dict)
    _tap_keys: dict[tuple[int, int], dict[str, bytes]] = attrs.Factory(dict)
    partition_log: list[tuple[float, dict[int, int]]] = attrs.Factory(list)
    """(time, peer index -> group number) at each partition and heal (an empty map)."""

    @classmethod
    def create(
        cls,
        specs: Sequence[PeerSpec],
        *,
        seed: int,
        link: LinkModel | None = None,
        room_config: RoomConfig | None = None,
        media_config: MediaConfig | None = None,
        fanout: int = 6,
        codec: CodecConfig | None = None,
        decode_audio: bool = False,
    ) -> Simulator:
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise SimulationError("peer names must be unique")
        rng = random.Random(seed)
        room_id = RoomId(_derive(seed, "room", 16))
        network = Network(rng, link or LinkModel(), [spec.uplink for spec in specs])
        sim = cls(
            room_id,
            seed,
            [],
            network,
            t.Trace(tuple(names)),
            room_config or RoomConfig(),
            media_config or MediaConfig(report_frames=True, jitter=None),
            fanout,
            codec or CodecConfig(),
            decode_audio,
        )
        for index, spec in enumerate(specs):
            identity = Identity.from_seed(_derive(seed, f"identity:{spec.name}", 32), spec.name)
            sim_peer = SimPeer(index, spec, identity, f"sim:{spec.name}")
            sim.peers.append(sim_peer)
            sim._by_name[spec.name] = sim_peer
            sim._by_key[identity.public_key] = index
            sim._by_address[sim_peer.address] = index
            sim._sent_at.append({})
        return sim

    # --- lookup ------------------------------------------------------------------

    def __getitem__(self, name: str) -> SimPeer:
        try:
            return self._by_name[name]
        except KeyError:
            raise SimulationError(f"no peer named {name!r}") from None

    def name_of(self, key: PublicKey | None) -> str | None:
        if key is None:
            return None
        index = self._by_key.get(key)
        return self.peers[index].name if index is not None else key.short

    def local_time(self, sim_peer: SimPeer) -> float:
        return self.now + sim_peer.clock_shift

    def unix_time(self, sim_peer: SimPeer) -> float:
        return UNIX_EPOCH + self.now + sim_peer.spec.clock_offset

    @property
    def host(self) -> SimPeer | None:
        """The running peer that currently hosts (the first, if a partition made two)."""
        for sim_peer in self.peers:
            if sim_peer.running and sim_peer.peer is not None and sim_peer.peer.replica.is_host:
                return sim_peer
        return None

    def hosts(self) -> list[SimPeer]:
        return [
            p for p in self.peers if p.running and p.peer is not None and p.peer.replica.is_host
        ]

    def members(self) -> list[SimPeer]:
        return [p for p in self.peers if p.status == "member"]

    # --- building the room -----------------------------------------------------------

    def create_room(self, name: str, *, room_name: str = "Simulated room") -> SimPeer:
        sim_peer = self[name]
        sim_peer.peer = Peer.create_room(
            sim_peer.identity,
            self.room_id,
            name=room_name,
            address=sim_peer.address,
            now=self.local_time(sim_peer),
            room_config=self.room_config,
            media_config=self._media_config(sim_peer),
            key_source=self._key_source(sim_peer),
            fanout=self.fanout,
        )
        sim_peer.status = "member"
        self.trace.add(t.JoinedRoom(self.now, name))
        state = sim_peer.peer.state
        assert state is not None
        self._observe_term(sim_peer, state.term, sim_peer.identity.public_key)
        self._after_input(sim_peer.index)
        return sim_peer

    def invite(
        self,
        issuer: str,
        *,
        role: Role = Role.LISTENER,
        audience: str | None = None,
        lifetime: int = 3600,
    ) -> SignedInvite:
        """An invite signed by ``issuer`` on its own clock."""
        sim_peer = self[issuer]
        return create_invite(
            sim_peer.identity,
            room_id=self.room_id,
            room_name="Simulated room",
            role=role,
            now=self.unix_time(sim_peer),
            lifetime=lifetime,
            audience=self[audience].identity.public_key if audience else None,
            max_uses=1,
            nonce=_derive(self.seed, f"invite:{self._counter}", 16),
        )

    def join(self, name: str, invite: SignedInvite, *, via: str) -> None:
        """``name`` dials ``via`` and redeems ``invite`` over a fresh Noise link."""
        sim_peer = self[name]
        if sim_peer.status not in ("idle", "left"):
            raise SimulationError(f"{name} is already {sim_peer.status}")
        sim_peer.peer = Peer.joining(
            sim_peer.identity,
            invite,
            address=sim_peer.address,
            room_config=self.room_config,
            media_config=self._media_config(sim_peer),
            key_source=self._key_source(sim_peer),
            fanout=self.fanout,
        )
        sim_peer.status = "joining"
        sim_peer.decoders.clear()
        target = self[via].index
        handshake = self._handshake_hash(sim_peer.index, target)
        self._send_message(sim_peer.index, target, sim_peer.peer.join_message(handshake))
        self._after_input(sim_peer.index)

    # --- actions -------------------------------------------------------------------------

    def act(self, name: str, op: Op) -> bool:
        """A user action at ``name``; a refusal is traced, and returns False."""
        sim_peer = self._running(name)
        assert sim_peer.peer is not None
        try:
            sim_peer.peer.act(op, self.local_time(sim_peer))
        except Rejected as refusal:
            self.trace.add(t.ActionRefused(self.now, type(op).__name__, name, str(refusal)))
            self._after_input(sim_peer.index)
            return False
        self.trace.add(t.ActionTaken(self.now, type(op).__name__, name, _op_detail(self, op)))
        self._after_input(sim_peer.index)
        return True

    def leave(self, name: str) -> None:
        """A graceful leave: the peer says goodbye, then stops."""
        sim_peer = self._running(name)
        assert sim_peer.peer is not None
        was_host = sim_peer.peer.replica.is_host
        sim_peer.peer.depart(self.local_time(sim_peer))
        self._after_input(sim_peer.index)
        sim_peer.status = "left"
        self.trace.add(t.ActionTaken(self.now, "leave", name, "host" if was_host else ""))

    def crash(self, name: str) -> None:
        """The peer goes silent at once: no goodbye, no more sending, receiving or timers."""
        sim_peer = self._running(name)
        was_host = sim_peer.peer is not None and sim_peer.peer.replica.is_host
        sim_peer.status = "crashed"
        self.trace.add(t.ActionTaken(self.now, "crash", name, "host" if was_host else ""))

    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        self.network.partition([[self[n].index for n in group] for group in groups])
        self.partition_log.append(
            (self.now, {self[n].index: i for i, group in enumerate(groups, 1) for n in group})
        )
        detail = " | ".join(",".join(group) for group in groups)
        self.trace.add(t.ActionTaken(self.now, "partition", "", detail))

    def heal(self) -> None:
        self.network.heal()
        self.partition_log.append((self.now, {}))
        self.trace.add(t.ActionTaken(self.now, "heal", ""))

    def change_links(self, **changes: float | str) -> None:
        self.network.change_everywhere(**changes)
        detail = ", ".join(f"{k}={v}" for k, v in sorted(changes.items()))
        self.trace.add(t.ActionTaken(self.now, "set_network", "", detail))

    def tap(self, name: str) -> None:
        """Hand ``name`` a copy of every frame any speaker sends from now on.

        The copies are kept for inspection (see :meth:`tapped`), as a removed
        member who keeps receiving the room's packets would have them.
        """
        self._taps.setdefault(self[name].index, [])

    def tapped(self, name: str) -> list[tuple[float, int, bytes]]:
        """(time, speaker index, datagram) for every frame copied to ``name``."""
        return self._taps.get(self[name].index, [])

    def keys_ever_held(self, name: str, speaker: int) -> list[bytes]:
        """Every sender key of ``speaker`` that tapped peer ``name`` was seen holding."""
        return list(self._tap_keys.get((self[name].index, speaker), {}).values())

    def speak(self, name: str, source: PcmSource, seconds: float, *, codec: str = "opus") -> None:
        """``name`` speaks from ``source`` for ``seconds``, one frame per frame interval."""
        sim_peer = self._running(name)
        encoder = OpusEncoder(self.codec) if codec == "opus" else None
        speech = _Speech(sim_peer.index, source, encoder, self.now + seconds, _SYNTHETIC_PAYLOAD)
        self._push(self.now, _SPEAK, sim_peer.index, speech)
        self.trace.add(t.ActionTaken(self.now, "speak", name, f"{seconds:g} s"))

    def inject_datagram(self, target: str, data: bytes, *, source: str, delay: float = 0.0) -> None:
        """Deliver raw bytes to ``target`` as if ``source`` had sent them (for attacks)."""
        self._push(self.now + delay, _DATAGRAM, self[target].index, (self[source].index, data))

    def call_at(self, when: float, action: Callable[[], object]) -> None:
        """Run ``action`` at virtual time ``when`` (used by the scenario timeline)."""
        self._push(when, _CALL, -1, action)

    # --- running -------------------------------------------------------------------------

    def run_until(self, deadline: float) -> None:
        with _young_collections_rarer():
            self._run_until(deadline)

    def _run_until(self, deadline: float) -> None:
        heap = self._heap
        pop = heapq.heappop
        peers = self.peers
        for _ in range(MAX_EVENTS):
            if not heap or heap[0][0] > deadline:
                break
            when, _, kind, target, payload = pop(heap)
            if when > self.now:
                self.now = when
            if kind == _CALL:
                assert callable(payload)
                payload()
                continue
            sim_peer = peers[target]
            if not sim_peer.running or sim_peer.peer is None:
                continue
            if kind == _DATAGRAM:
                self._deliver_datagram(sim_peer, payload)  # type: ignore[arg-type]
            elif kind == _LINK:
                self._deliver_message(sim_peer, payload)  # type: ignore[arg-type]
            elif kind == _TIMER:
                if self._timer_at.get(target) != when:
                    continue
                del self._timer_at[target]
                sim_peer.peer.handle_timer(self.now + sim_peer.clock_shift)
                self._after_input(target)
                self._note_replan(sim_peer)
            else:
                self._speak_tick(sim_peer, payload)  # type: ignore[arg-type]
        else:
            raise SimulationError("the simulation did not settle")
        if deadline > self.now:
            self.now = deadline

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    # --- delivery -------------------------------------------------------------------------

    def _deliver_datagram(self, sim_peer: SimPeer, payload: tuple[int, bytes]) -> None:
        source, data = payload
        if not self.network.reachable(source, sim_peer.index):
            self.network.counters.datagrams_unreachable += 1
            return
        self.network.counters.datagrams_delivered += 1
        peer = sim_peer.peer
        assert peer is not None
        peer.receive_datagram(data, self.peers[source].address, self.now + sim_peer.clock_shift)
        self._after_input(sim_peer.index)

    def _deliver_message(self, sim_peer: SimPeer, payload: tuple[int, bytes]) -> None:
        source, data = payload
        target = sim_peer.index
        if not self.network.reachable(source, target):
            self.network.counters.messages_unreachable += 1
            return
        self.network.counters.messages_delivered += 1
        peer = sim_peer.peer
        assert peer is not None
        local = self.now + sim_peer.clock_shift
        peer.receive_link(
            data,
            self.peers[source].identity.public_key,
            local,
            handshake_hash=self._handshake_hash(source, target),
            unix_time=UNIX_EPOCH + self.now + sim_peer.spec.clock_offset,
        )
        self._after_input(target)
        self._note_replan(sim_peer)

    def _speak_tick(self, sim_peer: SimPeer, speech: _Speech) -> None:
        peer = sim_peer.peer
        assert peer is not None
        pcm = speech.source.read_frame()
        frame_seconds = self.media_config.frame_seconds
        if pcm is not None:
            if speech.encoder is not None:
                packet = speech.encoder.encode(pcm)
            else:
                packet = _synthetic_payload(speech.payload_size, peer.media.next_seq)
            if speech.encoder is not None and is_dtx(packet):
                self._count("speech_dtx_frames")
            else:
                local = self.now + sim_peer.clock_shift
                seq = peer.media.next_seq
                sent = peer.send_frame(packet, local, local)
                outbound = peer.outbound()
                if sent:
                    self._sent_at[sim_peer.index][seq] = self.now
                    self.trace.frame_sent(self.now, sim_peer.index, seq)
                    self._copy_to_taps(sim_peer.index, outbound)
                else:
                    self._count("speech_frames_refused")
                self._dispatch(sim_peer.index, outbound, peer.events())
        next_tick = self.now + frame_seconds
        if pcm is not None and next_tick < speech.until - 1e-9:
            self._push(next_tick, _SPEAK, sim_peer.index, speech)

    def _copy_to_taps(self, speaker: int, outbound: list[PeerOutbound]) -> None:
        if not self._taps:
            return
        frames = [o.data for o in outbound if isinstance(o, SendDatagram)]
        if not frames:
            return
        speaker_key = self.peers[speaker].identity.public_key
        for tapper, copies in self._taps.items():
            copies.append((self.now, speaker, frames[-1]))
            peer = self.peers[tapper].peer
            ring = peer.media.held_keys(speaker_key) if peer is not None else None
            if ring is not None:
                known = self._tap_keys.setdefault((tapper, speaker), {})
                for key in ring.held():
                    known[str(key.generation)] = key.secret

    # --- output -------------------------------------------------------------------------

    def _after_input(self, index: int) -> None:
        peer = self.peers[index].peer
        assert peer is not None
        self._dispatch(index, peer.outbound(), peer.events())

    def _dispatch(self, index: int, outbound: list[PeerOutbound], events: list[PeerEvent]) -> None:
        """Send what peer ``index`` queued, record its events, and re-arm its timer."""
        sim_peer = self.peers[index]
        peer = sim_peer.peer
        assert peer is not None
        if sim_peer.status == "crashed":
            return
        now = self.now
        for item in outbound:
            kind = type(item)
            if kind is SendDatagram:
                target = self._by_address.get(item.address)  # type: ignore[union-attr]
                if target is None:
                    self._count("datagrams_to_unknown_address")
                    continue
                data = item.data
                for arrival in self.network.datagram_arrivals(index, target, len(data), now):
                    self._push(arrival, _DATAGRAM, target, (index, data))
            elif kind is Broadcast:
                for key in item.recipients:  # type: ignore[union-attr]
                    self._send_to_key(index, key, item.data)
            elif kind is SendTo:
                self._send_to_key(index, item.peer, item.data)  # type: ignore[union-attr]
        if events:
            self._record_events(sim_peer, events)
        deadline = peer.next_deadline()
        if deadline is not None:
            when = deadline - sim_peer.clock_shift
            if when < now:
                when = now
            if self._timer_at.get(index) != when:
                self._timer_at[index] = when
                self._push(when, _TIMER, index, None)

    def _send_to_key(self, source: int, key: PublicKey, data: bytes) -> None:
        target = self._by_key.get(key)
        if target is None:
            self._count("messages_to_unknown_peer")
            return
        self._send_message(source, target, data)

    def _send_message(self, source: int, target: int, data: bytes) -> None:
        arrival = self.network.message_arrival(source, target, len(data), self.now)
        if arrival is not None:
            self._push(arrival, _LINK, target, (source, data))

    def _record_events(self, sim_peer: SimPeer, events: list[PeerEvent]) -> None:
        trace, now, index = self.trace, self.now, sim_peer.index
        for event in events:
            kind = type(event)
            if kind is FrameReceived:
                received = cast(FrameReceived, event)
                speaker = self._by_key.get(received.speaker)
                if speaker is None:
                    continue
                seq = received.seq
                sent = self._sent_at[speaker].get(seq)
                if sent is not None:
                    trace.frame_delivered(now, index, speaker, seq, now - sent)
            elif kind is AudioOut:
                self._play(sim_peer, cast(AudioOut, event))
            else:
                self._record_other(sim_peer, event)

    def _record_other(self, sim_peer: SimPeer, event: object) -> None:
        trace, now, name = self.trace, self.now, sim_peer.name
        if isinstance(event, ParentChanged):
            trace.add(t.ParentChanged(now, name, self.name_of(event.parent), event.reason))
        elif isinstance(event, SenderKeyChanged):
            trace.add(t.KeyChanged(now, name, str(event.generation), event.reason))
        elif isinstance(event, TermStarted):
            self._observe_term(sim_peer, event.term, event.host)
        elif isinstance(event, JoinedRoomEvent):
            sim_peer.status = "member"
            trace.add(t.JoinedRoom(now, name))
            self._observe_term(sim_peer, event.term, event.host)
        elif isinstance(event, JoinRefusedEvent):
            sim_peer.status = "left"
            trace.add(t.JoinRefused(now, name, f"{event.problem}: {event.message}"))
        elif isinstance(event, LeftRoom):
            if sim_peer.status in ("member", "joining"):
                sim_peer.status = "removed" if event.reason != "left" else "left"
            trace.add(t.LeftRoom(now, name, event.reason))
        elif isinstance(event, RoomChanged):
            self._record_room_change(sim_peer, event)
        elif isinstance(event, MembersMerged):
            members = ",".join(sorted(self.name_of(k) or "?" for k in event.members))
            trace.add(t.ActionTaken(now, "merged", name, members))

    def _observe_term(self, sim_peer: SimPeer, term: Term, host: PublicKey) -> None:
        shown = f"{term.epoch}.{term.rank}@{term.list_seq}"
        if (sim_peer.index, shown) not in self._terms_seen:
            self._terms_seen.add((sim_peer.index, shown))
            host_name = self.name_of(host) or "?"
            self.trace.add(t.TermObserved(self.now, sim_peer.name, shown, host_name))

    def _record_room_change(self, sim_peer: SimPeer, event: RoomChanged) -> None:
        peer = sim_peer.peer
        if peer is None or not peer.replica.is_host or peer.state is None:
            return
        op = event.op
        target = getattr(op, "target", None) or getattr(op, "member", None) or event.author
        role = peer.state.role_of(target)
        self.trace.add(
            t.RoleChanged(
                self.now,
                sim_peer.name,
                self.name_of(target) or "?",
                role.name.lower() if role is not None else "gone",
                type(op).__name__,
            )
        )

    def _note_replan(self, sim_peer: SimPeer) -> None:
        peer = sim_peer.peer
        coordinator = peer.coordinator if peer is not None else None
        if coordinator is None:
            return
        if self._replans_seen.get(sim_peer.index) == coordinator.replans:
            return
        self._replans_seen[sim_peer.index] = coordinator.replans
        tree = coordinator.tree
        if tree is None:
            return
        name = self.name_of
        parents = tuple(sorted((name(c) or "?", name(p) or "?") for c, p in tree.parents.items()))
        self.trace.add(t.TreePlanned(self.now, sim_peer.name, parents))

    def _play(self, sim_peer: SimPeer, event: AudioOut) -> None:
        playout = event.playout
        counters = self.playout
        samples = self.codec.samples_per_frame
        if not self.decode_audio:
            return
        speaker = self._by_key.get(event.speaker, -1)
        decoder = sim_peer.decoders.get(speaker)
        if decoder is None:
            decoder = sim_peer.decoders[speaker] = OpusDecoder(self.codec)
        if isinstance(playout, PlayFrame):
            decoder.decode(playout.payload)
            counters.played_samples += samples
        elif isinstance(playout, RecoverWithFec):
            decoder.recover_from_fec(playout.next_payload)
            counters.played_samples += samples
            counters.fec_samples += samples
        elif isinstance(playout, (Conceal, Stretch)):
            decoder.conceal()
            counters.played_samples += samples
            counters.concealed_samples += samples

    # --- internals -----------------------------------------------------------------------

    def _push(self, when: float, kind: int, target: int, payload: object) -> None:
        self._counter += 1
        heapq.heappush(self._heap, (when, self._counter, kind, target, payload))

    def _running(self, name: str) -> SimPeer:
        sim_peer = self[name]
        if not sim_peer.running or sim_peer.peer is None:
            raise SimulationError(f"{name} is not in the room (it is {sim_peer.status})")
        return sim_peer

    def _handshake_hash(self, a: int, b: int) -> bytes:
        pair = (a, b) if a < b else (b, a)
        known = self._links.get(pair)
        if known is None:
            ends = establish_link(
                self.peers[pair[0]].identity, self.peers[pair[1]].identity, self.room_id
            )
            known = self._links[pair] = ends[0].handshake_hash
        return known

    def _media_config(self, sim_peer: SimPeer) -> MediaConfig:
        return attrs.evolve(self.media_config, relay_capacity=sim_peer.spec.relay_capacity)

    def _key_source(self, sim_peer: SimPeer) -> SeededKeySource:
        return SeededKeySource(_derive(self.seed, f"sender-keys:{sim_peer.name}", 32))

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


_SYNTHETIC_PAYLOAD = 60
"""Bytes of a synthetic frame: about a 24 kbit/s Opus voice packet at 20 ms."""


def _synthetic_payload(size: int, seq: int) -> bytes:
    return seq.to_bytes(4, "big") * (size // 4)


def _derive(seed: int, label: str, size: int) -> bytes:
    return hashlib.blake2b(
        f"{seed}:{label}".encode(), digest_size=size, person=b"mitalk-sim"
    ).digest()


def _op_detail(sim: Simulator, op: Op) -> str:
    target = getattr(op, "target", None)
    return sim.name_of(target) or "" if isinstance(target, PublicKey) else ""


YOUNG_GENERATION_THRESHOLD = 100_000


@contextmanager
def _young_collections_rarer() -> Iterator[None]:
    """Run the cyclic garbage collector's young generation less often.

    A large room allocates millions of short-lived tuples and events, and with
    the default threshold (700) the collector's passes over a heap of a million
    long-lived objects cost a quarter of the run.  Collection still happens,
    only in larger batches; the old thresholds are restored afterwards.
    """
    previous = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, max(previous[1], 50), max(previous[2], 100))
    try:
        yield
    finally:
        gc.set_threshold(*previous)
