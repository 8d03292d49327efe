"""An adaptive jitter buffer: for each playout slot, what the Opus decoder should do.

One :class:`JitterBuffer` serves one (listener, speaker) pair.  Frames come in
already verified and decrypted, with an unwrapped ``seq`` (+1 per transmitted
frame) and ``capture_time`` (seconds on the speaker's media clock; it jumps
forward over DTX silence while ``seq`` does not).  The buffer never decodes:
:meth:`JitterBuffer.pop` returns a decision (:class:`PlayFrame`,
:class:`RecoverWithFec`, :class:`Conceal`, :class:`Stretch` or :class:`Silence`)
and the caller owns the decoder.  Time is always passed in as ``now``.

**Delay model.**  The speaker's clock has an unknown offset from ours, so only
relative delay means anything: ``d = now - capture_time``.  The fastest recent
arrival, ``min(d)`` over the history, stands for the network's base delay, and a
frame's jitter is ``d - min(d)``.  The *target* is the configured percentile of
that jitter over the history, clamped to ``[min_target, max_target]``.

**Schedule.**  Playout time is ``capture_time + offset``.  A talk spurt starts
with ``offset = max(min(d) + target, d_first)``: the first frame plays one target
after the fastest path would have delivered it (for the very first frame, simply
arrival + target), or on arrival if it is later than that.  Later frames follow
at ``frame_seconds`` per slot, mapped by ``capture_time``: a frame whose
capture time lies beyond the current slot is preceded by :class:`Silence` slots
(DTX); a missing ``seq`` is a loss.  The *delay* is the headroom the schedule
gives above the fastest path, ``offset - min(d)``: a frame is on time when its
jitter is at most the delay.

**Running dry.**  A DTX pause and a hole in speech (loss, delay spike) look
the same until the next frame arrives, so an empty buffer at a slot gives
:class:`Silence` while the schedule keeps running.  When frames arrive, the
first one's capture time tells: beyond the current slot, it was a pause (not
counted); before it, the silent slots were a hole.  A hole counts as silent
concealment and the schedule moves back by its length, so the missing frame is
still recovered (FEC or PLC) or played and nothing is lost; the buffer is one
hole deeper for it.  After ``max_target`` of silence the talk spurt ends and
the buffer goes idle; if the next spurt begins past missing frames (an outage,
not a pause, since DTX does not advance ``seq``), that silence counts as silent
concealment too, and the frames lost in the outage count only as lost.

**Adaptation.**  The target grows as soon as the percentile does, and falls no
faster than ``shrink_rate`` seconds per second.  The delay follows it without
touching frames that carry speech:

* growth: at a slot whose frame is missing while later frames are buffered, if
  the delay is below the target the buffer waits one slot (:class:`Stretch`,
  played with PLC) instead of giving the frame up, which deepens it by one
  frame; holes (above) deepen it too, up to ``max_target``;
* shrinking: while the next buffered frame lies beyond a DTX pause, a silent
  slot is dropped whenever the delay exceeds the target by a frame or more; and
  each new talk spurt (after the buffer went idle) is scheduled afresh from the
  current target.  During continuous speech the delay never shrinks: no speech
  frame is ever dropped to cut latency.

**Accounting** follows W3C webrtc-stats names and units (samples at 48 kHz).
Samples rebuilt from in-band FEC are decoded from real data, so they count in
``fecRecoveredSamples`` and ``jitterBufferEmittedCount`` but not in
``concealedSamples``.  :class:`Stretch` slots are PLC output, so they count in
``concealedSamples`` as well as ``insertedSamplesForDeceleration``.  Unlike
webrtc-stats, duplicates count in ``packetsDiscarded`` (and in
``packetsDuplicated``).
"""

from __future__ import annotations

import bisect
import collections
import math

import attrs

from .errors import LocalProtocolError

SAMPLE_RATE = 48_000
"""Opus decodes at 48 kHz; all sample counts use this rate."""

_MAX_ABS_TIME = 1e9
"""Times (ours or the speaker's) beyond ±this many seconds (~31 years) are garbage."""
_EPSILON = 1e-9
"""Slack for float comparisons of times."""
_RECEIVED_WINDOW = 1024
"""Sequence numbers remembered to tell a duplicate from a late first copy."""


def _sane_time(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and abs(value) <= _MAX_ABS_TIME


@attrs.frozen(kw_only=True)
class JitterConfig:
    frame_seconds: float = 0.020
    """Duration of one Opus frame, and of one playout slot."""
    percentile: float = 0.95
    """The target follows this percentile (0 < p ≤ 1) of relative arrival delay."""
    min_target: float | None = None
    """Lowest target in seconds; None means one frame.  Never effectively below one frame."""
    max_target: float = 0.200
    """Highest target in seconds, however bad the network gets."""
    history: int = 250
    """Arrival delays remembered for the percentile and the base delay (~5 s at 20 ms)."""
    shrink_rate: float = 0.020
    """Seconds the target may fall per second once the network calms (it grows at once)."""
    max_frames: int = 64
    """Frames held at most; beyond this the oldest is dropped (and counted as discarded)."""

    def __attrs_post_init__(self) -> None:
        def finite(value: float) -> bool:
            return isinstance(value, int | float) and math.isfinite(value)

        if not finite(self.frame_seconds) or self.frame_seconds <= 0:
            raise LocalProtocolError(f"frame_seconds must be positive, not {self.frame_seconds}")
        if not finite(self.percentile) or not 0 < self.percentile <= 1:
            raise LocalProtocolError(f"percentile must be in (0, 1], not {self.percentile}")
        if self.min_target is not None and (not finite(self.min_target) or self.min_target < 0):
            raise LocalProtocolError(f"min_target must be >= 0, not {self.min_target}")
        if not finite(self.max_target) or self.max_target < self.floor:
            raise LocalProtocolError(
                f"max_target ({self.max_target}) is below the minimum target ({self.floor})"
            )
        if not finite(self.shrink_rate) or self.shrink_rate < 0:
            raise LocalProtocolError(f"shrink_rate must be >= 0, not {self.shrink_rate}")
        if self.history < 1 or self.max_frames < 2:
            raise LocalProtocolError("history must be >= 1 and max_frames >= 2")

    @property
    def samples_per_frame(self) -> int:
        return round(SAMPLE_RATE * self.frame_seconds)

    @property
    def floor(self) -> float:
        """The effective minimum target: ``min_target``, but at least one frame."""
        if self.min_target is None:
            return self.frame_seconds
        return max(self.frame_seconds, self.min_target)

    @property
    def resume_gap(self) -> int:
        """Slots in ``max_target``: the longest stall before a talk spurt ends, and the most
        missing frames a resuming spurt still covers with FEC/PLC (beyond: an outage)."""
        return max(1, math.ceil(self.max_target / self.frame_seconds - _EPSILON))


@attrs.frozen
class PlayFrame:
    """Decode ``payload``, the frame ``seq``, normally."""

    seq: int
    payload: bytes = attrs.field(repr=False)


@attrs.frozen
class RecoverWithFec:
    """Frame ``seq`` is missing but ``seq + 1`` is here: decode the FEC data in ``next_payload``.

    Frame ``seq + 1`` itself is still played at the next slot.
    """

    seq: int
    next_payload: bytes = attrs.field(repr=False)


@attrs.frozen
class Conceal:
    """Frame ``seq`` is missing and no FEC is available: run the decoder's PLC."""

    seq: int


@attrs.frozen
class Stretch:
    """No frame is given up: run PLC for one slot while the buffer deepens by one frame.

    The frame that was due is still expected and may be played at a later slot.
    """


@attrs.frozen
class Silence:
    """Nothing to decode: not started, between talk spurts, DTX, or the buffer ran dry.

    Not a concealment, unless the silence turns out to have fallen inside speech
    (see ``silentConcealedSamples``).
    """


Playout = PlayFrame | RecoverWithFec | Conceal | Stretch | Silence


@attrs.frozen(kw_only=True)
class JitterStatistics:
    """Counters named after W3C webrtc-stats (``RTCInboundRtpStreamStats``), plus extras.

    Sample counts are at 48 kHz.  The average buffering delay of emitted audio is
    ``jitterBufferDelay / jitterBufferEmittedCount``.
    """

    packetsReceived: int
    """Every frame handed to ``push``, accepted or not."""
    packetsLost: int
    """Sequence numbers, between the lowest and highest seen, of which no copy arrived."""
    packetsDiscarded: int
    """Frames refused or dropped: duplicate, late, invalid, absurdly far off, or overflow."""
    packetsDuplicated: int
    """Extra: copies of a frame already held, played or received late."""
    packetsLate: int
    """Extra: first copies that arrived after their slot was concealed or FEC-recovered."""
    jitterBufferDelay: float
    """Seconds each emitted sample spent in the buffer (arrival to pop), summed."""
    jitterBufferEmittedCount: int
    """Samples decoded from received data (played or FEC-recovered)."""
    jitterBufferTargetDelay: float
    """The target delay at each emitted sample, summed (seconds × samples)."""
    concealedSamples: int
    """Samples that stood in for missing audio: PLC, and silence that fell inside speech."""
    silentConcealedSamples: int
    """Silent slots that turned out to be a hole in speech rather than a DTX pause."""
    concealmentEvents: int
    """Runs of consecutive concealed slots."""
    insertedSamplesForDeceleration: int
    """Samples of :class:`Stretch` slots, inserted to deepen the buffer."""
    fecRecoveredSamples: int
    """Extra: samples rebuilt from the next frame's FEC data (not concealed)."""
    totalSamplesReceived: int
    """Samples played, FEC-recovered or concealed (silence during pauses excluded)."""
    currentTarget: float
    """Extra: the target delay now, in seconds."""
    currentDelay: float
    """Extra: headroom the schedule gives now above the fastest recent arrival, in seconds."""
    jitter: float
    """Extra: RFC 3550 interarrival jitter estimate, in seconds."""
    bufferedFrames: int
    """Extra: frames held right now."""


@attrs.frozen
class _Frame:
    capture: float
    arrival: float
    payload: bytes = attrs.field(repr=False)


@attrs.define
class JitterBuffer:
    """Reorders one speaker's frames and decides, slot by slot, what to decode.

    Call :meth:`push` for every arriving frame and :meth:`pop` at (or after)
    :meth:`next_playout`.  Deterministic: the same calls give the same answers.
    """

    config: JitterConfig = attrs.field(factory=JitterConfig)

    _frames: dict[int, _Frame] = attrs.field(init=False, factory=dict)
    # Arrival delays in arrival order, and the same values sorted.
    _delays: collections.deque[float] = attrs.field(init=False, factory=collections.deque)
    _sorted_delays: list[float] = attrs.field(init=False, factory=list)
    _target: float = attrs.field(init=False, default=0.0)
    _target_clock: float | None = attrs.field(init=False, default=None)

    # Playout state.  While playing, the next slot is due at ``_slot_time`` and
    # stands for capture time ``_cursor``; ``_slot_time - _cursor`` is the offset.
    _playing: bool = attrs.field(init=False, default=False)
    _next_seq: int | None = attrs.field(init=False, default=None)
    _cursor: float = attrs.field(init=False, default=0.0)
    _slot_time: float = attrs.field(init=False, default=0.0)
    _anchor: float | None = attrs.field(init=False, default=None)
    _stall: int = attrs.field(init=False, default=0)
    _idle_stall: int = attrs.field(init=False, default=0)
    """Silent slots played before the last talk spurt ended: a pause, or a long hole."""
    """Silent slots since the buffer ran dry mid-spurt (0: not stalled)."""
    _concealing: bool = attrs.field(init=False, default=False)

    # Arrival bookkeeping.
    _highest: int | None = attrs.field(init=False, default=None)
    _lowest: int | None = attrs.field(init=False, default=None)
    _unique: int = attrs.field(init=False, default=0)
    _last_accept: float = attrs.field(init=False, default=0.0)
    _recent: set[int] = attrs.field(init=False, factory=set)
    _recent_order: collections.deque[int] = attrs.field(init=False, factory=collections.deque)
    _previous_delay: float | None = attrs.field(init=False, default=None)
    _jitter: float = attrs.field(init=False, default=0.0)

    # Counters.
    _received: int = attrs.field(init=False, default=0)
    _discarded: int = attrs.field(init=False, default=0)
    _duplicated: int = attrs.field(init=False, default=0)
    _late: int = attrs.field(init=False, default=0)
    _delay_sum: float = attrs.field(init=False, default=0.0)
    _target_sum: float = attrs.field(init=False, default=0.0)
    _decoded_frames: int = attrs.field(init=False, default=0)
    _fec_frames: int = attrs.field(init=False, default=0)
    _concealed_frames: int = attrs.field(init=False, default=0)
    _stretched_frames: int = attrs.field(init=False, default=0)
    _silent_frames: int = attrs.field(init=False, default=0)
    _concealment_events: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._target = self.config.floor

    # ----------------------------------------------------------------- arrivals

    def push(self, seq: int, capture_time: float, payload: bytes, now: float) -> bool:
        """Offer one frame; False if it was discarded (and counted).

        Refused: invalid times (NaN, ±inf, absurd magnitudes), duplicates, frames
        whose slot already passed (late), and frames absurdly far from the
        stream.  Never raises on bad values.
        """
        self._received += 1
        if not isinstance(seq, int) or not _sane_time(capture_time) or not _sane_time(now):
            return self._discard()
        if seq in self._frames or seq in self._recent:
            self._duplicated += 1
            return self._discard()
        if self._out_of_range(seq, now):
            return self._discard()

        delay = now - capture_time
        self._record_delay(delay, now)
        self._mark_received(seq, now)
        if self._next_seq is not None and seq < self._next_seq:
            self._late += 1
            return self._discard()

        if len(self._frames) >= self.config.max_frames:
            oldest = min(self._frames)
            if seq < oldest:
                return self._discard()
            del self._frames[oldest]
            self._discard()
        self._frames[seq] = _Frame(capture_time, now, payload)
        if not self._playing and self._anchor is None:
            self._anchor = max(self._base_delay() + self._target, delay)
        return True

    def _discard(self) -> bool:
        self._discarded += 1
        return False

    def _out_of_range(self, seq: int, now: float) -> bool:
        """Whether ``seq`` is too far from the stream to be believed.

        Ahead, a speaker can have sent at most one frame per ``frame_seconds``
        since our last arrival (allowing 2× for clock rate and bursts) plus a
        buffer's worth.  Behind the playout point, more than ``max_frames`` is
        stale.
        """
        if self._highest is None or self._lowest is None:
            return False
        elapsed = max(0.0, now - self._last_accept)
        allowance = self.config.max_frames + 2 * elapsed / self.config.frame_seconds
        if seq - self._highest > allowance:
            return True
        low = self._lowest if self._next_seq is None else self._next_seq
        return low - seq > self.config.max_frames

    def _mark_received(self, seq: int, now: float) -> None:
        self._unique += 1
        self._last_accept = now
        self._highest = seq if self._highest is None else max(self._highest, seq)
        self._lowest = seq if self._lowest is None else min(self._lowest, seq)
        self._recent.add(seq)
        self._recent_order.append(seq)
        if len(self._recent_order) > _RECEIVED_WINDOW:
            self._recent.discard(self._recent_order.popleft())

    def _record_delay(self, delay: float, now: float) -> None:
        if self._previous_delay is not None:
            # RFC 3550, section 6.4.1: J += (|D| - J) / 16.
            self._jitter += (abs(delay - self._previous_delay) - self._jitter) / 16
        self._previous_delay = delay
        self._delays.append(delay)
        bisect.insort(self._sorted_delays, delay)
        if len(self._delays) > self.config.history:
            old = self._delays.popleft()
            del self._sorted_delays[bisect.bisect_left(self._sorted_delays, old)]
        self._refresh_target(now)

    # --------------------------------------------------------------- adaptation

    def _base_delay(self) -> float:
        return self._sorted_delays[0] if self._sorted_delays else 0.0

    def _percentile_target(self) -> float:
        config = self.config
        n = len(self._sorted_delays)
        if n == 0:
            return config.floor
        k = min(n - 1, max(0, math.ceil(config.percentile * n) - 1))
        spread = self._sorted_delays[k] - self._sorted_delays[0]
        return min(config.max_target, max(config.floor, spread))

    def _refresh_target(self, now: float) -> None:
        """Grow to the percentile at once; fall towards it at ``shrink_rate``."""
        elapsed = 0.0 if self._target_clock is None else max(0.0, now - self._target_clock)
        self._target_clock = now if self._target_clock is None else max(self._target_clock, now)
        decayed = self._target - self.config.shrink_rate * elapsed
        self._target = max(self._percentile_target(), decayed)

    def _delay(self) -> float:
        """Headroom of the running schedule above the fastest recent arrival."""
        return self._slot_time - self._cursor - self._base_delay()

    # ------------------------------------------------------------------ playout

    def next_playout(self) -> float | None:
        """When :meth:`pop` should next be called; None while idle with nothing buffered."""
        if self._playing:
            return self._slot_time
        plan = self._spurt_plan()
        return None if plan is None else plan[2]

    def _spurt_plan(self) -> tuple[int, float, float] | None:
        """(first seq, its capture time, its slot time) for a talk spurt starting now."""
        if not self._frames:
            return None
        first = min(self._frames)
        frame = self._frames[first]
        offset = self._anchor
        if offset is None:
            offset = frame.arrival - frame.capture + self._target
        start, cursor = first, frame.capture
        if self._next_seq is not None:
            gap = first - self._next_seq
            if 0 < gap <= self.config.resume_gap:
                # Frames lost just before the spurt resumed: give them slots (FEC/PLC).
                start, cursor = self._next_seq, frame.capture - gap * self.config.frame_seconds
        return start, cursor, cursor + offset

    def pop(self, now: float) -> Playout:
        """Decide one frame slot.  Call at or after :meth:`next_playout`.

        Called early (or with an invalid ``now``) it returns :class:`Silence`
        and consumes no slot.
        """
        if not _sane_time(now):
            return self._silence()
        self._refresh_target(now)
        if not self._playing:
            plan = self._spurt_plan()
            if plan is None or now < plan[2] - _EPSILON:
                return self._silence()
            self._count_long_hole()
            self._next_seq, self._cursor, slot_time = plan
            # Late to start (a late frame, or a caller popping off-beat): start now.
            self._slot_time = max(slot_time, now)
            self._playing = True
            self._anchor = None
        if now < self._slot_time - _EPSILON:
            return self._silence()
        return self._fill_slot(now)

    def _fill_slot(self, now: float) -> Playout:
        step = self.config.frame_seconds
        if self._stall and self._frames:
            self._end_stall()
        seq = self._next_seq
        if seq is None:  # not reachable while playing
            return self._silence()
        frame = self._frames.get(seq)

        if frame is not None and frame.capture > self._cursor + step / 2:
            # A DTX pause comes before this frame.  Silence costs nothing to drop,
            # so this is where an over-deep buffer gives back delay.
            skip = (
                self._delay() - self._target >= step - _EPSILON
                and frame.capture >= self._cursor + 1.5 * step
            )
            self._cursor += 2 * step if skip else step
            self._slot_time += step
            return self._silence()

        if frame is not None:
            del self._frames[seq]
            self._next_seq = seq + 1
            self._cursor = max(self._cursor, frame.capture) + step
            self._slot_time += step
            self._decoded_frames += 1
            self._emit(now, frame.arrival)
            return PlayFrame(seq, frame.payload)

        if not self._frames:
            # Ran dry: a DTX pause, or a hole in speech (loss, delay spike).  The
            # two look alike until the next frame arrives, so play silence and
            # keep the schedule running; _end_stall sorts it out.  A long stall
            # ends the talk spurt and the next one is scheduled afresh.
            if self._stall >= self.config.resume_gap:
                self._playing = False
                self._idle_stall, self._stall = self._stall, 0
            else:
                self._stall += 1
                self._cursor += step
                self._slot_time += step
            return self._silence()

        if self._delay() < self._target - _EPSILON:
            # Deepen by one slot instead of giving up on the frame.
            self._slot_time += step
            self._stretched_frames += 1
            self._conceal()
            return Stretch()

        self._next_seq = seq + 1
        self._cursor += step
        self._slot_time += step
        following = self._frames.get(seq + 1)
        if following is not None:
            self._fec_frames += 1
            self._emit(now, following.arrival)
            return RecoverWithFec(seq, following.payload)
        self._conceal()
        return Conceal(seq)

    def _end_stall(self) -> None:
        """Frames arrived after silent slots: were those slots a pause or a hole?

        If the frame that was due when the buffer ran dry belongs before the
        current slot, the silence fell inside speech: it counts as (silent)
        concealment, and the schedule moves back so no frame is lost, which
        deepens the buffer by the length of the hole.  Past ``max_target`` the
        frames whose slots went by are given up instead (counted as late).
        """
        step = self.config.frame_seconds
        seq = self._next_seq
        stalled, self._stall = self._stall, 0
        if seq is None:
            return
        first = min(self._frames)
        expected = self._frames[first].capture - (first - seq) * step
        hole = min(stalled, round((self._cursor - expected) / step))
        if hole <= 0:
            return  # a DTX pause: the frame is on schedule
        self._silent_frames += hole
        self._concealment_events += 1
        self._concealing = True
        room = self.config.max_target + step / 2 - self._delay()
        grow = min(hole, max(0, math.floor(room / step)))
        self._cursor -= grow * step
        for given_up in range(seq, seq + hole - grow):
            if self._frames.pop(given_up, None) is not None:
                self._late += 1
                self._discarded += 1
        self._next_seq = seq + hole - grow

    def _count_long_hole(self) -> None:
        """A talk spurt resumes after the buffer went idle: if frames are missing
        before it, the silence that ended the last spurt fell inside speech."""
        idle_stall, self._idle_stall = self._idle_stall, 0
        if self._next_seq is None or not self._frames or idle_stall == 0:
            return
        if min(self._frames) > self._next_seq:
            self._silent_frames += idle_stall
            self._concealment_events += 1

    def _emit(self, now: float, arrival: float) -> None:
        samples = self.config.samples_per_frame
        self._delay_sum += max(0.0, now - arrival) * samples
        self._target_sum += self._target * samples
        self._concealing = False

    def _conceal(self) -> None:
        self._concealed_frames += 1
        if not self._concealing:
            self._concealment_events += 1
        self._concealing = True

    def _silence(self) -> Silence:
        self._concealing = False
        return Silence()

    # --------------------------------------------------------------- statistics

    def statistics(self) -> JitterStatistics:
        samples = self.config.samples_per_frame
        lost = 0
        if self._highest is not None and self._lowest is not None:
            lost = max(0, self._highest - self._lowest + 1 - self._unique)
        if self._playing:
            delay = self._delay()
        elif self._anchor is not None:
            delay = self._anchor - self._base_delay()
        else:
            delay = 0.0
        emitted = self._decoded_frames + self._fec_frames
        return JitterStatistics(
            packetsReceived=self._received,
            packetsLost=lost,
            packetsDiscarded=self._discarded,
            packetsDuplicated=self._duplicated,
            packetsLate=self._late,
            jitterBufferDelay=self._delay_sum,
            jitterBufferEmittedCount=emitted * samples,
            jitterBufferTargetDelay=self._target_sum,
            concealedSamples=(self._concealed_frames + self._silent_frames) * samples,
            silentConcealedSamples=self._silent_frames * samples,
            concealmentEvents=self._concealment_events,
            insertedSamplesForDeceleration=self._stretched_frames * samples,
            fecRecoveredSamples=self._fec_frames * samples,
            totalSamplesReceived=(emitted + self._concealed_frames + self._silent_frames) * samples,
            currentTarget=self._target,
            currentDelay=delay,
            jitter=self._jitter,
            bufferedFrames=len(self._frames),
        )
