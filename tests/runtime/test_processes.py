"""End to end: a host and six listeners as separate ``mitalk`` processes on 127.0.0.1.

Everything is real: websockets for control, UDP for media, libopus, and a WAV
file as the host's voice.  Each listener writes what it played to a WAV file,
which must match the source after alignment.  Then a listener is kicked (its
audio stops) and a relay's process is killed (its children hear audio again
within a second).

The host speaks for real time, so the test waits on the clock while it does;
every step that depends on the peers waits for their JSON events instead.
"""

from __future__ import annotations

import io
import json
import signal
import time
from pathlib import Path

import trio

from mitalk_p2p.live_demo import DATA, Conductor, parents_at, summarize_reports

from ..audio_match import aligned_correlation, received_after

LISTENERS = 6
MIN_CORRELATION = 0.9
HEAL_BOUND = 1.0


async def test_six_listener_processes_hear_the_host_then_survive_a_kick_and_a_relay_kill(
    tmp_path: Path,
) -> None:
    output = tmp_path / "out"
    output.mkdir()
    source = DATA / "speech-host.wav"
    conductor = Conductor(io.StringIO(), tmp_path, output)
    async with trio.open_nursery() as nursery:
        try:
            await _scenario(conductor, nursery, source)
        finally:
            with trio.CancelScope(shield=True):
                await _stop(conductor)
            nursery.cancel_scope.cancel()
    await _judge(conductor, source)


async def _scenario(c: Conductor, nursery: trio.Nursery, source: Path) -> None:
    host = await c.start_peer(
        nursery,
        "Host",
        ["host", "E2E", "--fanout", "2", "--invite-uses", str(LISTENERS),
         "--input", f"wav:{source}", "--loop", "--output", "null"],
    )  # fmt: skip
    ready = await host.wait_for("start", lambda e: e.get("event") == "ready")
    await host.say("/mute")
    listeners = [
        await c.start_peer(
            nursery,
            f"L{index}",
            ["join", str(ready["invite"]), "--input", "none",
             "--output", str(c.output / f"L{index}.wav")],
        )
        for index in range(1, LISTENERS + 1)
    ]
    for peer in listeners:
        await peer.wait_for("join", lambda e: e.get("event") == "ready")
    await host.say("/unmute")
    c.started = time.monotonic()
    await trio.sleep(4.0)  # the host talks

    # Kick a leaf listener: it leaves, and the others keep hearing the host.
    parents = parents_at(c)
    relays = {parent for parent in parents.values() if parent != "Host"}
    victim = next(p for p in listeners if p.name not in relays)
    await host.say(f"/kick {victim.name}")
    exited = await victim.wait_for("the kick", lambda e: e.get("event") == "exited")
    assert exited["reason"] == "kicked"
    c.kick_time = time.monotonic()
    c.kicked = victim.name

    # Kill a relay's process: its children must hear audio again within a second.
    parents = parents_at(c)
    relay = next(
        p
        for p in listeners
        if any(parent == p.name and child != victim.name for child, parent in parents.items())
    )
    c.kill_time, c.killed = time.monotonic(), relay.name
    relay.process.send_signal(signal.SIGKILL)
    await trio.sleep(3.0)


async def _stop(c: Conductor) -> None:
    for peer in c.peers.values():
        if peer.process.returncode is None and peer.process.stdin is not None:
            await peer.process.stdin.aclose()
    with trio.fail_after(15):
        for peer in c.peers.values():
            await peer.process.wait()


async def _judge(c: Conductor, source: Path) -> None:
    reports = {}
    for name, peer in c.peers.items():
        if name != c.killed:
            assert peer.report is not None and peer.report.exists(), f"{name} wrote no report"
            reports[name] = json.loads(peer.report.read_text())
    orphans = {child for child, parent in parents_at(c, c.kill_time).items()
               if parent == c.killed and child != c.kicked}  # fmt: skip
    assert orphans, "the killed relay had no children"

    for name in reports:
        if name in ("Host", c.kicked):
            continue
        correlation = aligned_correlation(source, c.output / f"{name}.wav", 1.5, 2.0)
        assert correlation >= MIN_CORRELATION, f"{name}: correlation {correlation:.3f}"

    assert c.kicked is not None and c.kick_time is not None
    kicked = reports[c.kicked]
    assert received_after(kicked, c.kick_time) == 0
    assert c.peers[c.kicked].process.returncode == 1

    assert c.kill_time is not None
    rows = {row.name: row for row in summarize_reports(reports, c.kill_time, orphans)}
    for name in orphans:
        repair = rows[name].repair_ms
        assert repair is not None and repair <= 1000 * HEAL_BOUND, f"{name} healed in {repair} ms"
    for name, row in rows.items():
        if name not in ("Host", c.kicked) and name not in orphans:
            assert row.loss is not None and row.loss < 0.01, f"{name} lost {row.loss}"
