"""One peer's edges in the fanout tree: probes, liveness, RTT, loss, and failover.

A child probes its parent every ``interval``; the parent answers each probe.
The child's probes double as a standing request ("I am your child: forward me
the room's frames"), so a backup parent adopts an orphan the moment its first
probe arrives, before the host has even heard of the switch.  An edge silent for
``misses`` intervals is dead: a child then moves to its backup parent on its
own; a parent stops forwarding to the child.

Loops.  Orphans pick their backups on their own, so two of them can pick each
other (both lost the same parent and each is the other's backup), or a longer
ring can close.  A parent's answer therefore carries its path to the root (its
ancestors, nearest first) and whether that path reaches the root over live
edges.  These rules keep the links a tree:

* a child that finds itself in its parent's path is in a loop: those answers
  are no sign of life, so the parent soon counts as silent;
* a relay never adopts one of its own ancestors as a child;
* an orphan whose backup fails too (or turns out to be in a loop) goes back to
  the parent the host assigned and waits there; it never wanders further;
* a peer under a backup whose path has not reached the root for
  ``detached_misses`` intervals goes back to its assigned parent too.  This
  catches rings longer than a probe's path and any other dead end.

Both ends of a loop see it at once and both step back, so no race needs
breaking.

A relay that drops a silent child reports it lost (:class:`ChildDropped`).  A
relay probed by a child that the host did not place under it, or that it has
dropped since, reports that child seen (:class:`ChildSeen`), and again every
``stray_misses`` intervals until a position from the host accounts for it
(reports sent while the host was out of reach are lost).  The host then knows
the child is alive and where it really hangs, whether it was cut off for a
while or never got a position sent to it.

A parent can also stay alive and still fail its children: a relay that answers
probes but passes on few of the frames.  A child reads the speakers' frame
counters on what arrives from its parent (:mod:`.delivery`); when most of the
frames due over ``lossy_window`` never came, it moves to its backup parent and
says why (:attr:`SwitchReason.LOSSY`).  It never leaves for a worse place on
that ground: without a usable backup it stays and waits for the host.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable

import attrs

from .delivery import DeliveryMonitor
from .identity import PUBLIC_KEY_SIZE, PublicKey
from .media_events import SendDatagram
from .media_messages import (
    MAX_PROBE_PATH,
    Neighbor,
    Probe,
    ProbeRole,
    SwitchReason,
    TreePosition,
    encode_probe,
    path_holds,
    path_keys,
)

RTT_SAMPLES = 16
LOSS_WINDOW = 64
LOSSY_MIN_PROBES = 10
"""Probe round trips an edge must have seen before its frame loss is judged (so that the
probes' own loss, which excuses a lossy network, is measured)."""
MAX_ADOPTED_CHILDREN = 64
"""Most children a relay forwards to, assigned or adopted mid-repair: bounds work per frame."""


@attrs.frozen
class LinkStatistics:
    peer: PublicKey
    role: str  # "parent" or "child"
    rtt_ms: float | None
    loss: float
    """Fraction of recent probes that got no answer (parent) or never arrived (child)."""
    media_loss: float | None = None
    """Fraction of the frames due through a parent over the last window that never came."""


@attrs.define
class Edge:
    key: PublicKey
    address: str
    last_heard: float
    rtt_samples: collections.deque[float] = attrs.Factory(
        lambda: collections.deque(maxlen=RTT_SAMPLES)
    )
    outcomes: collections.deque[bool] = attrs.Factory(lambda: collections.deque(maxlen=LOSS_WINDOW))
    sent_at: dict[int, float] = attrs.Factory(dict)
    last_id_seen: int = 0
    last_seen_at: float = 0.0
    corrupt_frames: int = 0
    path: bytes = b""
    """A parent's path to the root, as its last answer gave it (in its wire form)."""
    rooted: bool = False
    """Whether a parent's last answer said its path reaches the root (and not through us)."""
    rooted_at: float = 0.0
    """When a parent last answered with a path to the root, or else when it became parent."""
    looped: bool = False
    """Whether a parent's last answer named this peer among its ancestors."""
    delivery: DeliveryMonitor | None = None
    """The frames a parent passed on, by the speakers' counters (made at the first frame)."""

    def rtt(self) -> float | None:
        return _median(self.rtt_samples) if self.rtt_samples else None

    def loss(self) -> float:
        if not self.outcomes:
            return 0.0
        return self.outcomes.count(False) / len(self.outcomes)

    def note_incoming_id(self, probe_id: int, now: float) -> None:
        """Count gaps in the peer's probe ids as losses (child edges, seen from the parent)."""
        if self.last_id_seen and probe_id > self.last_id_seen:
            gap = min(probe_id - self.last_id_seen - 1, LOSS_WINDOW)
            self.outcomes.extend([False] * gap)
        if probe_id > self.last_id_seen:
            self.outcomes.append(True)
            self.last_id_seen = probe_id
            self.last_seen_at = now


@attrs.frozen
class Switched:
    """The parent edge failed and this peer moved to ``new`` (tell the host)."""

    old: PublicKey
    new: PublicKey
    reason: SwitchReason


@attrs.frozen
class ChildDropped:
    child: PublicKey


@attrs.frozen
class ChildSeen:
    """A child the host did not place here (or that was dropped since) probes this peer."""

    child: PublicKey


TreeOutcome = SendDatagram | Switched | ChildDropped | ChildSeen


@attrs.define
class TreeLinks:
    me: PublicKey
    room_tag: bytes
    interval: float = 0.2
    misses: int = 3
    detached_misses: int = 25
    """Intervals a peer stays under a backup whose path does not reach the root.

    Real loops are seen in the paths within a few intervals; this is the net for
    rings longer than a probe's path and other dead ends.  It waits longer than
    a host succession usually takes, so a chain of orphans under a crashed host
    waits for the successor's positions instead of going back to the dead host.
    """
    stray_misses: int = 10
    """Intervals between reports of a child that the host has not placed here."""
    lossy_threshold: float = 0.8
    """Fraction of the frames due through the parent that, missing, make this peer leave it."""
    lossy_window: float = 1.0
    """Seconds of frames over which that fraction is measured."""
    version: int = 0
    parent: Edge | None = None
    backup: Neighbor | None = None
    assigned: Neighbor | None = None
    """The parent the host assigned last: where an orphan with nowhere better waits."""
    children: dict[PublicKey, Edge] = attrs.Factory(dict)
    next_tick: float = 0.0
    _next_probe_id: int = 1
    _by_address: dict[str, PublicKey] = attrs.Factory(dict)
    _targets: list[str] | None = None
    """Forwarding addresses, children by key then the parent; rebuilt when an edge changes."""
    _placed: set[PublicKey] = attrs.Factory(set)
    """Children the last position from the host put here and that were not dropped since."""
    _found_at: dict[PublicKey, float] = attrs.Factory(dict)
    """When each child the host did not place here was last reported found."""
    _path: bytes | None = None
    """This peer's own path in its wire form, rebuilt when the parent or its path changes."""

    @property
    def dead_after(self) -> float:
        return self.interval * self.misses

    # --- queries -----------------------------------------------------------------

    def neighbor_at(self, address: str) -> PublicKey | None:
        return self._by_address.get(address)

    def forward_addresses(self, arrived_from: str | None) -> list[str]:
        """Every live tree edge except the one a frame arrived on."""
        if self._targets is None:
            self._targets = [edge.address for edge in self._ordered_children()]
            if self.parent is not None:
                self._targets.append(self.parent.address)
        return [address for address in self._targets if address != arrived_from]

    def statistics(self) -> list[LinkStatistics]:
        out = []
        if self.parent is not None:
            p = self.parent
            media_loss = p.delivery.loss()[1] if p.delivery is not None else None
            out.append(LinkStatistics(p.key, "parent", _ms(p.rtt()), p.loss(), media_loss))
        for child in self._ordered_children():
            out.append(LinkStatistics(child.key, "child", _ms(child.rtt()), child.loss()))
        return out

    def median_rtt_ms(self) -> int:
        samples = [rtt for edge in self._edges() if (rtt := edge.rtt()) is not None]
        return round(_median(samples) * 1000) if samples else 0

    def next_deadline(self) -> float:
        return self.next_tick

    def path(self) -> tuple[PublicKey, ...]:
        """This peer's ancestors, its parent first, as far as a probe carries them."""
        return path_keys(self._own_path())

    def rooted(self, now: float) -> bool:
        """Whether this peer's path reaches the root over edges that are alive now."""
        parent = self.parent
        if parent is None:
            return True
        return parent.rooted and now - parent.last_heard < self.dead_after

    # --- inputs ------------------------------------------------------------------

    def apply_position(self, position: TreePosition, now: float) -> list[TreeOutcome]:
        """Adopt a new assignment from the host."""
        self.version = position.version
        self.backup = position.backup
        self.assigned = position.parent
        self._placed = {child.key for child in position.children}
        self._found_at = {k: t for k, t in self._found_at.items() if k not in self._placed}
        out: list[TreeOutcome] = []
        wanted = position.parent
        if wanted is None:
            self._set_parent(None)
        elif self.parent is None or self.parent.key != wanted.key:
            self._set_parent(Edge(wanted.key, wanted.address, last_heard=now))
            out.append(self._probe_parent(now))
        for child in position.children:
            if child.key not in self.children and child.key != self.me:
                self._add_child(Edge(child.key, child.address, last_heard=now))
        return out

    def on_probe(self, probe: Probe, address: str, now: float) -> list[TreeOutcome]:
        if probe.role is ProbeRole.CHILD:
            return self._on_child_probe(probe, address, now)
        parent = self.parent
        if parent is None or probe.sender != parent.key:
            return []
        self._move(parent, address)
        sent = parent.sent_at.pop(probe.echo_id, None)
        if sent is not None:
            parent.rtt_samples.append(max(0.0, now - sent - probe.echo_hold_us / 1e6))
            parent.outcomes.append(True)
        parent.last_id_seen, parent.last_seen_at = probe.probe_id, now
        # The path is kept even from a loop, so that the loop shows in this peer's path too.
        if probe.path != parent.path:
            parent.path = probe.path
            self._path = None
        parent.looped = path_holds(probe.path, self.me)
        parent.rooted = probe.rooted and not parent.looped
        if parent.looped:
            # A parent below this peer is no way to the root: its answers prove nothing.
            return []
        parent.last_heard = now
        if parent.rooted:
            parent.rooted_at = now
        return []

    def heard_from(self, address: str, now: float) -> None:
        """Any authentic frame from a neighbour also proves it is alive (unless it is looped)."""
        key = self._by_address.get(address)
        if key is None:
            return
        if self.parent is not None and self.parent.key == key:
            if not self.parent.looped:
                self.parent.last_heard = now
        elif (child := self.children.get(key)) is not None:
            child.last_heard = now

    def note_delivery(self, address: str, speaker: int, seq: int, now: float) -> None:
        """A verified frame (``speaker``'s counter ``seq``) came from ``address``."""
        parent = self.parent
        if parent is None or parent.address != address:
            return
        delivery = parent.delivery
        if delivery is None:
            delivery = parent.delivery = DeliveryMonitor(self.lossy_window)
        delivery.note(speaker, seq, now)

    def note_corrupt(self, address: str, threshold: int, now: float) -> list[TreeOutcome]:
        """A frame from ``address`` failed verification; past ``threshold`` leave that parent."""
        key = self._by_address.get(address)
        parent = self.parent
        if key is None or parent is None or key != parent.key:
            return []
        parent.corrupt_frames += 1
        if parent.corrupt_frames < threshold:
            return []
        return self._fail_over(now, SwitchReason.CORRUPT)

    def tick(self, now: float) -> list[TreeOutcome]:
        """Probe the parent, fail over from a silent or detached one, drop silent children."""
        if now < self.next_tick:
            return []
        self.next_tick = now + self.interval
        out: list[TreeOutcome] = []
        for child in self._ordered_children():
            if now - child.last_heard >= self.dead_after:
                self._remove_child(child.key)
                self._placed.discard(child.key)
                self._found_at.pop(child.key, None)
                out.append(ChildDropped(child.key))
        parent = self.parent
        if parent is None:
            return out
        if now - parent.last_heard >= self.dead_after:
            reason = SwitchReason.DETACHED if parent.looped else SwitchReason.SILENT
            out.extend(self._fail_over(now, reason))
        elif self._detached(parent, now):
            out.extend(self._fail_over(now, SwitchReason.DETACHED))
        elif self._lossy(parent, now):
            out.extend(self._fail_over(now, SwitchReason.LOSSY))
        else:
            out.append(self._probe_parent(now))
        return out

    def parent_left(self, now: float) -> list[TreeOutcome]:
        """The parent left the room: go to the backup now rather than wait for its silence.

        A graceful departure then costs the subtree the frames of one switch
        instead of ``misses`` intervals and a replan.  The switch is reported as
        ``SILENT``: the parent will be, and that accuses it of nothing.
        """
        if self.parent is None:
            return []
        return self._fail_over(now, SwitchReason.SILENT)

    def parent_deadline(self) -> float | None:
        """When the parent will count as dead if nothing more is heard."""
        return None if self.parent is None else self.parent.last_heard + self.dead_after

    # --- internals ---------------------------------------------------------------

    def _detached(self, parent: Edge, now: float) -> bool:
        """Under a parent the host did not assign, whose path has long missed the root."""
        assigned = self.assigned
        return (
            assigned is not None
            and assigned.key != parent.key
            and now - parent.rooted_at >= self.interval * self.detached_misses
        )

    def _lossy(self, parent: Edge, now: float) -> bool:
        """The parent withholds frames, and the backup is a place to go."""
        backup = self.backup
        return (
            parent.delivery is not None
            and len(parent.outcomes) >= LOSSY_MIN_PROBES
            and backup is not None
            and backup.key != parent.key
            and backup.key not in self.children
            and parent.delivery.lossy(now, self.lossy_threshold, _expected_delivery(parent))
        )

    def _on_child_probe(self, probe: Probe, address: str, now: float) -> list[TreeOutcome]:
        if probe.sender == self.me:
            return []
        child = self.children.get(probe.sender)
        parent = self.parent
        if parent is not None and (
            probe.sender == parent.key or path_holds(parent.path, probe.sender)
        ):
            # An ancestor asking to hang below this peer would close a loop.  Refuse it,
            # but answer: it finds itself in this peer's path and moves on.
            if child is not None:
                self._remove_child(probe.sender)
            child = Edge(probe.sender, address, last_heard=now)
        elif child is None:
            if len(self.children) >= MAX_ADOPTED_CHILDREN:
                return []
            child = Edge(probe.sender, address, last_heard=now)
            self._add_child(child)
        else:
            self._move(child, address)
        child.last_heard = now
        sent = child.sent_at.pop(probe.echo_id, None)
        if sent is not None:
            child.rtt_samples.append(max(0.0, now - sent - probe.echo_hold_us / 1e6))
        child.note_incoming_id(probe.probe_id, now)
        out: list[TreeOutcome] = [self._probe(ProbeRole.PARENT, child, now)]
        if probe.sender not in self._placed and probe.sender in self.children:
            reported = self._found_at.get(probe.sender)
            if reported is None or now - reported >= self.interval * self.stray_misses:
                self._found_at[probe.sender] = now
                out.append(ChildSeen(probe.sender))
        return out

    def _fail_over(self, now: float, reason: SwitchReason) -> list[TreeOutcome]:
        """Leave the parent for the backup, else for the assigned parent, else stay and wait.

        A backup that is this peer's child would close a loop at once and is
        refused.  An orphan whose backup is spent goes back to the parent the host
        assigned rather than anywhere new, so failures never walk it into its own
        subtree.
        """
        old = self.parent
        if old is None:
            return []
        target = self.backup
        if target is not None and target.key != old.key and target.key not in self.children:
            self.backup = None
        else:
            target = self.assigned
            if target is None or target.key == old.key or target.key in self.children:
                # Nowhere to go: keep probing the old parent and wait for the host.
                old.last_heard = now
                old.rooted = False
                return [self._probe_parent(now)]
        self._set_parent(Edge(target.key, target.address, last_heard=now))
        return [Switched(old.key, target.key, reason), self._probe_parent(now)]

    def _probe_parent(self, now: float) -> SendDatagram:
        assert self.parent is not None
        return self._probe(ProbeRole.CHILD, self.parent, now)

    def _probe(self, role: ProbeRole, edge: Edge, now: float) -> SendDatagram:
        probe_id = self._next_probe_id
        self._next_probe_id += 1
        if role is ProbeRole.CHILD and len(edge.sent_at) >= 2:
            # A probe still unanswered when two newer ones are out counts as lost.
            del edge.sent_at[min(edge.sent_at)]
            edge.outcomes.append(False)
        edge.sent_at[probe_id] = now
        if len(edge.sent_at) > 8:
            del edge.sent_at[min(edge.sent_at)]
        hold_us = round((now - edge.last_seen_at) * 1e6) if edge.last_id_seen else 0
        datagram = encode_probe(
            self.room_tag,
            self.me,
            self.version,
            role,
            probe_id,
            edge.last_id_seen,
            max(0, hold_us),
            rooted=self.rooted(now),
            # Only a parent's answer needs the path: a child's probe stays small.
            path=self._own_path() if role is ProbeRole.PARENT else b"",
        )
        return SendDatagram(edge.address, datagram)

    def _own_path(self) -> bytes:
        path = self._path
        if path is None:
            parent = self.parent
            if parent is None:
                path = b""
            else:
                path = parent.key.raw + parent.path[: (MAX_PROBE_PATH - 1) * PUBLIC_KEY_SIZE]
            self._path = path
        return path

    def _move(self, edge: Edge, address: str) -> None:
        """A neighbour's packets now come from ``address`` (its NAT binding or port changed)."""
        if edge.address == address:
            return
        if self._by_address.get(edge.address) == edge.key:
            del self._by_address[edge.address]
        edge.address = address
        self._by_address[address] = edge.key
        self._targets = None

    def _set_parent(self, edge: Edge | None) -> None:
        self._targets = None
        self._path = None
        if self.parent is not None:
            self._by_address.pop(self.parent.address, None)
        self.parent = edge
        if edge is not None:
            edge.rooted_at = edge.last_heard
            self.children.pop(edge.key, None)
            self._found_at.pop(edge.key, None)
            self._by_address[edge.address] = edge.key

    def _add_child(self, edge: Edge) -> None:
        self._targets = None
        if self.parent is not None and self.parent.key == edge.key:
            return
        self.children[edge.key] = edge
        self._by_address[edge.address] = edge.key

    def _remove_child(self, key: PublicKey) -> None:
        self._targets = None
        edge = self.children.pop(key, None)
        if edge is not None and self._by_address.get(edge.address) == key:
            del self._by_address[edge.address]

    def _ordered_children(self) -> list[Edge]:
        return [self.children[key] for key in sorted(self.children)]

    def _edges(self) -> list[Edge]:
        edges = self._ordered_children()
        if self.parent is not None:
            edges.append(self.parent)
        return edges


def _expected_delivery(parent: Edge) -> float:
    """The share of frames a path delivers if each of its hops loses what this edge's probes do.

    Probe loss is counted over round trips, so one direction loses about
    ``1 - sqrt(1 - loss)``.  The hops are the parent and its ancestors, as far as
    its path reaches.
    """
    one_way = math.sqrt(max(0.0, 1.0 - parent.loss()))
    hops = 1 + len(parent.path) // PUBLIC_KEY_SIZE
    return one_way**hops


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _median(values: Iterable[float]) -> float:
    """The median as :func:`statistics.median` computes it, without its generality.

    Called for every roster change and timer tick, where the library function's
    type dispatch costs more than the few samples it sorts.
    """
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
