"""CaptureClock: frames are stamped by sample count, never after they were read."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mitalk_p2p.runtime.capture_clock import CaptureClock

FRAME = 0.02


def test_even_reads_are_stamped_when_read() -> None:
    clock = CaptureClock(FRAME)
    stamps = [clock.stamp(100.0 + n * FRAME) for n in range(50)]
    assert stamps == pytest.approx([100.0 + n * FRAME for n in range(50)])
    assert clock.restarts == 0


def test_bursty_reads_get_even_stamps() -> None:
    # Frames read in pairs every 40 ms: the second of each pair right after the first.
    clock = CaptureClock(FRAME)
    reads = [100.0 + (n // 2) * 2 * FRAME + 0.018 * (n % 2) for n in range(40)]
    stamps = [clock.stamp(read) for read in reads]
    assert stamps == pytest.approx([100.0 + n * FRAME for n in range(40)])
    assert clock.restarts == 0


def test_a_stall_restarts_the_run() -> None:
    clock = CaptureClock(FRAME, max_lag=0.08)
    for n in range(10):
        clock.stamp(100.0 + n * FRAME)
    resumed = clock.stamp(105.0)
    assert resumed == pytest.approx(105.0)
    assert clock.stamp(105.0 + FRAME) == pytest.approx(105.0 + FRAME)
    assert clock.restarts == 1


def test_a_lag_within_the_bound_keeps_the_schedule() -> None:
    clock = CaptureClock(FRAME, max_lag=0.08)
    clock.stamp(100.0)
    assert clock.stamp(100.0 + FRAME + 0.05) == pytest.approx(100.0 + FRAME)
    assert clock.restarts == 0


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        CaptureClock(0.0)
    with pytest.raises(ValueError):
        CaptureClock(FRAME, max_lag=-1.0)


@given(st.lists(st.floats(min_value=0.0, max_value=0.2), min_size=1, max_size=200))
def test_stamps_advance_a_frame_or_more_and_stay_near_the_reads(gaps: list[float]) -> None:
    clock = CaptureClock(FRAME)
    read = 50.0
    previous: float | None = None
    for gap in gaps:
        read += gap
        stamp = clock.stamp(read)
        assert read - stamp <= clock.max_lag + 1e-9
        if previous is not None:
            assert stamp - previous >= FRAME - 1e-9
        previous = stamp
