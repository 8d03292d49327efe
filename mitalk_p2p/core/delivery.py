"""How completely a parent delivers the room's frames, read from the speakers' own counters.

A speaker numbers its frames, one more per frame it sends, and signs the number,
so a child sees which frames its parent never passed on: counters 7 then 10 from
one speaker mean two frames missing.  A relay that keeps answering probes (so it
never looks silent) while it withholds most frames is caught this way, and its
children move to their backup parents.

Three things make honest paths look lossy, and none may pass for a dropping
relay:

* a repair upstream (a crashed relay above the parent) leaves one long gap and
  then a clean stream, so each gap counts at most :data:`MAX_GAP` missing frames;
* reordering delivers a frame after a later one, so a late frame fills the slot
  its gap left;
* a lossy network loses frames on every hop, so the loss is judged against what
  the path's hops explain (the caller's ``expected`` delivery: as if every hop
  lost as much as the probes on this edge do).  Only loss beyond that blames the
  parent.

The counters are the only evidence: a relay that passes on nothing at all of a
speaker leaves no gap to read, and from its children's side looks like a speaker
who is quiet.  Such a relay is left only when it stops answering probes too.

The monitor keeps, per speaker heard through this parent, the highest counter
and a few counts per time bucket over a short window: constant work per frame
and memory bounded by the room's speakers.
"""

from __future__ import annotations

import collections

import attrs

MAX_GAP = 10
"""Most missing frames one jump in a speaker's counter counts for.

Kept well under ``threshold * MIN_EXPECTED`` (0.8 × 20 by default), so one long gap
followed by the fewest frames that make a verdict never reads as a dropping relay.
"""
MIN_EXPECTED = 20
"""Frames that must have been due in the window before its loss means anything."""


@attrs.define
class _Speaker:
    """One speaker's frames through this edge: the highest counter, and counts per bucket."""

    highest: int
    counts: collections.deque[list[int]] = attrs.Factory(collections.deque)
    """Per bucket, oldest first: [bucket number, in order, late, missing]."""


@attrs.define
class DeliveryMonitor:
    """Frames due and frames received on one parent edge, per speaker, over ``window`` seconds.

    Each speaker is judged on its own, so a relay that thins out one speaker while
    passing on the others is caught as surely as one that thins out everyone.
    """

    window: float = 1.0
    buckets: int = 5
    _speakers: dict[int, _Speaker] = attrs.Factory(dict)
    """By speaker index."""

    def note(self, speaker: int, seq: int, now: float) -> None:
        """A verified frame of ``speaker`` with counter ``seq`` arrived through this edge."""
        known = self._speakers.get(speaker)
        if known is None:
            known = self._speakers[speaker] = _Speaker(seq)
            self._bucket(known, now)[1] += 1
            return
        counts = self._bucket(known, now)
        if seq > known.highest:
            counts[3] += min(seq - known.highest - 1, MAX_GAP)
            counts[1] += 1
            known.highest = seq
        else:
            counts[2] += 1

    def loss(self, now: float | None = None) -> tuple[int, float]:
        """(frames due, fraction missing) for the worst-served speaker over the window.

        The window ends at ``now``, or without it at the last frame heard.
        """
        worst = (0, 0.0)
        for known in self._speakers.values():
            due, loss = self._loss(known, now)
            if due >= MIN_EXPECTED and (loss, due) > (worst[1], worst[0]):
                worst = (due, loss)
        return worst

    def lossy(self, now: float, threshold: float, expected: float = 1.0) -> bool:
        """Whether, for some speaker, ``threshold`` of the frames due went missing unexplained.

        ``expected`` is the fraction of frames the path would deliver anyway; the
        loss beyond it must reach ``threshold``, over at least :data:`MIN_EXPECTED`
        frames due.
        """
        if expected <= 0.0:
            return False
        for known in self._speakers.values():
            due, loss = self._loss(known, now)
            if due >= MIN_EXPECTED and 1.0 - (1.0 - loss) / expected >= threshold:
                return True
        return False

    @property
    def speakers(self) -> int:
        """Speakers whose counters this edge tracks (for bounds checks)."""
        return len(self._speakers)

    def _loss(self, known: _Speaker, now: float | None) -> tuple[int, float]:
        counts = known.counts
        if not counts:
            return 0, 0.0
        oldest = (self._number(now) if now is not None else counts[-1][0]) - self.buckets
        fresh = late = missing = 0
        for number, in_order, filled, gaps in counts:
            if number > oldest:
                fresh += in_order
                late += filled
                missing += gaps
        due = fresh + missing
        if not due:
            return 0, 0.0
        return due, max(0, missing - late) / due

    def _number(self, now: float) -> int:
        return int(now * self.buckets // self.window)

    def _bucket(self, known: _Speaker, now: float) -> list[int]:
        number = self._number(now)
        counts = known.counts
        if counts and counts[-1][0] == number:
            return counts[-1]
        while counts and counts[0][0] <= number - self.buckets:
            counts.popleft()
        fresh = [number, 0, 0, 0]
        counts.append(fresh)
        return fresh
