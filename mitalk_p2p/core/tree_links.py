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

A relay that passes on nothing at all leaves no gap in the counters.  For that
a child asks its backup parent for witness samples (:mod:`.witness`): a sparse
sample of the frames the backup verifies, on a path that avoids the parent.
When the samples run ahead of what the parent passed on by more than a repair
above it can explain, the child leaves it, again as :attr:`SwitchReason.LOSSY`.
A child that finds its parent lagging says so (``lagging``) to its backup, for
a denser sample, to its parent, and to its own children, which then allow
more time: the lag they see is not their parent's doing, and it is being dealt
with above (:meth:`TreeLinks._limit`).  As a backup, a peer keeps the requests
of the members it backs up (:class:`~.witness.WitnessTable`).
"""

from __future__ import annotations

import collections
import enum
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
from .witness import WitnessTable

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
    lagging: bool = False
    """Whether a parent's latest answer said that the lag below it is dealt with above (see
    :mod:`.witness`)."""
    lagging_id: int = 0
    """The probe id of the answer ``lagging`` comes from: an older one, reordered, is no news."""
    answered_at: float = float("-inf")
    """When the latest of a parent's answers arrived."""
    lagging_since: float = 0.0
    """When a parent's answers began to say ``lagging``."""

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


class _Verdict(enum.Enum):
    NONE = enum.auto()
    LAST_CALL = enum.auto()
    """Past the limit: probe the parent once more, and judge by its answer."""
    WITHHELD = enum.auto()


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
    withhold_frames: int = 50
    """Frames the witness samples may run ahead of the parent before this peer leaves it
    (or more while the parent is owed patience: see :meth:`_limit`)."""
    lagging_frames: int = 8
    """Lag at which this peer says its parent lags: to its backup, for a denser sample,
    and to its children, for patience."""
    witness_fresh: float = 2.0
    """Seconds a witness sample counts towards saying the parent lags."""
    witness_every: int = 15
    """Intervals between witness requests to the backup while the parent does not lag."""
    settle: float = 1.0
    """Seconds after leaving a parent during which this peer tells its children that it
    lags: its new parent is still catching up."""
    witness: WitnessTable = attrs.Factory(WitnessTable)
    """The members this peer sends witness samples to, as their backup."""
    lagging: bool = False
    """Whether this peer's parent lags behind the witness samples now."""
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
    _witness_due: int = 0
    """Intervals until the next witness request."""
    _witness_asked: PublicKey | None = None
    """The backup the last witness request went to."""
    _settled_at: float = float("-inf")
    """When this peer's last switch of parent has settled (see ``settle``)."""
    _last_call: float | None = None
    """When the parent's lag was first seen past the limit (see :meth:`_withheld`)."""
    _told: bool = False
    _dense_asked_at: float = float("-inf")
    """When a dense witness sample was last asked for."""
    """What this peer last told its children about lagging (see :meth:`_tell_children`)."""

    @property
    def dead_after(self) -> float:
        return self.interval * self.misses

    @property
    def _recent_probes(self) -> int:
        """Probe round trips in one ``lossy_window``."""
        return max(1, round(self.lossy_window / self.interval))

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

    def witness_from(self, address: str) -> bool:
        """Whether witness samples from ``address`` are wanted: it is the usable backup's."""
        backup = self._usable_backup()
        return backup is not None and backup.address == address

    def witness_sample(self, speaker: int, seq: int, now: float) -> bool:
        """A witness sample arrived: whether it would tell more than the parent and earlier
        samples did (only then is it checked and noted)."""
        parent = self.parent
        if parent is None:
            return False
        return parent.delivery is None or parent.delivery.witness_sample(speaker, seq, now)

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
        out: list[TreeOutcome] = []
        if position.backup != self.backup:
            self._witness_due = 0
            old = self._usable_backup()
            if old is not None and self._witness_asked == old.key:
                out.append(self._witness_probe(ProbeRole.WITNESS_END, old.address, now))
        self.backup = position.backup
        self.assigned = position.parent
        self._placed = {child.key for child in position.children}
        self._found_at = {k: t for k, t in self._found_at.items() if k not in self._placed}
        wanted = position.parent
        if wanted is None:
            self._set_parent(None)
        elif self.parent is None or self.parent.key != wanted.key:
            if self.parent is not None:
                self._settled_at = now + self.settle  # a move: the new parent catches up
            self._set_parent(Edge(wanted.key, wanted.address, last_heard=now))
            out.append(self._probe_parent(now))
        for child in position.children:
            if child.key not in self.children and child.key != self.me:
                self._add_child(Edge(child.key, child.address, last_heard=now))
        out.extend(self._tell_children(now))
        return out

    def on_probe(self, probe: Probe, address: str, now: float) -> list[TreeOutcome]:
        if probe.role is ProbeRole.CHILD:
            return self._on_child_probe(probe, address, now)
        if probe.role is ProbeRole.WITNESS:
            self._on_witness_request(probe, address, now)
            return []
        if probe.role is ProbeRole.WITNESS_END:
            self.witness.forget(probe.sender, address)
            return []
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
        if probe.probe_id > parent.lagging_id:
            if probe.lagging and not parent.lagging:
                parent.lagging_since = now
            parent.lagging, parent.lagging_id = probe.lagging, probe.probe_id
            parent.answered_at = now
        if parent.looped:
            # A parent below this peer is no way to the root: its answers prove nothing.
            return []
        parent.last_heard = now
        if parent.rooted:
            parent.rooted_at = now
        if (
            self._last_call is not None  # the answer to a last call: judge it at once
            and self._withheld(parent, self._lag(parent, now), now) is _Verdict.WITHHELD
        ):
            return self._fail_over(now, SwitchReason.LOSSY)
        return self._tell_children(now)

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
        self._delivery(parent).note(speaker, seq, now)

    def note_witness(self, speaker: int, seq: int, now: float) -> list[TreeOutcome]:
        """A verified witness sample (``speaker``'s counter ``seq``) came from the backup.

        Leaves a parent that lags ``withhold_frames`` behind it (more when it is owed
        patience: :meth:`_limit`) for the backup, once the parent's answer to a last
        call has not said that the lag is being dealt with above it.  The first sign
        of lag is acted on at once: the backup is asked for a denser sample, and the
        parent is probed (its answer says whether it lags itself).
        """
        parent = self.parent
        if parent is None:
            return []
        lag = self._delivery(parent).note_witness(speaker, seq, now)
        if lag < self.lagging_frames:
            return []
        out: list[TreeOutcome] = []
        if not self.lagging:
            self.lagging = True
            request = self._ask_witness(now)
            if request is not None:
                out.append(request)
            # Hear at once whether the parent says that it lags too.
            out.append(self._probe_parent(now))
        verdict = self._withheld(parent, lag, now)
        if verdict is _Verdict.WITHHELD:
            return self._fail_over(now, SwitchReason.LOSSY)
        if verdict is _Verdict.LAST_CALL and not out:
            out.append(self._probe_parent(now))
        out.extend(self._tell_children(now))
        return out

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
        self.witness.expire(now)
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
        elif (
            self._lossy(parent, now)
            or self._withheld(parent, self._lag(parent, now), now) is _Verdict.WITHHELD
        ):
            out.extend(self._fail_over(now, SwitchReason.LOSSY))
        else:
            out.append(self._probe_parent(now))
        parent = self.parent
        if parent is not None:
            self.lagging = self._lag(parent, now) >= self.lagging_frames
            request = self._ask_witness(now)
            if request is not None:
                out.append(request)
        out.extend(self._tell_children(now))
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
        """The parent withholds frames, and the backup is a place to go (not while the
        parent says that the loss below it is being dealt with above)."""
        backup = self.backup
        return (
            parent.delivery is not None
            and not self._excused(parent, now)
            and len(parent.outcomes) >= LOSSY_MIN_PROBES
            and backup is not None
            and backup.key != parent.key
            and backup.key not in self.children
            and parent.delivery.lossy(
                now, self.lossy_threshold, _expected_delivery(parent, self._recent_probes)
            )
        )

    def _delivery(self, parent: Edge) -> DeliveryMonitor:
        """The parent's delivery record, made at its first frame or witness sample."""
        delivery = parent.delivery
        if delivery is None:
            delivery = parent.delivery = DeliveryMonitor(
                self.lossy_window, max_floor=self.withhold_frames // 2
            )
        return delivery

    def _usable_backup(self) -> Neighbor | None:
        """The backup, if it is a place to go: neither the parent nor a child."""
        backup, parent = self.backup, self.parent
        if (
            backup is None
            or parent is None
            or backup.key == parent.key
            or backup.key in self.children
        ):
            return None
        return backup

    def _says_lagging(self, now: float) -> bool:
        """What this peer's answers tell its children: that the lag they may see is being
        dealt with above them.  Its parent lags behind its samples, or it moved moments ago,
        or its own parent says the same (a relay below a starved one may have no sample of
        its own: its backup can be starved too)."""
        parent = self.parent
        return (
            self.lagging
            or now < self._settled_at
            or (parent is not None and not parent.looped and self._excused(parent, now))
        )

    def _tell_children(self, now: float) -> list[TreeOutcome]:
        """Answers, unasked, to every child the moment this peer starts saying that it lags:
        the claim then reaches a subtree at the network's pace, not one probe interval per
        level, and is there before the children's own verdicts."""
        says = self._says_lagging(now)
        told, self._told = self._told, says
        if not says or told:
            return []
        return [self._probe(ProbeRole.PARENT, child, now) for child in self._ordered_children()]

    def _lag(self, parent: Edge, now: float) -> int:
        """How far the parent lags behind the recent witness samples, in frames."""
        delivery = parent.delivery
        return 0 if delivery is None else delivery.lag(now, self.witness_fresh)

    def _withheld(self, parent: Edge, lag: int, now: float) -> _Verdict:
        """Whether the parent withholds frames: it lags behind the samples by
        :meth:`_limit`, and its answer to a last call still does not say that the lag
        is being dealt with above it.  The last call (a probe) goes out a round trip's
        worth of frames before the limit, so the answer is in when the lag gets there;
        a lost answer only delays the verdict, and a parent that stops answering is
        left as silent."""
        limit = self._limit(parent, now)
        frame = self.settle / self.withhold_frames
        ahead = math.ceil(2 * (parent.rtt() or self.interval) / frame)
        if not self.lagging or lag < limit - ahead or self._usable_backup() is None:
            self._last_call = None
            return _Verdict.NONE
        if self._last_call is None:
            self._last_call = now
            return _Verdict.LAST_CALL
        if lag >= limit and parent.answered_at > self._last_call:
            return _Verdict.WITHHELD
        return _Verdict.NONE

    def _excused(self, parent: Edge, now: float) -> bool:
        """Whether the parent says that the lag below it is being dealt with above, and has
        not been saying so for longer than that can take honestly (``3 × settle``)."""
        return parent.lagging and now - parent.lagging_since < 3 * self.settle

    def _limit(self, parent: Edge, now: float) -> int:
        """How far the parent may lag behind the samples before it is left.

        ``withhold_frames``, or twice that when this edge lost probes lately (a burst
        may be taking frames too), or two and a half times that when the parent says
        the lag is being dealt with above it: above, the same lag may take the double
        time to settle.  A withholding relay can buy itself the longer time by either
        means (dropping its own answers, or saying so), but no more.
        """
        if self._excused(parent, now):
            return self.withhold_frames * 5 // 2
        outcomes = parent.outcomes
        recent = min(self._recent_probes, len(outcomes))
        lost = sum(1 for i in range(1, recent + 1) if not outcomes[-i])
        return self.withhold_frames * (2 if lost >= 2 else 1)

    def _ask_witness(self, now: float, *, dense: bool = False) -> SendDatagram | None:
        """A witness request to the backup, when one is due: every ``witness_every``
        intervals, at once for a new backup, and every interval while the parent lags.
        A ``dense`` one (a child sees this peer lag) goes at most once an interval."""
        backup = self._usable_backup()
        if backup is None:
            return None
        dense = dense or self.lagging
        if dense:
            if now - self._dense_asked_at < self.interval:
                return None
            self._dense_asked_at = now
        elif self._witness_due > 0 and backup.key == self._witness_asked:
            self._witness_due -= 1
            return None
        self._witness_due = self.witness_every - 1
        self._witness_asked = backup.key
        return self._witness_probe(ProbeRole.WITNESS, backup.address, now, lagging=dense)

    def _witness_probe(
        self, role: ProbeRole, address: str, now: float, *, lagging: bool = False
    ) -> SendDatagram:
        probe_id = self._next_probe_id
        self._next_probe_id += 1
        datagram = encode_probe(
            self.room_tag,
            self.me,
            self.version,
            role,
            probe_id,
            0,
            0,
            rooted=self.rooted(now),
            path=b"",
            lagging=lagging,
        )
        return SendDatagram(address, datagram)

    def _on_witness_request(self, probe: Probe, address: str, now: float) -> None:
        """A member that has this peer as its backup asks for samples (not a tree neighbour:
        those get every frame)."""
        sender, parent = probe.sender, self.parent
        neighbour = sender in self.children or (parent is not None and parent.key == sender)
        if sender != self.me and not neighbour:
            self.witness.ask(sender, address, probe.lagging, now)

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
        if probe.lagging and probe.sender in self.children and not self.lagging:
            # A child sees this peer lag.  Is this peer starved itself?  Its own backup's
            # samples, densely and at once, will tell (and then its answers say so).
            request = self._ask_witness(now, dense=True)
            if request is not None:
                out.append(request)
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
        self._settled_at = now + self.settle
        return [
            Switched(old.key, target.key, reason),
            self._probe_parent(now),
            *self._tell_children(now),
        ]

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
            # A parent's answer: the lag below is being dealt with above.  A child's probe:
            # the child sees this parent lag (the parent then checks its own backup).
            lagging=self._says_lagging(now) if role is ProbeRole.PARENT else self.lagging,
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
        self.lagging = False
        self._last_call = None
        if self.parent is not None:
            self._by_address.pop(self.parent.address, None)
        self.parent = edge
        if edge is not None:
            edge.rooted_at = edge.last_heard
            self.witness.forget(edge.key)
            self.children.pop(edge.key, None)
            self._found_at.pop(edge.key, None)
            self._by_address[edge.address] = edge.key

    def _add_child(self, edge: Edge) -> None:
        self._targets = None
        if self.parent is not None and self.parent.key == edge.key:
            return
        self.children[edge.key] = edge
        self._by_address[edge.address] = edge.key
        self.witness.forget(edge.key)

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


def _expected_delivery(parent: Edge, recent: int) -> float:
    """The share of frames a path delivers if each of its hops loses what this edge's probes do.

    Probe loss is counted over round trips, so one direction loses about
    ``1 - sqrt(1 - loss)``.  The hops are the parent and its ancestors, as far as
    its path reaches.  The loss is the worse of the whole record and its last
    ``recent`` probes (the span of the frames judged): a burst that silences the
    link for a moment takes probes with it, while a relay that withholds frames
    answers every probe.  The record counts one probe lost and one answered
    before any real one, so a young edge's few lucky probes do not pass for a
    clean path (raised to a power of the hops, they would).
    """
    outcomes = parent.outcomes
    loss = (outcomes.count(False) + 1) / (len(outcomes) + 2)
    if len(outcomes) >= recent:
        lost = sum(1 for i in range(1, recent + 1) if not outcomes[-i])
        loss = max(loss, lost / recent)
    one_way = math.sqrt(max(0.0, 1.0 - loss))
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
