"""The adaptive jitter buffer, driven on simulated time with seeded networks."""

from __future__ import annotations

import math
import random

import attrs
import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from mitalk_p2p.core.errors import LocalProtocolError
from mitalk_p2p.core.jitter import (
    Conceal,
    JitterBuffer,
    JitterConfig,
    JitterStatistics,
    PlayFrame,
    Playout,
    RecoverWithFec,
    Silence,
    Stretch,
)

FRAME = 0.020
SPF = 960  # samples per 20 ms frame at 48 kHz
BASE_DELAY = 0.100


@attrs.frozen
class Arrival:
    time: float
    seq: int
    capture: float

    @property
    def payload(self) -> bytes:
        return self.seq.to_bytes(4, "big")


@attrs.frozen
class Slot:
    time: float
    playout: Playout
    target: float
    delay: float


def drive(
    buffer: JitterBuffer,
    arrivals: list[Arrival],
    *,
    cadence: float | None = None,
    end: float | None = None,
) -> list[Slot]:
    """Deliver ``arrivals`` and pop slots, in time order (a push wins a tie).

    Without ``cadence`` the buffer is popped exactly at ``next_playout()``; with
    it, like an audio device, every ``cadence`` seconds until ``end``.
    """
    pending = sorted(arrivals, key=lambda a: a.time)
    slots: list[Slot] = []
    clock = -math.inf
    tick = 0.0
    i = 0
    for _ in range(1_000_000):
        due = buffer.next_playout() if cadence is None else tick
        if i < len(pending) and (due is None or pending[i].time <= due):
            a = pending[i]
            clock = max(clock, a.time)
            buffer.push(a.seq, a.capture, a.payload, a.time)
            i += 1
            continue
        if due is None or (end is not None and due > end):
            return slots
        clock = max(clock, due)
        tick += cadence or 0.0
        playout = buffer.pop(clock)
        stats = buffer.statistics()
        slots.append(Slot(clock, playout, stats.currentTarget, stats.currentDelay))
    raise AssertionError("the simulation did not finish")


def stream(
    frames: int,
    *,
    seed: int = 0,
    jitter: float = 0.0,
    loss: float = 0.0,
    first_seq: int = 0,
    start: float = 0.0,
) -> list[Arrival]:
    """A continuous talk spurt: uniform ±``jitter`` on arrival, independent ``loss``."""
    rng = random.Random(seed)
    arrivals = []
    for n in range(frames):
        capture = start + n * FRAME
        delay = BASE_DELAY + rng.uniform(-jitter, jitter)
        if rng.random() >= loss:
            arrivals.append(Arrival(capture + delay, first_seq + n, capture))
    return arrivals


def seqs_of(slots: list[Slot], kind: type[PlayFrame | RecoverWithFec | Conceal]) -> list[int]:
    return [s.playout.seq for s in slots if isinstance(s.playout, kind)]


def consumed(slots: list[Slot]) -> list[int]:
    return [
        s.playout.seq for s in slots if isinstance(s.playout, PlayFrame | RecoverWithFec | Conceal)
    ]


def check_accounting(slots: list[Slot], stats: JitterStatistics) -> None:
    """Sample counters agree with the decisions handed out."""
    kinds = [type(s.playout) for s in slots]
    played, fec = kinds.count(PlayFrame), kinds.count(RecoverWithFec)
    concealed = kinds.count(Conceal) + kinds.count(Stretch)
    assert stats.silentConcealedSamples % SPF == 0
    silent = stats.silentConcealedSamples // SPF
    assert silent <= kinds.count(Silence)
    concealed += silent
    assert stats.jitterBufferEmittedCount == (played + fec) * SPF
    assert stats.fecRecoveredSamples == fec * SPF
    assert stats.concealedSamples == concealed * SPF
    assert stats.insertedSamplesForDeceleration == kinds.count(Stretch) * SPF
    assert stats.totalSamplesReceived == (played + fec + concealed) * SPF


def test_samples_per_frame_follow_the_frame_duration() -> None:
    assert JitterConfig().samples_per_frame == SPF
    assert JitterConfig(frame_seconds=0.010).samples_per_frame == 480
    assert JitterConfig(frame_seconds=0.040).samples_per_frame == 1920


@pytest.mark.parametrize(
    "kwargs",
    [
        {"frame_seconds": 0.0},
        {"frame_seconds": math.nan},
        {"percentile": 0.0},
        {"percentile": 1.5},
        {"min_target": 0.5},  # above max_target
        {"max_target": 0.010},  # below one frame
        {"shrink_rate": -1.0},
        {"history": 0},
        {"max_frames": 1},
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(LocalProtocolError):
        JitterConfig(**kwargs)  # type: ignore[arg-type]


def test_min_target_never_goes_below_one_frame() -> None:
    assert JitterConfig(min_target=0.001).floor == FRAME
    assert JitterConfig(min_target=0.060).floor == 0.060


def test_idle_buffer_has_no_deadline_and_pops_silence() -> None:
    buffer = JitterBuffer()
    assert buffer.next_playout() is None
    assert buffer.pop(0.0) == Silence()
    assert buffer.statistics().totalSamplesReceived == 0


def test_in_order_stream_without_jitter_plays_every_frame_once() -> None:
    buffer = JitterBuffer()
    arrivals = stream(500)
    slots = drive(buffer, arrivals)
    assert seqs_of(slots, PlayFrame) == list(range(500))
    assert all(isinstance(s.playout, PlayFrame) for s in slots[:500])
    # Ran dry: silent slots while the stream might resume, then idle.
    assert [s.playout for s in slots[500:]] == [Silence()] * 11
    assert buffer.next_playout() is None
    stats = buffer.statistics()
    assert stats.concealedSamples == stats.concealmentEvents == 0
    assert stats.currentTarget == FRAME
    assert stats.packetsReceived == 500
    assert stats.packetsLost == stats.packetsDiscarded == 0
    assert stats.jitter == pytest.approx(0.0, abs=1e-12)
    # Every frame waits exactly one target.
    assert stats.jitterBufferDelay / stats.jitterBufferEmittedCount == pytest.approx(FRAME)
    assert stats.jitterBufferTargetDelay / stats.jitterBufferEmittedCount == pytest.approx(FRAME)
    check_accounting(slots, stats)


def test_first_frame_is_scheduled_at_arrival_plus_target() -> None:
    buffer = JitterBuffer()
    assert buffer.push(7, 100.0, b"a", now=3.0)
    assert buffer.next_playout() == pytest.approx(3.0 + FRAME)
    assert buffer.pop(3.01) == Silence()  # early: no slot consumed
    assert buffer.pop(3.0 + FRAME) == PlayFrame(7, b"a")


def test_reordered_frames_play_in_sequence() -> None:
    buffer = JitterBuffer(JitterConfig(min_target=0.060))
    arrivals = [Arrival(BASE_DELAY + n * FRAME, n, n * FRAME) for n in range(20)]
    arrivals[5], arrivals[6] = attrs.evolve(arrivals[5], seq=6), attrs.evolve(arrivals[6], seq=5)
    arrivals = [
        attrs.evolve(
            a, capture=a.seq * FRAME, time=a.seq * FRAME + BASE_DELAY + 0.03 * (a.seq == 5)
        )
        for a in arrivals
    ]
    slots = drive(buffer, arrivals)
    assert seqs_of(slots, PlayFrame) == list(range(20))


def run_headline(*, duplicate_every: int | None = None) -> tuple[list[Slot], JitterBuffer, int]:
    """60 s of speech, ±30 ms uniform jitter, 10 % independent loss."""
    arrivals = stream(3_000, seed=2024, jitter=0.030, loss=0.10)
    duplicates = 0
    if duplicate_every is not None:
        copies = [
            attrs.evolve(a, time=a.time + 0.015) for a in arrivals if a.seq % duplicate_every == 0
        ]
        duplicates = len(copies)
        arrivals += copies
    buffer = JitterBuffer()
    return drive(buffer, arrivals), buffer, duplicates


def assert_headline(slots: list[Slot], buffer: JitterBuffer) -> float:
    stats = buffer.statistics()
    check_accounting(slots, stats)
    ratio = stats.concealedSamples / stats.totalSamplesReceived
    assert ratio < 0.12

    played = [*seqs_of(slots, PlayFrame), *seqs_of(slots, RecoverWithFec)]
    assert len(played) == len(set(played)), "a frame was played twice"
    # Each sequence number, from the first slot to the last frame received, is
    # accounted for exactly once: played, recovered with FEC, or concealed.
    order = consumed(slots)
    assert order == list(range(order[0], order[-1] + 1))
    assert order[0] <= 1  # the first received frame (seq 0 unless it was lost)
    assert order[-1] >= 2_990
    # The target settled near the 95th percentile of a 60 ms spread.
    assert 0.045 <= stats.currentTarget <= 0.065
    assert stats.jitter == pytest.approx(0.020, abs=0.004)  # E|U1 - U2| / 1 for ±30 ms ≈ 20 ms
    return ratio


def test_headline_jitter_and_loss() -> None:
    slots, buffer, _ = run_headline()
    ratio = assert_headline(slots, buffer)
    stats = buffer.statistics()
    assert stats.fecRecoveredSamples > 0
    # Loss is measured over the frames the sender sent from the first arrival on.
    assert 200 <= stats.packetsLost <= 400
    assert ratio < 0.05
    # Deterministic: the same inputs give the same decisions and counters.
    again, buffer_again, _ = run_headline()
    assert again == slots
    assert buffer_again.statistics() == stats


def test_headline_with_duplicates_over_a_second_path() -> None:
    slots, buffer, duplicates = run_headline(duplicate_every=5)
    assert_headline(slots, buffer)
    stats = buffer.statistics()
    assert duplicates > 500
    assert stats.packetsDuplicated == duplicates
    assert stats.packetsDiscarded >= duplicates
    assert stats.packetsReceived == len(stream(3_000, seed=2024, jitter=0.030, loss=0.10)) + (
        duplicates
    )


def test_headline_popped_by_an_audio_device_clock() -> None:
    """Popped every 20 ms regardless of next_playout(), as a sound card would."""
    buffer = JitterBuffer()
    arrivals = stream(3_000, seed=2024, jitter=0.030, loss=0.10)
    slots = drive(buffer, arrivals, cadence=FRAME, end=61.0)
    stats = buffer.statistics()
    check_accounting(slots, stats)
    assert stats.concealedSamples / stats.totalSamplesReceived < 0.05
    order = consumed(slots)
    assert order == list(range(order[0], order[-1] + 1))
    assert order[-1] >= 2_990
    # Holes in speech deepen the buffer, but never past max_target.
    assert max(s.delay for s in slots) <= 0.200 + FRAME / 2


def test_target_adapts_to_jitter_and_calms_down() -> None:
    rng = random.Random(7)
    arrivals = []
    for n in range(2_500):  # 50 s: calm, ±30 ms for 10 s, calm again
        capture = n * FRAME
        spread = 0.030 if 10.0 <= capture < 20.0 else 0.0
        arrivals.append(Arrival(capture + BASE_DELAY + rng.uniform(-spread, spread), n, capture))
    # A short pause in speech (DTX) at 40 s lets the buffer give back its delay.
    arrivals = [
        attrs.evolve(a, capture=a.capture + 0.5, time=a.time + 0.5) if a.capture >= 40.0 else a
        for a in arrivals
    ]
    buffer = JitterBuffer()
    slots = drive(buffer, arrivals)

    def target_at(t: float) -> float:
        return next(s.target for s in slots if s.time >= t)

    assert all(FRAME <= s.target <= 0.200 for s in slots)
    assert target_at(9.0) == FRAME
    assert target_at(11.0) >= 0.040  # grew within a second of the jitter starting
    assert target_at(19.5) >= 0.045
    assert target_at(30.0) <= 0.025  # back down within 10 s of calm
    assert target_at(35.0) == FRAME
    # The running delay grew with the target, and after the pause it is back to one frame.
    assert max(s.delay for s in slots if 15.0 <= s.time < 20.0) >= 0.045
    after_pause = [s for s in slots[:-1] if s.time >= 41.5]  # the last slot found it dry
    assert after_pause
    assert all(s.delay == pytest.approx(FRAME) for s in after_pause)
    order = consumed(slots)
    assert order == list(range(2_500))


def test_target_is_capped_under_chaos() -> None:
    buffer = JitterBuffer()
    arrivals = stream(1_000, seed=3, jitter=0.500)
    arrivals = [attrs.evolve(a, time=a.time + 0.5) for a in arrivals]  # keep delays positive
    slots = drive(buffer, arrivals)
    assert all(FRAME <= s.target <= 0.200 for s in slots)
    assert buffer.statistics().currentTarget == 0.200
    played = [*seqs_of(slots, PlayFrame), *seqs_of(slots, RecoverWithFec)]
    assert len(played) == len(set(played))
    assert buffer.statistics().bufferedFrames == 0


def test_dtx_pause_is_silence_not_concealment() -> None:
    first = [Arrival(n * FRAME + 0.050, n, n * FRAME) for n in range(50)]
    # The speaker goes quiet for 2 s: capture time jumps, seq does not.
    second = [Arrival(3.0 + n * FRAME + 0.050, 50 + n, 3.0 + n * FRAME) for n in range(50)]
    buffer = JitterBuffer()
    slots = drive(buffer, first + second, cadence=FRAME, end=5.0)
    assert seqs_of(slots, PlayFrame) == list(range(100))
    gap = [s for s in slots if 1.1 <= s.time <= 3.0]
    assert len(gap) > 90
    assert all(s.playout == Silence() for s in gap)
    stats = buffer.statistics()
    assert stats.concealedSamples == stats.concealmentEvents == 0
    assert stats.packetsLost == stats.packetsDiscarded == 0
    assert stats.totalSamplesReceived == 100 * SPF
    # The second burst is scheduled like the first: one target after arrival.
    first_of_second = next(s for s in slots if s.playout == PlayFrame(50, (50).to_bytes(4, "big")))
    assert 3.07 - 1e-9 <= first_of_second.time < 3.07 + FRAME


def test_short_dtx_gap_inside_a_deep_buffer_is_silence_slots() -> None:
    arrivals = [Arrival(n * FRAME + 0.050, n, n * FRAME) for n in range(10)]
    # Two frames' worth of DTX between seq 9 and seq 10: arrives while 9 is still buffered.
    arrivals += [Arrival(0.24 + n * FRAME + 0.050, 10 + n, 0.24 + n * FRAME) for n in range(10)]
    buffer = JitterBuffer(JitterConfig(min_target=0.100))
    slots = drive(buffer, arrivals)
    kinds = [type(s.playout) for s in slots]
    assert kinds == [PlayFrame] * 10 + [Silence] * 2 + [PlayFrame] * 10 + [Silence] * 11
    assert buffer.statistics().concealedSamples == 0


def test_dtx_pauses_give_back_excess_delay() -> None:
    # A stall releases the first six frames at once: the schedule starts 100 ms
    # deeper than the calm network that follows needs.
    arrivals = [Arrival(max(0.15, n * FRAME + 0.05), n, n * FRAME) for n in range(10)]
    # A five-frame DTX pause, short enough that seq 10 is buffered before it starts.
    arrivals += [Arrival(0.35 + k * FRAME, 10 + k, 0.30 + k * FRAME) for k in range(5)]
    # A long pause: the buffer runs dry and the next talk spurt is scheduled afresh.
    arrivals += [Arrival(2.05 + k * FRAME, 15 + k, 2.0 + k * FRAME) for k in range(5)]
    buffer = JitterBuffer(JitterConfig(history=4, shrink_rate=1.0))
    slots = drive(buffer, arrivals)
    assert consumed(slots) == list(range(20))
    assert all(isinstance(s.playout, PlayFrame | Silence) for s in slots)
    kinds = [type(s.playout) for s in slots]
    # Two of the five silent slots are dropped, one frame of delay each.
    assert kinds == [
        *[PlayFrame] * 10,
        *[Silence] * 3,
        *[PlayFrame] * 5,
        *[Silence] * 11,  # ran dry: a stall, then idle
        *[PlayFrame] * 5,
        *[Silence] * 11,
    ]
    delays = [round(s.delay, 6) for s in slots]
    assert delays[9] == 0.12 and delays[10:12] == [0.10, 0.08] and delays[17] == 0.08
    assert all(s.target == pytest.approx(FRAME) for s in slots[4:])
    assert delays[29:34] == [0.02] * 5  # the next talk spurt starts one target deep
    assert buffer.statistics().concealedSamples == 0


def test_buffer_deepens_by_stretching_when_frames_run_late() -> None:
    # From seq 50 on, every third frame takes a 60 ms detour.
    arrivals = [
        Arrival(n * FRAME + 0.05 + (0.06 if n >= 50 and n % 3 == 2 else 0.0), n, n * FRAME)
        for n in range(150)
    ]
    buffer = JitterBuffer()
    slots = drive(buffer, arrivals)
    decisions = [s.playout for s in slots if not isinstance(s.playout, PlayFrame | Silence)]
    # Before the target notices, the late frames are recovered from FEC; then the
    # buffer waits two slots (PLC) and every later detour arrives in time.
    assert decisions == [
        RecoverWithFec(50, (51).to_bytes(4, "big")),
        RecoverWithFec(53, (54).to_bytes(4, "big")),
        RecoverWithFec(56, (57).to_bytes(4, "big")),
        Stretch(),
        Stretch(),
    ]
    assert consumed(slots) == list(range(150))
    stats = buffer.statistics()
    assert stats.currentTarget == pytest.approx(0.060)
    assert max(s.delay for s in slots) == pytest.approx(0.060)
    assert stats.insertedSamplesForDeceleration == stats.concealedSamples == 2 * SPF
    assert stats.concealmentEvents == 1
    assert stats.packetsLate == 3
    check_accounting(slots, stats)


def test_hole_in_speech_is_silent_concealment_and_loses_nothing() -> None:
    # Frame 20 is lost and 21, 22 are slow, so the buffer runs dry at 20's slot.
    arrivals = [
        Arrival(n * FRAME + (0.09 if n in (21, 22) else 0.05), n, n * FRAME)
        for n in range(40)
        if n != 20
    ]
    buffer = JitterBuffer()
    slots = drive(buffer, arrivals)
    assert [s.playout for s in slots[19:23]] == [
        PlayFrame(19, (19).to_bytes(4, "big")),
        Silence(),  # nothing buffered: a pause or a hole, unknown yet
        Silence(),
        RecoverWithFec(20, (21).to_bytes(4, "big")),  # it was a hole: nothing is lost
    ]
    assert consumed(slots) == list(range(40))
    stats = buffer.statistics()
    assert stats.silentConcealedSamples == 2 * SPF
    assert stats.concealedSamples == 2 * SPF
    assert stats.concealmentEvents == 1
    assert slots[30].delay == pytest.approx(0.060)  # deeper by the two silent slots
    check_accounting(slots, stats)


def test_loss_with_next_frame_present_uses_fec() -> None:
    arrivals = [Arrival(n * FRAME + 0.050, n, n * FRAME) for n in range(10) if n != 4]
    buffer = JitterBuffer(JitterConfig(min_target=0.040))
    slots = drive(buffer, arrivals)
    assert [s.playout for s in slots[3:6]] == [
        PlayFrame(3, (3).to_bytes(4, "big")),
        RecoverWithFec(4, (5).to_bytes(4, "big")),
        PlayFrame(5, (5).to_bytes(4, "big")),
    ]
    stats = buffer.statistics()
    assert stats.fecRecoveredSamples == SPF
    assert stats.concealedSamples == 0
    assert stats.packetsLost == 1


def test_late_frame_after_its_slot_is_discarded() -> None:
    arrivals = [Arrival(n * FRAME + 0.050, n, n * FRAME) for n in range(12) if n not in (4, 5)]
    buffer = JitterBuffer(JitterConfig(min_target=0.060))
    slots = drive(buffer, arrivals)
    assert [s.playout for s in slots if isinstance(s.playout, Conceal | RecoverWithFec)] == [
        Conceal(4),
        RecoverWithFec(5, (6).to_bytes(4, "big")),
    ]
    stats = buffer.statistics()
    assert stats.concealmentEvents == 1
    assert stats.concealedSamples == SPF
    assert stats.packetsLost == 2
    # Frames 4 and 5 turn up after their slots: refused, counted, never played.
    assert not buffer.push(4, 4 * FRAME, b"late", now=1.0)
    assert not buffer.push(5, 5 * FRAME, b"late", now=1.0)
    assert buffer.next_playout() is None
    stats = buffer.statistics()
    assert stats.packetsDiscarded == stats.packetsLate == 2
    assert stats.packetsDuplicated == 0
    assert stats.packetsLost == 0  # they did arrive, just too late
    assert seqs_of(slots, PlayFrame) == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]


def test_frame_played_once_is_never_played_again() -> None:
    buffer = JitterBuffer()
    assert buffer.push(0, 0.0, b"a", now=0.05)
    assert buffer.push(1, FRAME, b"b", now=0.05 + FRAME)
    assert not buffer.push(1, FRAME, b"b", now=0.06 + FRAME)  # duplicate while held
    assert buffer.pop(0.07) == PlayFrame(0, b"a")
    assert not buffer.push(0, 0.0, b"a", now=0.08)  # replay of a played frame
    assert buffer.pop(0.09) == PlayFrame(1, b"b")
    assert buffer.pop(0.11) == Silence()
    stats = buffer.statistics()
    assert stats.packetsDuplicated == stats.packetsDiscarded == 2
    assert stats.packetsLate == 0


def test_frames_absurdly_far_ahead_are_refused() -> None:
    buffer = JitterBuffer()
    assert buffer.push(10, 0.0, b"a", now=0.05)
    assert not buffer.push(10 + 10**9, FRAME, b"b", now=0.06)
    assert not buffer.push(10 - 10**9, FRAME, b"b", now=0.06)
    # A real outage: after 60 s of nothing the stream may resume 3,000 frames on.
    assert buffer.push(3_010, 60.0, b"c", now=60.05)
    stats = buffer.statistics()
    assert stats.packetsDiscarded == 2
    assert stats.bufferedFrames == 2


def test_memory_is_bounded_without_pops() -> None:
    buffer = JitterBuffer()
    for n in range(10_000):
        buffer.push(n, n * FRAME, b"x" * 80, now=n * FRAME + 0.05)
    stats = buffer.statistics()
    assert stats.bufferedFrames == 64
    assert stats.packetsDiscarded == 10_000 - 64
    # The newest frames are kept; playout resumes with them.
    assert buffer.pop(1e6) == PlayFrame(10_000 - 64, b"x" * 80)


def test_outage_longer_than_the_resume_gap_restarts_the_stream() -> None:
    arrivals = [Arrival(n * FRAME + 0.050, n, n * FRAME) for n in range(10)]
    arrivals += [Arrival(n * FRAME + 0.050, n, n * FRAME) for n in range(100, 110)]
    buffer = JitterBuffer()
    slots = drive(buffer, arrivals)
    assert consumed(slots) == [*range(10), *range(100, 110)]
    stats = buffer.statistics()
    assert stats.packetsLost == 90
    # The silence played until the spurt ended was a hole in speech (frames are
    # missing after it); the rest of the outage is loss, not concealment.
    silent = buffer.config.resume_gap * buffer.config.samples_per_frame
    assert stats.silentConcealedSamples == silent
    assert stats.concealedSamples == silent
    assert stats.concealmentEvents == 1


def test_pause_longer_than_the_resume_gap_is_not_concealment() -> None:
    # DTX: the capture clock jumps 2 s but seq runs on, so nothing is missing.
    arrivals = [Arrival(n * FRAME + 0.050, n, n * FRAME) for n in range(10)]
    arrivals += [Arrival(2.0 + n * FRAME + 0.050, n, 2.0 + n * FRAME) for n in range(10, 20)]
    buffer = JitterBuffer()
    slots = drive(buffer, arrivals)
    assert consumed(slots) == list(range(20))
    stats = buffer.statistics()
    assert stats.packetsLost == 0
    assert stats.concealedSamples == 0
    assert stats.concealmentEvents == 0


times = st.one_of(
    st.floats(min_value=0.0, max_value=2.0),  # plausible: exercises playout
    st.floats(min_value=-1.0, max_value=30.0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e9, -1e9, 1e300, 5e-324]),
)
seq_numbers = st.one_of(
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=-5, max_value=80),
    st.integers(min_value=-(2**70), max_value=2**70),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), seq_numbers, times, st.binary(max_size=3), times),
        st.tuples(st.just("pop"), times),
    ),
    max_size=100,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=operations,
    config=st.sampled_from(
        [
            JitterConfig(),
            JitterConfig(max_frames=4, history=8, min_target=0.05),
            JitterConfig(max_target=0.04, max_frames=3, history=2, shrink_rate=10.0),
        ]
    ),
)
def test_garbage_never_raises_and_never_replays(
    ops: list[tuple[object, ...]], config: JitterConfig
) -> None:
    buffer = JitterBuffer(config)
    accepted: dict[int, bytes] = {}
    played: list[int] = []
    consumed_seqs: list[int] = []
    for op in ops:
        if op[0] == "push":
            _, seq, capture, payload, now = op
            assert isinstance(seq, int) and isinstance(payload, bytes)
            assert isinstance(capture, float) and isinstance(now, float)
            if buffer.push(seq, capture, payload, now):
                assert math.isfinite(capture) and math.isfinite(now)
                assert seq not in accepted
                accepted[seq] = payload
        else:
            assert isinstance(op[1], float)
            playout = buffer.pop(op[1])
            if isinstance(playout, PlayFrame):
                assert accepted[playout.seq] == playout.payload
            if isinstance(playout, RecoverWithFec):
                assert accepted[playout.seq + 1] == playout.next_payload
            if isinstance(playout, PlayFrame | RecoverWithFec):
                played.append(playout.seq)
            if isinstance(playout, PlayFrame | RecoverWithFec | Conceal):
                consumed_seqs.append(playout.seq)
        buffer.next_playout()
        stats = buffer.statistics()
        assert stats.bufferedFrames <= config.max_frames
        assert config.floor <= stats.currentTarget <= config.max_target
        assert stats.packetsDiscarded <= stats.packetsReceived
    assert len(played) == len(set(played))
    assert consumed_seqs == sorted(set(consumed_seqs))
    stats = buffer.statistics()
    assert stats.packetsReceived == sum(op[0] == "push" for op in ops)
