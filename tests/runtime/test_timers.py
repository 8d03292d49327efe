"""The shared timer service, on trio's virtual clock."""

from __future__ import annotations

import functools
import math

import trio
import trio.testing

from mitalk_p2p.runtime.timers import CALLBACKS_PER_CHECKPOINT, open_timer_service


async def test_timers_fire_at_their_deadlines_in_order(autojump_clock: trio.abc.Clock) -> None:
    fired: list[tuple[str, float]] = []
    async with open_timer_service() as service:
        start = trio.current_time()

        def note(name: str) -> None:
            fired.append((name, trio.current_time()))

        for name, delay in [("c", 3.0), ("a", 1.0), ("b", 2.0)]:
            service.timer(functools.partial(note, name)).arm(start + delay)
        await trio.sleep(5)
    assert [name for name, _ in fired] == ["a", "b", "c"]
    assert [round(at - start, 6) for _, at in fired] == [1.0, 2.0, 3.0]


async def test_rearming_moves_the_deadline_and_fires_once(autojump_clock: trio.abc.Clock) -> None:
    fired: list[float] = []
    async with open_timer_service() as service:
        start = trio.current_time()
        timer = service.timer(lambda: fired.append(trio.current_time() - start))
        timer.arm(start + 10)
        await trio.sleep(1)
        timer.arm(start + 3)  # earlier: the service wakes sooner
        await trio.sleep(1)
        timer.arm(start + 4)  # later: the earlier arming is forgotten
        await trio.sleep(20)
        stats = service.statistics()
    assert [round(at, 6) for at in fired] == [4.0]
    assert stats.fired == 1
    assert stats.armed == 0
    assert timer.deadline == math.inf


async def test_a_disarmed_timer_never_fires(autojump_clock: trio.abc.Clock) -> None:
    fired: list[str] = []
    async with open_timer_service() as service:
        timer = service.timer(lambda: fired.append("x"))
        timer.arm(trio.current_time() + 1)
        timer.disarm()
        await trio.sleep(5)
        assert service.statistics().armed == 0
    assert fired == []


async def test_a_callback_may_rearm_its_own_timer(autojump_clock: trio.abc.Clock) -> None:
    ticks: list[float] = []
    async with open_timer_service() as service:
        start = trio.current_time()

        def tick() -> None:
            ticks.append(trio.current_time() - start)
            if len(ticks) < 5:
                timer.arm(trio.current_time() + 0.2)

        timer = service.timer(tick)
        timer.arm(start + 0.2)
        await trio.sleep(3)
    assert [round(t, 6) for t in ticks] == [0.2, 0.4, 0.6, 0.8, 1.0]


async def test_rearming_often_keeps_the_heap_bounded(autojump_clock: trio.abc.Clock) -> None:
    async with open_timer_service() as service:
        timers = [service.timer(lambda: None) for _ in range(10)]
        base = trio.current_time() + 1000
        for step in range(5000):
            timers[step % 10].arm(base - step * 0.01)
        stats = service.statistics()
        assert stats.armed == 10
        assert stats.heap_entries <= 2 * 10 + 64 + 1


async def test_a_burst_of_due_timers_lets_other_tasks_run(autojump_clock: trio.abc.Clock) -> None:
    """Hundreds of timers due at once are fired in slices, with checkpoints between."""
    order: list[str] = []
    count = 5 * CALLBACKS_PER_CHECKPOINT
    async with open_timer_service() as service:
        due = trio.current_time() + 1
        for _ in range(count):
            service.timer(lambda: order.append("timer")).arm(due)

        async def other() -> None:
            await trio.sleep_until(due)
            for _ in range(4):
                order.append("other")
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
        await trio.sleep(1)
        stats = service.statistics()
    assert order.count("timer") == count
    first_other = order.index("other")
    last_timer = len(order) - 1 - order[::-1].index("timer")
    assert first_other < last_timer, "the burst ran without yielding"
    assert stats.wakeups >= 1
    assert stats.fired == count
