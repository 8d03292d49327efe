"""The host's side of the fanout tree: collect offers, plan, tell members where they sit.

Members send the host a :class:`~.media_messages.RelayOffer` (media address,
relay capacity, RTT).  The host plans the tree with :func:`~.tree.plan_tree`,
keeping every edge that is still valid, and sends a
:class:`~.media_messages.TreePosition` only to members whose position changed.
Replanning waits ``replan_delay`` after a change so a burst of joins costs one
plan.  Reports from members repair the plan:

* ``ParentSwitched``: an orphan already moved to its backup; the host records
  the edge, and when the reason was corruption, stops using the old parent as a
  relay.
* ``ChildLost``: a parent stopped hearing a child.  If after a grace period the
  child still sits under that parent (it did not report a switch of its own),
  the host treats it as gone until it is heard from again.
* ``ChildFound``: a relay is probed by a child the host did not place there.
  The child is alive.  If after a grace period the plan still has it elsewhere
  (no switch report explained it), its position is sent again: the one sent
  before may never have arrived.

Any offer or report from a member, or a relay finding it, proves it alive: a
pending loss is cancelled, and a member already written off is placed again
and sent its position afresh.  This matters after the host itself was cut
off: it loses every child at once, and positions it sent meanwhile were lost.
A switch that would close a loop (two orphans that took each other as backup)
is refused, and the member gets its position again.
"""

from __future__ import annotations

import attrs

from .identity import PublicKey
from .media_messages import (
    ChildFound,
    ChildLost,
    MediaMessage,
    Neighbor,
    ParentSwitched,
    RelayOffer,
    SwitchReason,
    TreePosition,
)
from .tree import (
    Candidate,
    SwitchRefused,
    Tree,
    TreeLimits,
    adopt_switch,
    changed_positions,
    plan_tree,
)

DEFAULT_RTT_MS = 50.0


@attrs.define
class TreeCoordinator:
    root: PublicKey
    limits: TreeLimits = attrs.Factory(TreeLimits)
    replan_delay: float = 0.05
    """Seconds to wait after a change before replanning, so bursts coalesce."""
    lost_grace: float = 1.0
    """Seconds a reported-lost (or found-astray) child has to report a switch of its own."""
    tree: Tree | None = None
    version: int = 0
    replans: int = 0
    refused_switches: int = 0
    _members: frozenset[PublicKey] = frozenset()
    _offers: dict[PublicKey, RelayOffer] = attrs.Factory(dict)
    _demoted: set[PublicKey] = attrs.Factory(set)
    _unreachable: set[PublicKey] = attrs.Factory(set)
    _lost: dict[PublicKey, tuple[PublicKey, float]] = attrs.Factory(dict)
    _strays: dict[PublicKey, tuple[PublicKey, float]] = attrs.Factory(dict)
    """Children found under a relay the plan does not put them under: (relay, when)."""
    _dirty_at: float | None = None
    _sent: dict[PublicKey, TreePosition] = attrs.Factory(dict)

    # --- inputs --------------------------------------------------------------------

    def members_changed(self, members: frozenset[PublicKey], now: float) -> None:
        if members == self._members:
            return
        self._members = members
        for gone in [k for k in self._offers if k not in members]:
            del self._offers[gone]
            self._sent.pop(gone, None)
        self._unreachable &= set(members)
        self._demoted &= set(members)
        self._mark_dirty(now)

    def on_offer(self, sender: PublicKey, offer: RelayOffer, now: float) -> None:
        previous = self._offers.get(sender)
        self._offers[sender] = offer
        if self._heard_from(sender, now):
            return
        if previous is None or (previous.address, previous.capacity) != (
            offer.address,
            offer.capacity,
        ):
            self._mark_dirty(now)

    def on_report(self, sender: PublicKey, report: MediaMessage, now: float) -> None:
        tree = self.tree
        if tree is None or sender not in self._members:
            return
        self._heard_from(sender, now)
        if isinstance(report, ParentSwitched):
            if report.reason is SwitchReason.CORRUPT and report.old_parent != self.root:
                self._demoted.add(report.old_parent)
            if report.new_parent in tree and sender in tree:
                try:
                    self.tree = adopt_switch(tree, sender, report.new_parent, self.limits)
                except SwitchRefused:
                    # A loop or a leaf-only parent: the member gets its position again.
                    self.refused_switches += 1
                    self._sent.pop(sender, None)
            self._mark_dirty(now)
        elif isinstance(report, ChildLost):
            if tree.parents.get(report.child) == sender:
                self._lost[report.child] = (sender, now)
                self._mark_dirty(now + self.lost_grace)
        elif isinstance(report, ChildFound) and report.child in self._members:
            self._heard_from(report.child, now)
            if tree.parents.get(report.child) != sender:
                self._strays[report.child] = (sender, now)
                self._mark_dirty(now + self.lost_grace)

    # --- timers --------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._dirty_at

    def handle_timer(self, now: float) -> list[tuple[PublicKey, TreePosition]]:
        """Replan if due; return the positions to send (including the root's own)."""
        if self._dirty_at is None or now < self._dirty_at:
            return []
        self._dirty_at = None
        self._settle_lost(now)
        self._settle_strays(now)
        return self._replan()

    # --- internals -----------------------------------------------------------------

    def _heard_from(self, member: PublicKey, now: float) -> bool:
        """The member is alive: cancel a pending loss; re-admit it if it was written off.

        Returns whether it was re-admitted (its position is then sent afresh, since
        whatever was sent while it was out of reach may never have arrived).
        """
        self._lost.pop(member, None)
        if member not in self._unreachable:
            return False
        self._unreachable.discard(member)
        self._sent.pop(member, None)
        self._mark_dirty(now)
        return True

    def _mark_dirty(self, when: float) -> None:
        due = when + self.replan_delay
        self._dirty_at = due if self._dirty_at is None else min(self._dirty_at, due)

    def _settle_lost(self, now: float) -> None:
        tree = self.tree
        for child, (parent, since) in sorted(self._lost.items()):
            if now - since < self.lost_grace:
                self._mark_dirty(since + self.lost_grace)
                continue
            del self._lost[child]
            if tree is not None and tree.parents.get(child) == parent:
                self._unreachable.add(child)

    def _settle_strays(self, now: float) -> None:
        tree = self.tree
        for child, (relay, since) in sorted(self._strays.items()):
            if now - since < self.lost_grace:
                self._mark_dirty(since + self.lost_grace)
                continue
            del self._strays[child]
            if tree is not None and tree.parents.get(child) != relay:
                self._sent.pop(child, None)

    def _candidates(self) -> list[Candidate]:
        out = []
        for key in sorted(self._members):
            offer = self._offers.get(key)
            if key == self.root or offer is None or key in self._unreachable:
                continue
            capacity = 0 if key in self._demoted else offer.capacity
            rtt = float(offer.rtt_ms) if offer.rtt_ms else DEFAULT_RTT_MS
            out.append(Candidate(key, capacity, rtt))
        root_offer = self._offers.get(self.root)
        root_capacity = root_offer.capacity if root_offer else self.limits.fanout
        out.append(Candidate(self.root, root_capacity, 0.0))
        return out

    def _replan(self) -> list[tuple[PublicKey, TreePosition]]:
        old = self.tree
        new = plan_tree(self.root, self._candidates(), self.limits, previous=old)
        self.tree = new
        self.replans += 1
        changed = set(changed_positions(old, new))
        out = []
        for key in sorted(new.members):
            position = self._position(new, key)
            if key in changed or self._sent.get(key) != position:
                self.version += 1
                position = attrs.evolve(position, version=self.version)
                self._sent[key] = attrs.evolve(position, version=0)
                out.append((key, position))
        return out

    def _position(self, tree: Tree, key: PublicKey) -> TreePosition:
        place = tree.position(key)
        return TreePosition(
            version=0,
            parent=self._neighbor(place.parent),
            backup=self._neighbor(place.backup),
            children=tuple(n for c in place.children if (n := self._neighbor(c)) is not None),
            depth=min(place.depth, 255),
        )

    def _neighbor(self, key: PublicKey | None) -> Neighbor | None:
        if key is None:
            return None
        offer = self._offers.get(key)
        return Neighbor(key, offer.address) if offer is not None else None

    def set_own_offer(self, offer: RelayOffer, now: float) -> None:
        self.on_offer(self.root, offer, now)
