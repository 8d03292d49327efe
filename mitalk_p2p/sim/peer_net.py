"""An event-heap network of whole peers on a virtual clock.

Each peer is a :class:`~mitalk_p2p.core.peer.Peer`, the object the real runtime
drives.  Link messages and datagrams are delivered after a per-link latency
(plus seeded jitter and loss for datagrams); timers fire at the peers' own
deadlines.  Peers are addressed by media addresses of the form ``sim:NAME``.
Everything is deterministic for a given seed.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Sequence

import attrs

from ..core.identity import PublicKey
from ..core.ids import RoomId
from ..core.media_events import SendDatagram
from ..core.peer import Peer, PeerEvent
from ..core.replica import Broadcast, SendTo
from .control_net import establish_link

MAX_STEPS = 50_000_000

Tamper = Callable[[SendDatagram], Sequence[SendDatagram]]
"""What a misbehaving peer does to each datagram it sends: drop it (return nothing),
alter it, or add others."""


@attrs.frozen
class _LinkMessage:
    sender: PublicKey
    data: bytes


@attrs.frozen
class _Datagram:
    source: str
    data: bytes


@attrs.frozen
class LinkModel:
    latency: float = 0.010
    """One-way delay in seconds."""
    jitter: float = 0.0
    """Datagram delay varies uniformly within ± this many seconds."""
    loss: float = 0.0
    """Probability that a datagram is lost."""


@attrs.define(eq=False)
class PeerNet:
    room_id: RoomId
    seed: int = 0
    default_link: LinkModel = attrs.Factory(LinkModel)
    now: float = 0.0
    peers: dict[PublicKey, Peer] = attrs.Factory(dict)
    link_overrides: dict[frozenset[PublicKey], LinkModel] = attrs.Factory(dict)
    on_event: Callable[[PublicKey, PeerEvent, float], None] | None = None
    datagrams_delivered: int = 0
    datagrams_lost: int = 0
    bytes_received: dict[PublicKey, int] = attrs.Factory(dict)
    tamper: dict[PublicKey, Tamper] = attrs.Factory(dict)
    """Misbehaving peers: every datagram such a peer sends goes through its function first."""
    _rng: random.Random = attrs.field(init=False)
    _heap: list[tuple[float, int, str, PublicKey, _LinkMessage | _Datagram | None]] = attrs.Factory(
        list
    )
    _counter: int = 0
    _timer_at: dict[PublicKey, float] = attrs.Factory(dict)
    _addresses: dict[str, PublicKey] = attrs.Factory(dict)
    _names: dict[PublicKey, str] = attrs.Factory(dict)
    _links: dict[frozenset[PublicKey], bytes] = attrs.Factory(dict)
    _down: set[PublicKey] = attrs.Factory(set)
    _groups: dict[PublicKey, int] = attrs.Factory(dict)
    _events: dict[PublicKey, list[PeerEvent]] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    # --- membership ----------------------------------------------------------------

    @staticmethod
    def address_of(name: str) -> str:
        return f"sim:{name}"

    def add(self, peer: Peer) -> Peer:
        self.peers[peer.me] = peer
        self._addresses[peer.media.address] = peer.me
        self._names[peer.me] = peer.identity.display_name
        self._events[peer.me] = []
        self._after_input(peer.me)
        return peer

    def join(self, joiner: Peer, via: PublicKey) -> None:
        """Dial ``via`` over a fresh Noise link and send the join request."""
        self.add(joiner)
        link = self.handshake_hash(joiner.me, via)
        self._send_link(joiner.me, via, joiner.join_message(link))

    def handshake_hash(self, a: PublicKey, b: PublicKey) -> bytes:
        pair = frozenset((a, b))
        if pair not in self._links:
            ends = establish_link(self.peers[a].identity, self.peers[b].identity, self.room_id)
            self._links[pair] = ends[0].handshake_hash
        return self._links[pair]

    def name(self, key: PublicKey) -> str:
        return self._names.get(key, key.short)

    def events_of(self, key: PublicKey) -> list[PeerEvent]:
        """Every event ``key`` reported so far (kept unless ``on_event`` is set)."""
        return self._events[key]

    # --- faults --------------------------------------------------------------------

    def crash(self, key: PublicKey) -> None:
        """The peer goes silent: it sends, receives and wakes up no more."""
        self._down.add(key)

    def is_up(self, key: PublicKey) -> bool:
        return key not in self._down

    def partition(self, *groups: Iterable[PublicKey]) -> None:
        self._groups = {key: i + 1 for i, group in enumerate(groups) for key in group}

    def heal(self) -> None:
        self._groups = {}

    def reachable(self, a: PublicKey, b: PublicKey) -> bool:
        if a in self._down or b in self._down:
            return False
        return self._groups.get(a, 0) == self._groups.get(b, 0)

    def link(self, a: PublicKey, b: PublicKey) -> LinkModel:
        return self.link_overrides.get(frozenset((a, b)), self.default_link)

    # --- injecting traffic -----------------------------------------------------------

    def inject_datagram(self, data: bytes, source: str, target: PublicKey, delay: float) -> None:
        """Deliver raw bytes to ``target`` as if sent from media address ``source``."""
        self._push(self.now + delay, "datagram", target, _Datagram(source, data))

    # --- running ---------------------------------------------------------------------

    def run_until(self, deadline: float) -> None:
        for _ in range(MAX_STEPS):
            if not self._heap or self._heap[0][0] > deadline:
                break
            when, _, kind, target, payload = heapq.heappop(self._heap)
            self.now = max(self.now, when)
            if target in self._down or target not in self.peers:
                continue
            peer = self.peers[target]
            if kind == "timer":
                if self._timer_at.get(target) != when:
                    continue
                del self._timer_at[target]
                peer.handle_timer(self.now)
            elif isinstance(payload, _LinkMessage):
                sender, data = payload.sender, payload.data
                if not self.reachable(sender, target):
                    continue
                peer.receive_link(
                    data, sender, self.now, handshake_hash=self.handshake_hash(sender, target)
                )
            elif isinstance(payload, _Datagram):
                source, data = payload.source, payload.data
                sender_key = self._addresses.get(source)
                if sender_key is not None and not self.reachable(sender_key, target):
                    continue
                self.datagrams_delivered += 1
                self.bytes_received[target] = self.bytes_received.get(target, 0) + len(data)
                peer.receive_datagram(data, source, self.now)
            self._after_input(target)
        else:
            raise RuntimeError("simulation did not settle")
        self.now = max(self.now, deadline)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def act(self, key: PublicKey, action: Callable[[Peer], object]) -> None:
        """Run a local action on a peer now (e.g. ``lambda p: p.act(RaiseHand(), net.now)``)."""
        action(self.peers[key])
        self._after_input(key)

    def flush(self, key: PublicKey) -> None:
        """Send what ``key`` queued when called directly (outside :meth:`act`)."""
        self._after_input(key)

    # --- internals -------------------------------------------------------------------

    def _push(
        self,
        when: float,
        kind: str,
        target: PublicKey,
        payload: _LinkMessage | _Datagram | None,
    ) -> None:
        self._counter += 1
        heapq.heappush(self._heap, (when, self._counter, kind, target, payload))

    def _send_link(self, sender: PublicKey, target: PublicKey, data: bytes) -> None:
        self._push(
            self.now + self.link(sender, target).latency, "link", target, _LinkMessage(sender, data)
        )

    def _after_input(self, key: PublicKey) -> None:
        peer = self.peers[key]
        if key in self._down:
            peer.outbound()
            peer.events()
            return
        tamper = self.tamper.get(key)
        for item in peer.outbound():
            if isinstance(item, SendDatagram):
                for datagram in tamper(item) if tamper is not None else (item,):
                    self._send_datagram(key, datagram)
            elif isinstance(item, Broadcast):
                for target in item.recipients:
                    self._send_link(key, target, item.data)
            elif isinstance(item, SendTo):
                self._send_link(key, item.peer, item.data)
        for event in peer.events():
            if self.on_event is not None:
                self.on_event(key, event, self.now)
            else:
                self._events[key].append(event)
        deadline = peer.next_deadline()
        if deadline is not None and self._timer_at.get(key) != deadline:
            self._timer_at[key] = max(deadline, self.now)
            self._push(self._timer_at[key], "timer", key, None)

    def _send_datagram(self, sender: PublicKey, item: SendDatagram) -> None:
        target = self._addresses.get(item.address)
        if target is None:
            return
        model = self.link(sender, target)
        if model.loss and self._rng.random() < model.loss:
            self.datagrams_lost += 1
            return
        delay = model.latency
        if model.jitter:
            delay += self._rng.uniform(-model.jitter, model.jitter)
        source = self.peers[sender].media.address
        self._push(self.now + max(0.0, delay), "datagram", target, _Datagram(source, item.data))
