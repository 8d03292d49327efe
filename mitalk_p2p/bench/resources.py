"""Process resources: the open-file limit (a thousand peers need thousands of sockets), CPU time."""

from __future__ import annotations

import os
import resource

from ..core.errors import MitalkError


def raise_open_file_limit(needed: int) -> int:
    """Raise this process's soft limit on open files towards ``needed``; return the new limit.

    The soft limit is often 1,024 while the hard limit is far higher.  Raises
    :class:`MitalkError` when even the hard limit is too low.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed if soft == resource.RLIM_INFINITY else soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise MitalkError(
            f"this run needs about {needed} open files but the limit is {hard}; "
            f"raise it (ulimit -n {needed}) or run fewer listeners per process"
        )
    new = needed if hard == resource.RLIM_INFINITY else hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return new


def process_cpu_seconds() -> float:
    """User and system CPU seconds this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes on this machine have used since boot (None off Linux).

    Read from ``/proc/stat``; over a window, minus this run's own CPU, it says how
    busy the rest of a shared machine kept the cores.
    """
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    ticks = [int(value) for value in fields[1:]]
    busy = sum(ticks[:3]) + sum(ticks[5:8])
    return busy / os.sysconf("SC_CLK_TCK")
