"""``mitalk bench fanout``: a real room on 127.0.0.1, measured.

This process runs the host, which is also the room's one speaker; the
listeners run in worker processes (:mod:`.worker`), many peers on one trio
loop each.  Every peer is a complete runtime peer: real UDP for media, real
websockets and Noise for control.  The run goes in phases, each bounded in
time:

1. the host starts the room;
2. the workers join their listeners with one listener invite, one at a time
   each (:data:`JOINS_IN_FLIGHT`), until every listener is a member with a
   parent in the tree;
3. the host starts reading its speech WAV (looped); once every listener hears
   it and no parent has changed for :data:`SETTLE_QUIET` seconds, the tree
   counts as settled;
4. the measurement window: the workers empty their frame logs and start their
   meters, the host talks for ``--seconds``, the meters stop, and after
   :data:`GRACE` seconds for frames still in flight each worker joins its
   listeners' arrival and playout times with the host's send times;
5. everyone leaves.

The host speaks because the tree is rooted at the host: a listener's depth is
then exactly the number of relays a frame crosses.  (A separate speaker would
also dial every listener to hand it its sender key, a thousand more links in
this process.)

Latency is measured on the host-wide monotonic clock, from the speaker's
record of the frame leaving its sealing step to the listener's record of the
frame verified and decrypted (or, for latency including the jitter buffer,
released by the buffer for playout).  The frames owed are those the speaker
sent in the window, to every listener.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from ..audio.io import FrameInput, input_from_spec
from ..audio.sources import AudioSourceError
from ..codec import CodecConfig
from ..core.errors import MitalkError
from ..core.identity import Identity
from ..core.media import MediaConfig
from ..core.roles import Role
from ..runtime.peer_runtime import HostRoom, PeerConfig, RunningPeer, open_peer
from .resources import machine_busy_seconds, process_cpu_seconds, raise_open_file_limit
from .results import FanoutRun, Meters, build_result
from .worker import WorkerConfig, settle_heap
from .workers import BenchError, WorkerPool, open_workers

DEFAULT_WAV: Final = Path(__file__).resolve().parents[1] / "data" / "speech-host.wav"
SETTLE_QUIET: Final = 2.0
"""Seconds without a parent change before the tree counts as settled."""
SETTLE_TIMEOUT: Final = 60.0
GRACE: Final = 2.0
"""Seconds after the window for frames still in flight; a frame later than this is lost.

Ten times the jitter buffer's largest target: a frame this late is useless to a listener.
"""
JOINS_IN_FLIGHT: Final = 1
"""Joins each worker keeps in flight: a bounded rate that a loaded host keeps up with.

Every join is an entry the host sends to every member, so a room of a thousand
costs the host half a million messages to fill; more joins at once only make the
host's handshakes with the next joiners time out.
"""
ANSWER_TIMEOUT: Final = 60.0
JOIN_PROGRESS_INTERVAL: Final = 10.0
MAX_INVITE_USES: Final = 0xFFFF
INVITE_LIFETIME: Final = 24 * 3600

Progress = Callable[[str], None]


@attrs.frozen
class FanoutOptions:
    listeners: int
    fanout: int = 8
    seconds: float = 10.0
    processes: int = attrs.Factory(lambda: os.cpu_count() or 1)
    shared_crypto: bool = False
    """Share exact signature checks and decryptions among the peers of one process."""
    jitter_every: int = 10
    """Every this many listeners, one runs a jitter buffer (1: all of them)."""
    frame_ms: int = 20
    input: str = f"wav:{DEFAULT_WAV}"

    def join_budget(self) -> float:
        """Seconds the whole join phase may take."""
        return 60.0 + 0.5 * self.listeners


@attrs.define
class GatedInput:
    """A frame input that delivers nothing until ``gate`` is set."""

    source: FrameInput
    gate: trio.Event

    @property
    def frame_samples(self) -> int:
        return self.source.frame_samples

    async def read_frame(self) -> bytes | None:
        await self.gate.wait()
        return await self.source.read_frame()


def run(options: FanoutOptions, progress: Progress) -> dict[str, Any]:
    """Run the benchmark; the result as :func:`.results.build_result` makes it."""
    return trio.run(run_fanout, options, progress)


async def run_fanout(options: FanoutOptions, progress: Progress) -> dict[str, Any]:
    raise_open_file_limit(4 * options.listeners + 256)
    try:
        source = input_from_spec(
            options.input,
            seed=1,
            loop=True,
            frame_samples=CodecConfig(frame_ms=options.frame_ms).samples_per_frame,
        )
    except AudioSourceError as exc:
        raise MitalkError(str(exc)) from None
    gate = trio.Event()
    host_config = _host_config(options, GatedInput(source, gate))
    async with open_peer(host_config) as host:
        invite = host.invite(
            role=Role.LISTENER,
            lifetime=INVITE_LIFETIME,
            max_uses=_invite_uses(options.listeners),
        )
        configs = _worker_configs(options, invite.token)
        progress(f"joining {options.listeners} listeners from {len(configs)} worker processes")
        async with open_workers(configs) as pool:
            run = await _conduct(options, pool, host, gate, progress)
    return build_result(run)


async def _conduct(
    options: FanoutOptions,
    pool: WorkerPool,
    host: RunningPeer,
    gate: trio.Event,
    progress: Progress,
) -> FanoutRun:
    n = options.listeners
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_report_joins, pool, host, n, progress)
        await pool.wait_until(
            f"{n} listeners joining", lambda: pool.total("joined") == n, options.join_budget()
        )
        nursery.cancel_scope.cancel()
    # A room too big for the machine may never settle; it is then measured as it is.
    settled_fully = await pool.holds_within(
        lambda: pool.total("parented") + pool.total("failed") >= n, SETTLE_TIMEOUT
    )
    joined = time.monotonic()
    progress(f"{n} listeners joined in {joined - started:.1f} s; the host starts speaking")
    gate.set()
    settled_fully &= await pool.holds_within(
        lambda: pool.total("hearing") + pool.total("failed") >= n, SETTLE_TIMEOUT
    )
    settled_fully &= await pool.quiet_within("parent_changes", SETTLE_QUIET, SETTLE_TIMEOUT)
    settled = time.monotonic()
    hearing = pool.total("hearing")
    if settled_fully:
        progress(f"tree settled; measuring for {options.seconds:g} s")
    else:
        progress(
            f"the room did not settle within the time allowed ({pool.describe()}); "
            f"measuring it as it is for {options.seconds:g} s"
        )

    load = os.getloadavg()
    settle_heap()
    await pool.ask({"cmd": "start"}, "started", ANSWER_TIMEOUT)
    cpu_from, window_from = process_cpu_seconds(), time.monotonic()
    machine_from = machine_busy_seconds()
    first_seq = host.core.media.next_seq
    await trio.sleep(options.seconds)
    last_seq = host.core.media.next_seq
    cpu_s, window_s = process_cpu_seconds() - cpu_from, time.monotonic() - window_from
    machine_to = machine_busy_seconds()
    machine_s = None if machine_from is None or machine_to is None else machine_to - machine_from
    await pool.ask({"cmd": "stop"}, "stopped", ANSWER_TIMEOUT)
    await trio.sleep(GRACE)
    sent = {seq: at for seq, at in host.frame_log.sent.items() if first_seq <= seq < last_seq}
    progress("collecting the measurements")
    reports = await pool.ask(
        {"cmd": "report", "speaker": host.me.raw.hex(), "sent": sorted(sent.items())},
        "report",
        ANSWER_TIMEOUT,
    )
    return _gather(
        options,
        reports,
        host=host,
        frames_sent=len(sent),
        join_s=joined - started,
        settle_s=settled - joined,
        window_s=window_s,
        coordinator_cpu_s=cpu_s,
        load=load,
        settled=settled_fully,
        hearing=hearing,
        join_retries=pool.total("join_retries"),
        machine_cpu_s=machine_s,
    )


async def _report_joins(pool: WorkerPool, host: RunningPeer, n: int, progress: Progress) -> None:
    while True:
        await trio.sleep(JOIN_PROGRESS_INTERVAL)
        gc.freeze()  # the host's heap grows with the room too (see settle_heap)
        control = host.statistics().control
        state = host.state
        progress(
            f"{pool.total('joined')} of {n} listeners joined "
            f"(the host: {len(state.members) if state else 0} members, "
            f"{control.links_open} links, {control.handshakes_failed} handshakes failed, "
            f"{control.handshakes_refused_busy} refused while busy; "
            f"{pool.total('join_retries')} joins tried again)"
        )


def _gather(
    options: FanoutOptions,
    reports: list[dict[str, Any]],
    *,
    host: RunningPeer,
    frames_sent: int,
    join_s: float,
    settle_s: float,
    window_s: float,
    coordinator_cpu_s: float,
    load: tuple[float, float, float],
    settled: bool,
    hearing: int,
    join_retries: int,
    machine_cpu_s: float | None,
) -> FanoutRun:
    rows: list[dict[str, Any]] = []
    meters = Meters()
    arrival_us: list[int] = []
    hold_us: list[int] = []
    handling_us: list[int] = []
    workers_cpu = 0.0
    for report in reports:
        for row in report["listeners"]:
            rows.append({**row, "metered_s": report["metered_s"]})
        meters = meters + Meters.from_json(report["meters"])
        arrival_us.extend(report["meters"].get("arrival_us", ()))
        hold_us.extend(report["meters"]["hold_us"])
        handling_us.extend(report["meters"]["handling_us"])
        workers_cpu += float(report["process_cpu_s"])
    tree: dict[str, str | None] = {str(row["key"]): row["parent"] for row in rows}
    tree[host.me.raw.hex()] = None
    return FanoutRun(
        listeners=options.listeners,
        fanout=options.fanout,
        seconds=options.seconds,
        processes=len(reports),
        frame_ms=options.frame_ms,
        shared_crypto=options.shared_crypto,
        jitter_every=options.jitter_every,
        frames_sent=frames_sent,
        rows=tuple(rows),
        meters=meters,
        arrival_us=tuple(arrival_us),
        hold_us=tuple(hold_us),
        handling_us=tuple(handling_us),
        tree=tree,
        speaker=host.me.raw.hex(),
        join_s=join_s,
        settle_s=settle_s,
        window_s=window_s,
        cpu_s={"coordinator": coordinator_cpu_s, "workers": workers_cpu},
        load_average=load,
        settled=settled,
        hearing_at_start=hearing,
        join_retries=join_retries,
        machine_cpu_s=machine_cpu_s,
    )


def _invite_uses(listeners: int) -> int:
    """Uses enough for every listener and for joins tried again (see :mod:`.worker`)."""
    return min(MAX_INVITE_USES, listeners + listeners // 5 + 10)


def _host_config(options: FanoutOptions, audio: FrameInput) -> PeerConfig:
    """The host: the speaker and the tree's root; it relays, and plays nothing."""
    frame_seconds = options.frame_ms / 1000
    return PeerConfig(
        Identity.generate("Host"),
        HostRoom("bench"),
        audio_input=audio,
        codec=CodecConfig(frame_ms=options.frame_ms),
        media_config=MediaConfig(
            frame_seconds=frame_seconds, relay_capacity=options.fanout, jitter=None
        ),
        fanout=options.fanout,
        record_frames=True,
    )


def _worker_configs(options: FanoutOptions, invite: str) -> list[WorkerConfig]:
    """The listeners dealt out to the workers in contiguous runs."""
    n = options.listeners
    processes = max(1, min(options.processes, n))
    configs = []
    for index in range(processes):
        low, high = index * n // processes, (index + 1) * n // processes
        numbers = range(low, high)
        configs.append(
            WorkerConfig(
                invite=invite,
                names=tuple(f"L{number:04d}" for number in numbers),
                jitter=tuple(number % options.jitter_every == 0 for number in numbers),
                fanout=options.fanout,
                frame_ms=options.frame_ms,
                shared_crypto=options.shared_crypto,
                joins_in_flight=JOINS_IN_FLIGHT,
            )
        )
    return configs


def stderr_progress(text: str) -> None:
    sys.stderr.write(f"bench: {text}\n")
    sys.stderr.flush()


__all__ = ["BenchError", "FanoutOptions", "run", "run_fanout", "stderr_progress"]
