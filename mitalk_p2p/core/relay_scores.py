"""The host's record of how well each relay serves its children.

A child that leaves its parent tells the host why
(:class:`~.media_messages.ParentSwitched`).  Two reasons accuse the parent:
``CORRUPT`` (it passed on frames that failed verification) and ``LOSSY`` (it
answered probes but withheld most frames).  Every relay's score starts at 1,
falls with each accusation the host accepts, and climbs back slowly.  The tree
coordinator gives a relay scored under ``demote_below`` no children, and plans
lower-scored relays after better ones.

An accusation costs its maker nothing, so the host weighs it:

* only a member the plan places under the relay may accuse it;
* withheld frames are not held against a relay whose own place, or an
  ancestor's, changed moments ago: a repair upstream leaves gaps too;
* a member's accepted accusations are capped per ``accusation_window``: a member
  that finds fault with every parent it gets is more likely the fault itself;
* corruption reported by ``convict_after`` different members demotes the relay
  for as long as it stays in the room; one member's word only lowers its score
  for a while.

Refused accusations are counted, as every refused input is.  Memory is bounded
by the room's members: the coordinator forgets whoever leaves.
"""

from __future__ import annotations

import collections
from collections.abc import Collection

import attrs

from .identity import PublicKey
from .media_messages import SwitchReason

PENALTIES = {SwitchReason.CORRUPT: 1.0, SwitchReason.LOSSY: 0.35}
"""What one accepted accusation takes off a relay's score, by the child's reason."""


@attrs.frozen
class RelayScoreStatistics:
    scores: dict[PublicKey, float]
    """Relays scored below 1 (everyone else is at 1)."""
    demoted: tuple[PublicKey, ...]
    """Relays given no children now, in key order."""
    convicted: tuple[PublicKey, ...]
    """Relays demoted for as long as they stay, in key order."""
    accusations_accepted: int
    accusations_refused: dict[str, int]
    """Refused accusations by reason: "not-your-parent", "upstream-moved" or "too-many"."""


@attrs.define
class RelayScores:
    recovery_per_second: float = 1 / 120
    """Score a relay wins back per second without new accusations."""
    demote_below: float = 0.5
    """A relay scored under this gets no children."""
    convict_after: int = 2
    """Distinct members whose corruption reports demote a relay for good."""
    accusations_per_window: int = 3
    """Accusations accepted from one member per ``accusation_window``."""
    accusation_window: float = 60.0
    """Seconds over which a member's accusations are counted."""
    accepted: int = 0
    _scores: dict[PublicKey, tuple[float, float]] = attrs.Factory(dict)
    """Relay -> (score, when it was set); recovery is applied when read."""
    _corrupt_accusers: dict[PublicKey, set[PublicKey]] = attrs.Factory(dict)
    _convicted: set[PublicKey] = attrs.Factory(set)
    _recent: dict[PublicKey, collections.deque[float]] = attrs.Factory(dict)
    """Member -> when its last accepted accusations were made (at most the cap)."""
    _refused: collections.Counter[str] = attrs.Factory(collections.Counter)
    _now: float = 0.0

    def accuse(
        self,
        accuser: PublicKey,
        relay: PublicKey,
        reason: SwitchReason,
        now: float,
    ) -> bool:
        """Weigh ``accuser``'s report that ``relay`` failed it; return whether it counts.

        The caller has checked the accuser's standing (see :meth:`refuse`).
        Reasons that accuse no one (silence, a loop) are ignored and return False.
        """
        self._now = max(self._now, now)
        penalty = PENALTIES.get(reason)
        if penalty is None:
            return False
        recent = self._recent.setdefault(
            accuser, collections.deque(maxlen=self.accusations_per_window)
        )
        if len(recent) == recent.maxlen and now - recent[0] < self.accusation_window:
            self._refused["too-many"] += 1
            return False
        recent.append(now)
        self.accepted += 1
        self._scores[relay] = (max(0.0, self.score(relay, now) - penalty), now)
        if reason is SwitchReason.CORRUPT:
            accusers = self._corrupt_accusers.setdefault(relay, set())
            accusers.add(accuser)
            if len(accusers) >= self.convict_after:
                self._convicted.add(relay)
        return True

    def refuse(self, reason: str) -> None:
        """Count an accusation the caller refused (``reason`` names why)."""
        self._refused[reason] += 1

    def score(self, relay: PublicKey, now: float) -> float:
        """The relay's score at ``now``: 1 is spotless, 0 is the worst."""
        if relay in self._convicted:
            return 0.0
        entry = self._scores.get(relay)
        if entry is None:
            return 1.0
        value, since = entry
        return min(1.0, value + max(0.0, now - since) * self.recovery_per_second)

    def demoted(self, relay: PublicKey, now: float) -> bool:
        return self.score(relay, now) < self.demote_below

    def forget_all_but(self, members: Collection[PublicKey]) -> None:
        """Drop what is kept about peers no longer in the room (a rejoin starts afresh)."""
        for table in (self._scores, self._corrupt_accusers, self._recent):
            for key in [k for k in table if k not in members]:
                del table[key]
        for accusers in self._corrupt_accusers.values():
            accusers.intersection_update(members)
        self._convicted.intersection_update(members)

    def statistics(self, now: float | None = None) -> RelayScoreStatistics:
        """The scores at ``now`` (by default, the latest time an accusation was weighed)."""
        when = self._now if now is None else now
        known = sorted(self._scores.keys() | self._convicted)
        scores = {key: self.score(key, when) for key in known}
        low = {key: value for key, value in scores.items() if value < 1.0}
        return RelayScoreStatistics(
            scores=low,
            demoted=tuple(key for key, value in low.items() if value < self.demote_below),
            convicted=tuple(sorted(self._convicted)),
            accusations_accepted=self.accepted,
            accusations_refused=dict(self._refused),
        )
