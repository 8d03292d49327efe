"""An in-memory control network for room replicas, on a virtual clock.

Every pair of peers that talk gets a real Noise XX link (so joins are bound to
a real handshake hash); messages are delivered in FIFO order with no latency.
Peers can be partitioned into groups, healed, and crashed.  The full network
model with latency, loss and bandwidth lives in the simulator proper; this is
the small, exact driver that the control-plane tests and the walk-through use.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

import attrs

from ..core.handshake import LinkEstablished, LinkHandshake, SendHandshakeMessage
from ..core.identity import Identity, PublicKey
from ..core.ids import RoomId
from ..core.replica import Broadcast, RoomReplica

MAX_DELIVERIES_PER_PUMP = 1_000_000


def establish_link(
    initiator: Identity, responder: Identity, room_id: RoomId
) -> tuple[LinkEstablished, LinkEstablished]:
    """Run a real Noise XX handshake between two identities, in memory."""
    dialer = LinkHandshake.initiator(initiator, room_id)
    answerer = LinkHandshake.responder(responder, room_id)
    message_2 = _only_message(answerer.receive(dialer.start()))
    outputs = dialer.receive(message_2)
    message_3 = _only_message(outputs)
    [dialer_done] = [o for o in outputs if isinstance(o, LinkEstablished)]
    [answerer_done] = [o for o in answerer.receive(message_3) if isinstance(o, LinkEstablished)]
    return dialer_done, answerer_done


def _only_message(outputs: Iterable[object]) -> bytes:
    [message] = [o for o in outputs if isinstance(o, SendHandshakeMessage)]
    return message.data


@attrs.define
class ControlNet:
    room_id: RoomId
    now: float = 0.0
    replicas: dict[PublicKey, RoomReplica] = attrs.Factory(dict)
    delivered: int = 0
    dropped: int = 0
    _links: dict[frozenset[PublicKey], bytes] = attrs.Factory(dict)
    _queue: collections.deque[tuple[PublicKey, PublicKey, bytes]] = attrs.Factory(collections.deque)
    _group: dict[PublicKey, int] = attrs.Factory(dict)
    _down: set[PublicKey] = attrs.Factory(set)

    def add(self, replica: RoomReplica) -> RoomReplica:
        self.replicas[replica.me] = replica
        return replica

    def handshake_hash(self, a: PublicKey, b: PublicKey) -> bytes:
        """The link between ``a`` and ``b``, set up on first use with a real handshake."""
        pair = frozenset((a, b))
        if pair not in self._links:
            ends = establish_link(
                self.replicas[a].identity, self.replicas[b].identity, self.room_id
            )
            assert ends[0].handshake_hash == ends[1].handshake_hash
            self._links[pair] = ends[0].handshake_hash
        return self._links[pair]

    def join(self, joiner: RoomReplica, via: PublicKey) -> None:
        """Dial ``via`` and send the join request on the fresh link."""
        self.add(joiner)
        link = self.handshake_hash(joiner.me, via)
        self._queue.append((joiner.me, via, joiner.join_message(link)))
        self.pump()

    # --- faults --------------------------------------------------------------

    def reachable(self, a: PublicKey, b: PublicKey) -> bool:
        if a in self._down or b in self._down:
            return False
        return self._group.get(a, 0) == self._group.get(b, 0)

    def partition(self, *groups: Iterable[PublicKey]) -> None:
        """Split the network: peers talk only within their group (others form group 0)."""
        self._group = {key: index + 1 for index, group in enumerate(groups) for key in group}

    def heal(self) -> None:
        self._group = {}

    def crash(self, key: PublicKey) -> None:
        """Silence a peer: it sends and receives nothing from now on."""
        self._down.add(key)

    def is_up(self, key: PublicKey) -> bool:
        return key not in self._down

    # --- running ------------------------------------------------------------------

    def pump(self) -> None:
        """Deliver messages until no replica has anything more to say."""
        for _ in range(MAX_DELIVERIES_PER_PUMP):
            self._collect()
            if not self._queue:
                return
            sender, recipient, data = self._queue.popleft()
            target = self.replicas.get(recipient)
            if target is None or not self.reachable(sender, recipient):
                self.dropped += 1
                continue
            self.delivered += 1
            target.receive(
                data, sender, self.now, handshake_hash=self.handshake_hash(sender, recipient)
            )
        raise RuntimeError("control network did not quiesce")

    def run_until(self, deadline: float) -> None:
        """Advance the clock to ``deadline``, firing timers and delivering as it goes."""
        self.pump()
        for _ in range(MAX_DELIVERIES_PER_PUMP):
            due = [
                (when, key)
                for key, replica in self.replicas.items()
                if self.is_up(key) and (when := replica.next_deadline()) is not None
            ]
            if not due:
                break
            when = min(w for w, _ in due)
            if when > deadline:
                break
            self.now = max(self.now, when)
            for moment, key in sorted(due, key=lambda item: (item[0], item[1])):
                if moment <= self.now:
                    self.replicas[key].handle_timer(self.now)
            self.pump()
        self.now = max(self.now, deadline)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def _collect(self) -> None:
        for key, replica in self.replicas.items():
            outbound = replica.outbound()
            if key in self._down:
                continue
            for item in outbound:
                targets = item.recipients if isinstance(item, Broadcast) else (item.peer,)
                for target in targets:
                    self._queue.append((key, target, item.data))
