"""How completely a parent delivers the room's frames, read from the speakers' own counters.

A speaker numbers its frames, one more per frame it sends, and signs the number,
so a child sees which frames its parent never passed on: counters 7 then 10 from
one speaker mean two frames missing.  A relay that keeps answering probes (so it
never looks silent) while it withholds most frames is caught this way, and its
children move to their backup parents.

Three things make honest paths look lossy, and none may pass for a dropping
relay:

* a repair upstream (a crashed relay above the parent) leaves one long gap and
  then a clean stream, so each gap counts at most :data:`MAX_GAP` missing frames.
  A repair makes one such gap, though, and a relay that passes on a frame every
  second or so makes one after another: :data:`LONG_GAPS` gaps of
  :data:`LONG_GAP` frames or more within ``3 × window`` count as withholding;
* reordering delivers a frame after a later one, so a late frame fills the slot
  its gap left;
* a lossy network loses frames on every hop, so the loss is judged against what
  the path's hops explain (the caller's ``expected`` delivery: as if every hop
  lost as much as the probes on this edge do).  Only loss beyond that blames the
  parent.

The gaps alone cannot catch a relay that passes on nothing at all of a speaker
(or a frame now and then): no gap shows, and from its children's side it looks
like a speaker who is quiet.  For that the monitor also takes *witness
samples*: frames of the same speakers that the child's backup parent sends it
on its own path (:mod:`.witness`).  They are signed by their speakers, so each
one proves that its speaker got at least that far.  The parent's *lag* is how
far the samples run ahead of the highest counter the parent passed on (or,
before the parent passed on any of that speaker, of the first sample seen under
it).  The counters make that count frames the speaker really sent, so a pause
in speech never reads as lag.

Two paths rarely take equally long, so an honest parent whose path is longer
than the backup's lags by a few frames all the time.  That standing lag is
measured (the least lag of the last :data:`FLOOR_PERIOD` to twice that many
seconds, where a sample the parent had already matched shows none) and
taken off: what the caller judges is the *excess* lag, frames the parent is
behind beyond its usual.  The floor is capped (``max_floor``), so a relay that
delays every frame to build one up buys itself only that much.  The caller
compares the excess with how long an honest parent can go without a frame (a
repair above it).

The monitor keeps, per speaker heard through this parent or its backup, the
highest counter from each, and a few counts per time bucket over a short
window: constant work per frame and memory bounded by the room's speakers.
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
LONG_GAP = 2 * MAX_GAP
"""A gap at least this long (in frames the path should have delivered: the gap times the
``expected`` delivery) is no network loss: a repair above the parent, or withholding."""
LONG_GAPS = 3
"""Long gaps within ``3 × window`` that make a verdict (a repair upstream makes one)."""
FLOOR_PERIOD = 5.0
"""Seconds per period of the standing lag's running minimum (it covers one to two)."""
_NO_FLOOR = 1 << 62


@attrs.define
class _Speaker:
    """One speaker's frames through this edge: the highest counter, and counts per bucket."""

    highest: int
    """The highest counter the parent passed on; -1 while it has passed on none."""
    counts: collections.deque[list[int]] = attrs.Factory(collections.deque)
    """Per bucket, oldest first: [bucket number, in order, late, missing]."""
    witnessed: int = -1
    """The highest counter in a verified witness sample; -1 while there is none."""
    witness_base: int = -1
    """The first witness sample's counter: where the lag counts from before the parent
    passed on any of this speaker's frames."""
    witnessed_at: float = 0.0
    """When ``witnessed`` last rose."""
    long_gaps: collections.deque[tuple[float, int]] | None = None
    """The last :data:`LONG_GAPS` gaps of :data:`LONG_GAP` frames or more: (when, frames)."""
    floors: list[int] = attrs.Factory(lambda: [-1, _NO_FLOOR, _NO_FLOOR])
    """The standing lag: [period number, least lag in that period, least in the one before]."""

    def lag(self) -> int:
        """Frames the witness samples prove sent beyond what the parent passed on."""
        if self.witnessed < 0:
            return 0
        reference = self.highest if self.highest >= 0 else self.witness_base
        return max(0, self.witnessed - reference)

    def floor(self) -> int:
        """The least lag lately (none while there is no sample to tell)."""
        least = min(self.floors[1], self.floors[2])
        return 0 if least == _NO_FLOOR else least

    def observe(self, lag: int, now: float) -> None:
        """One sample's lag, towards the running minimum."""
        floors = self.floors
        period = int(now // FLOOR_PERIOD)
        if period != floors[0]:
            floors[2] = floors[1] if period == floors[0] + 1 else _NO_FLOOR
            floors[0], floors[1] = period, _NO_FLOOR
        if lag < floors[1]:
            floors[1] = lag


@attrs.define
class DeliveryMonitor:
    """Frames due and frames received on one parent edge, per speaker, over ``window`` seconds.

    Each speaker is judged on its own, so a relay that thins out one speaker while
    passing on the others is caught as surely as one that thins out everyone.
    """

    window: float = 1.0
    buckets: int = 5
    max_floor: int = 25
    """The most standing lag (in frames) taken off a witness sample's lag."""
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
        if known.highest < 0:
            # Known so far from witness samples only: the parent's first frame opens no gap.
            known.highest = seq
            counts[1] += 1
        elif seq > known.highest:
            gap = seq - known.highest - 1
            if gap:
                counts[3] += min(gap, MAX_GAP)
                if gap >= LONG_GAP:
                    if known.long_gaps is None:
                        known.long_gaps = collections.deque(maxlen=LONG_GAPS)
                    known.long_gaps.append((now, gap))
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
        frames due.  Or the parent left :data:`LONG_GAPS` long gaps lately.
        """
        if expected <= 0.0:
            return False
        for known in self._speakers.values():
            due, loss = self._loss(known, now)
            if due >= MIN_EXPECTED and 1.0 - (1.0 - loss) / expected >= threshold:
                return True
            if known.long_gaps is not None and self._gap_after_gap(known, now, expected):
                return True
        return False

    def witness_sample(self, speaker: int, seq: int, now: float) -> bool:
        """A witness sample arrived, not yet checked: whether it would tell anything new.

        Only a sample beyond both the parent's frames and the earlier samples is
        worth checking (a signature) and noting.  One the parent had already
        matched (most of them, from an honest parent) shows no lag at all, which
        the standing lag counts.
        """
        known = self._speakers.get(speaker)
        if known is None:
            return True
        if seq <= known.highest:
            known.observe(0, now)
            return False
        return seq > known.witnessed

    def note_witness(self, speaker: int, seq: int, now: float) -> int:
        """A verified witness sample of ``speaker``: the parent's excess lag behind it."""
        known = self._speakers.get(speaker)
        if known is None:
            known = self._speakers[speaker] = _Speaker(-1)
        if known.witness_base < 0:
            known.witness_base = seq
        if seq > known.witnessed:
            known.witnessed = seq
            known.witnessed_at = now
        lag = known.lag()
        excess = max(0, lag - min(known.floor(), self.max_floor))
        if known.highest >= 0:  # a lag from the first sample says nothing about the paths
            known.observe(lag, now)
        return excess

    def lag(self, now: float, fresh: float) -> int:
        """The parent's largest excess lag over the speakers sampled in the last ``fresh`` s."""
        worst = 0
        for known in self._speakers.values():
            if known.witnessed >= 0 and now - known.witnessed_at <= fresh:
                worst = max(worst, known.lag() - min(known.floor(), self.max_floor))
        return worst

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

    def _gap_after_gap(self, known: _Speaker, now: float, expected: float) -> bool:
        """:data:`LONG_GAPS` long gaps lately: a relay that passes on a frame now and then."""
        assert known.long_gaps is not None
        since = now - 3 * self.window
        long = [gap for at, gap in known.long_gaps if at >= since and gap * expected >= LONG_GAP]
        return len(long) >= LONG_GAPS

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
