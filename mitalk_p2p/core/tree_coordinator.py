"""The host's side of the fanout tree: collect offers, plan, tell members where they sit.

Members send the host a :class:`~.media_messages.RelayOffer` (media address,
relay capacity, RTT).  The host plans the tree with :func:`~.tree.plan_tree`,
keeping every edge that is still valid, and sends a
:class:`~.media_messages.TreePosition` only to members whose position changed.
Replanning waits ``replan_delay`` after a change so a burst of joins costs one
plan.  Reports from members repair the plan:

* ``ParentSwitched``: an orphan already moved to its backup; the host records
  the edge.  When the reason accuses the old parent (corruption, withheld
  frames), the host weighs it in the relay's score (:mod:`.relay_scores`): a
  relay scored low gets no children, and lower scores are planned after higher
  ones.
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
from .relay_scores import PENALTIES, RelayScores, RelayScoreStatistics
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
MIN_SCORE_WEIGHT = 0.1
"""Lowest score a relay's RTT is divided by when the planner orders relays."""
UPSTREAM_GRACE = 2.0
"""Seconds after a relay or one of its ancestors moved during which frames it failed to
pass on are blamed on the repair, not on the relay."""


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
    scores: RelayScores = attrs.Factory(RelayScores)
    """How well each relay served its children, by their reports."""
    _unreachable: set[PublicKey] = attrs.Factory(set)
    _lost: dict[PublicKey, tuple[PublicKey, float]] = attrs.Factory(dict)
    _strays: dict[PublicKey, tuple[PublicKey, float]] = attrs.Factory(dict)
    """Children found under a relay the plan does not put them under: (relay, when)."""
    _dirty_at: float | None = None
    _sent: dict[PublicKey, TreePosition] = attrs.Factory(dict)
    _now: float = 0.0
    """The latest time an input or timer brought."""
    _moved_at: dict[PublicKey, float] = attrs.Factory(dict)
    """When each member last changed parent, by its own report or by a new plan."""

    # --- inputs --------------------------------------------------------------------

    def members_changed(self, members: frozenset[PublicKey], now: float) -> None:
        if members == self._members:
            return
        self._members = members
        for gone in [k for k in self._offers if k not in members]:
            del self._offers[gone]
            self._sent.pop(gone, None)
        for gone in [k for k in self._moved_at if k not in members]:
            del self._moved_at[gone]
        self._unreachable &= set(members)
        self.scores.forget_all_but(members)
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
        self._now = max(self._now, now)
        if tree is None or sender not in self._members:
            return
        self._heard_from(sender, now)
        if isinstance(report, ParentSwitched):
            if report.reason in PENALTIES and report.old_parent != self.root:
                self._weigh(sender, report, tree, now)
            self._moved_at[sender] = now
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

    def _weigh(self, sender: PublicKey, report: ParentSwitched, tree: Tree, now: float) -> None:
        """Hold a child's complaint against its parent, unless the child has no standing."""
        relay = report.old_parent
        if tree.parents.get(sender) != relay:
            self.scores.refuse("not-your-parent")
        elif report.reason is SwitchReason.LOSSY and self._moved_lately(tree, relay, now):
            self.scores.refuse("upstream-moved")
        else:
            self.scores.accuse(sender, relay, report.reason, now)

    def _moved_lately(self, tree: Tree, relay: PublicKey, now: float) -> bool:
        """Whether ``relay`` or an ancestor of it changed parent within the grace period."""
        moved = self._moved_at
        for key in tree.path_to_root(relay):
            when = moved.get(key)
            if when is not None and now - when < UPSTREAM_GRACE:
                return True
        return False

    # --- timers --------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._dirty_at

    def handle_timer(self, now: float) -> list[tuple[PublicKey, TreePosition]]:
        """Replan if due; return the positions to send (including the root's own)."""
        self._now = max(self._now, now)
        if self._dirty_at is None or now < self._dirty_at:
            return []
        self._dirty_at = None
        self._settle_lost(now)
        self._settle_strays(now)
        return self._replan(now)

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

    def _candidates(self, now: float) -> list[Candidate]:
        out = []
        scores = self.scores
        for key in sorted(self._members):
            offer = self._offers.get(key)
            if key == self.root or offer is None or key in self._unreachable:
                continue
            score = scores.score(key, now)
            capacity = 0 if score < scores.demote_below else offer.capacity
            rtt = float(offer.rtt_ms) if offer.rtt_ms else DEFAULT_RTT_MS
            if score < 1.0:
                rtt /= max(score, MIN_SCORE_WEIGHT)
            out.append(Candidate(key, capacity, rtt))
        root_offer = self._offers.get(self.root)
        root_capacity = root_offer.capacity if root_offer else self.limits.fanout
        out.append(Candidate(self.root, root_capacity, 0.0))
        return out

    def _replan(self, now: float) -> list[tuple[PublicKey, TreePosition]]:
        old = self.tree
        new = plan_tree(self.root, self._candidates(now), self.limits, previous=old)
        self.tree = new
        self.replans += 1
        changed = set(changed_positions(old, new))
        for key in changed:
            if old is None or key not in old or old.parent(key) != new.parent(key):
                self._moved_at[key] = now
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

    def relay_score(self, key: PublicKey, now: float | None = None) -> float:
        """``key``'s score as a relay (1 is spotless), at ``now`` or the latest time seen."""
        return self.scores.score(key, self._now if now is None else now)

    def score_statistics(self) -> RelayScoreStatistics:
        """Relay scores, demotions and refused accusations, at the latest time seen."""
        return self.scores.statistics(self._now)
