"""``mitalk demo``: a real room of separate processes on 127.0.0.1, in under a minute.

The demo is a conductor.  It starts a bootstrap node (inside this process), a
host and eight listeners, each a ``mitalk host``/``mitalk join`` process of
its own that talks over real websockets and UDP.  It reads every peer's JSON
events and types console commands into their stdin, exactly as a person
would, to walk through a session:

1. the host announces the room; the listeners find it and join with the invite;
2. the host speaks a recorded sentence;
3. a listener raises a hand, the host invites them to the stage, they accept
   and speak;
4. a relay's process is killed mid-talk, and its listeners are re-parented;
5. everyone leaves; each listener's WAV of what it heard is in ``demo-out/``.

At the end it joins the peers' frame reports into a summary table (latency,
loss, concealment and repair time per listener) and prints the relay tree.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

import attrs
import trio

from .core.errors import MitalkError

LISTENERS: Final = 8
FANOUT: Final = 2
"""Small, so that eight listeners need relays and a killed relay has children."""
DATA: Final = Path(__file__).parent / "data"
STEP_TIMEOUT: Final = 15.0


class DemoError(MitalkError):
    """A step of the demo did not happen in time; the message names it."""


@attrs.define(eq=False)
class DemoPeer:
    name: str
    process: trio.Process
    events: list[dict[str, Any]] = attrs.Factory(list)
    changed: trio.Event = attrs.Factory(trio.Event)
    report: Path | None = None
    killed_at: float | None = None

    async def say(self, command: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all((command + "\n").encode())

    def record(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.changed.set()
        self.changed = trio.Event()

    def find(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        for event in self.events:
            if predicate(event):
                return event
        return None

    async def wait_for(
        self, what: str, predicate: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        with trio.move_on_after(STEP_TIMEOUT):
            while True:
                found = self.find(predicate)
                if found is not None:
                    return found
                if self.process.returncode is not None:
                    break
                await self.changed.wait()
        raise DemoError(f"{self.name}: {what} did not happen within {STEP_TIMEOUT:g} s")


def _event(name: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    def matches(event: dict[str, Any]) -> bool:
        if event.get("event") != name:
            return False
        for key, value in fields.items():
            got = event.get(key)
            if isinstance(got, dict):
                got = got.get("name")
            if got != value:
                return False
        return True

    return matches


@attrs.define
class Conductor:
    out: TextIO
    workdir: Path
    output: Path
    started: float = attrs.Factory(time.monotonic)
    peers: dict[str, DemoPeer] = attrs.Factory(dict)
    kill_time: float | None = None
    killed: str | None = None
    kick_time: float | None = None
    kicked: str | None = None

    def log(self, text: str) -> None:
        self.out.write(f"[{time.monotonic() - self.started:5.1f}s] {text}\n")
        self.out.flush()

    async def start_peer(
        self, nursery: trio.Nursery, name: str, arguments: Sequence[str]
    ) -> DemoPeer:
        report = self.output / f"{name}.json"
        command = [
            sys.executable,
            "-m",
            "mitalk_p2p",
            "--profile",
            str(self.workdir / name),
            *arguments,
            "--no-mdns",  # the demo stays on 127.0.0.1: nothing is multicast on the LAN
            "--name",
            name,
            "--json-events",
            "--report",
            str(report),
        ]
        log = os.open(self.output / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            process = await trio.lowlevel.open_process(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            os.close(log)
        peer = DemoPeer(name, process, report=report)
        self.peers[name] = peer
        nursery.start_soon(read_events, peer)
        return peer


async def read_events(peer: DemoPeer) -> None:
    """Record each JSON event line a peer's process prints, then its exit."""
    assert peer.process.stdout is not None
    buffer = b""
    async for chunk in peer.process.stdout:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                peer.record(event)
    await peer.process.wait()
    peer.record({"event": "process_exited", "code": peer.process.returncode})


async def _run(out: TextIO, output: Path) -> int:
    with tempfile.TemporaryDirectory(prefix="mitalk-demo-") as tmp:
        conductor = Conductor(out, Path(tmp), output)
        async with trio.open_nursery() as nursery:
            try:
                await _session(conductor, nursery)
            finally:
                with trio.CancelScope(shield=True):
                    await _stop_all(conductor)
                nursery.cancel_scope.cancel()
    _summarize(conductor)
    return 0


async def _session(c: Conductor, nursery: trio.Nursery) -> None:
    host_wav = DATA / "speech-host.wav"
    guest_wav = DATA / "speech-guest.wav"
    bootstrap = await _start_bootstrap(c, nursery)
    discovery = ["--bootstrap", bootstrap] if bootstrap else []
    host = await c.start_peer(
        nursery,
        "Host",
        ["host", "Demo room", "--topic", "peer-to-peer voice", "--fanout", str(FANOUT),
         "--invite-uses", str(LISTENERS), "--input", f"wav:{host_wav}", "--loop",
         "--output", "null", *discovery],
    )  # fmt: skip
    ready = await host.wait_for("the host starting", _event("ready"))
    await host.say("/mute")
    c.log(f"host is up at {ready['control']}; room {ready['room_id'][:8]}…, invite issued")
    invite = str(ready["invite"])
    listeners = []
    for index in range(1, LISTENERS + 1):
        name = f"Listener-{index}"
        listeners.append(
            await c.start_peer(
                nursery,
                name,
                ["join", invite, *discovery, "--input", f"wav:{guest_wav}", "--loop",
                 "--output", str(c.output / f"{name}.wav")],
            )
        )
    for peer in listeners:
        joined = await peer.wait_for("joining the room", _event("ready"))
        c.log(f"{peer.name} joined as {joined.get('role')}")
    await host.say("/unmute")
    c.log("host is speaking")
    await trio.sleep(3.0)

    hand = listeners[2]
    await hand.say("/hand")
    await host.wait_for("seeing the raised hand", _event("hand_raised", actor=hand.name))
    c.log(f"{hand.name} raised a hand")
    await host.say(f"/stage {hand.name}")
    await hand.wait_for("the stage invitation", _event("invited_to_stage", target=hand.name))
    await hand.say("/accept")
    await host.wait_for("the stage acceptance", _event("stage_accepted", actor=hand.name))
    await host.say("/mute")
    c.log(f"{hand.name} accepted and is speaking")
    await trio.sleep(2.0)

    relay = _pick_relay(c, exclude={hand.name})
    if relay is None:
        c.log("no listener is relaying to anyone, so there is no relay to kill")
    else:
        children = _children_of(c, relay.name)
        c.kill_time, c.killed = time.monotonic(), relay.name
        relay.killed_at = c.kill_time
        relay.process.send_signal(signal.SIGKILL)
        c.log(f"killed {relay.name} (relaying to {', '.join(children)}) mid-talk")
        for name in children:
            await c.peers[name].wait_for(
                "re-parenting after the relay died",
                lambda e: e.get("event") == "parent_changed"
                and (e.get("time") or 0) > (c.kill_time or 0)
                and (e.get("parent") or {}).get("name") != relay.name,
            )
        c.log("the tree repaired: every orphan has a new parent")
    await trio.sleep(2.0)
    await host.say("/tree")
    answer = await host.wait_for("the tree", _event("answer", query="tree"))
    c.log("relay tree as the host sees it:")
    for line in str(answer["text"]).splitlines():
        c.out.write(f"        {line}\n")


def parents_at(c: Conductor, moment: float | None = None) -> dict[str, str]:
    """Each peer's parent by name, from its ``parent_changed`` events up to ``moment``."""
    parents: dict[str, str] = {}
    for name, peer in c.peers.items():
        for event in peer.events:
            parent = event.get("parent")
            if (
                event.get("event") == "parent_changed"
                and isinstance(parent, dict)
                and (moment is None or event.get("time", 0) <= moment)
            ):
                parents[name] = str(parent.get("name"))
    return parents


def _children_of(c: Conductor, name: str) -> list[str]:
    return sorted(child for child, parent in parents_at(c).items() if parent == name)


def _pick_relay(c: Conductor, exclude: set[str]) -> DemoPeer | None:
    counts: dict[str, int] = {}
    for parent in parents_at(c).values():
        if parent in c.peers and parent != "Host" and parent not in exclude:
            counts[parent] = counts.get(parent, 0) + 1
    if not counts:
        return None
    return c.peers[max(sorted(counts), key=lambda n: counts[n])]


async def _start_bootstrap(c: Conductor, nursery: trio.Nursery) -> str | None:
    try:
        from bootstrap.server import serve_bootstrap
    except ImportError:
        c.log("the bootstrap node is not installed; peers use the invite's address")
        return None
    address: str = await nursery.start(serve_bootstrap, "127.0.0.1:0")
    c.log(f"bootstrap node listening on {address}")
    return address


async def _stop_all(c: Conductor) -> None:
    for peer in c.peers.values():
        if peer.process.returncode is None and peer.process.stdin is not None:
            with trio.move_on_after(1):
                await peer.process.stdin.aclose()
    with trio.move_on_after(10):
        for peer in c.peers.values():
            await peer.process.wait()
    for peer in c.peers.values():
        if peer.process.returncode is None:
            peer.process.kill()
            await peer.process.wait()


# -- the summary --------------------------------------------------------------------


def _load(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


@attrs.frozen
class Row:
    name: str
    p50_ms: float | None
    p95_ms: float | None
    loss: float | None
    concealed: float | None
    repair_ms: float | None
    note: str = ""


def summarize_reports(
    reports: dict[str, dict[str, Any]], kill_time: float | None, orphans: set[str]
) -> list[Row]:
    """One row per listener, from the peers' frame reports (see ``mitalk host --report``)."""
    sent: dict[str, dict[int, float]] = {}
    for report in reports.values():
        sent[str(report["key"])] = {int(seq): at for seq, at in report["sent"].items()}
    rows = []
    for name, report in reports.items():
        if not report["received"]:
            continue
        latencies: list[float] = []
        seen: dict[str, set[int]] = {}
        arrivals: list[float] = []
        for key, seq, at in report["received"]:
            seen.setdefault(key, set()).add(seq)
            arrivals.append(at)
            sent_at = sent.get(key, {}).get(seq)
            if sent_at is not None:
                latencies.append(1000 * (at - sent_at))
        expected = 0
        for key, seqs in seen.items():
            speaker = sent.get(key, {})
            window = [s for s in speaker if min(seqs) <= s <= max(seqs)]
            expected += len(window)
        received = sum(len(seqs) for seqs in seen.values())
        repair = None
        if kill_time is not None and name in orphans:
            after = [at for at in arrivals if at > kill_time]
            repair = 1000 * (min(after) - kill_time) if after else None
        # The jitter buffers' webrtc-stats figure: PLC output and silence that fell
        # inside speech, over all samples played, recovered or concealed.
        concealed = report.get("concealed_samples", 0)
        played = report.get("samples_received", 0)
        rows.append(
            Row(
                name,
                _percentile(latencies, 0.5) if latencies else None,
                _percentile(latencies, 0.95) if latencies else None,
                max(0.0, 1 - received / expected) if expected else None,
                concealed / played if played else None,
                repair,
            )
        )
    return rows


def format_table(rows: list[Row]) -> str:
    def cell(value: float | None, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
        return "-" if value is None else f"{value * scale:.{digits}f}{unit}"

    header = f"{'peer':<12} {'p50':>8} {'p95':>8} {'loss':>7} {'concealed':>10} {'repair':>9}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.name:<12} {cell(row.p50_ms, unit=' ms'):>8} {cell(row.p95_ms, unit=' ms'):>8}"
            f" {cell(row.loss, 100, 2, '%'):>7} {cell(row.concealed, 100, 2, '%'):>10}"
            f" {cell(row.repair_ms, digits=0, unit=' ms'):>9}  {row.note}".rstrip()
        )
    return "\n".join(lines)


def _summarize(c: Conductor) -> None:
    reports = {}
    for name, peer in c.peers.items():
        report = _load(peer.report)
        if report is not None and name != c.killed:
            reports[name] = report
    orphans = {
        child for child, parent in parents_at(c, c.kill_time).items() if parent == c.killed
    } if c.killed else set()
    rows = summarize_reports(reports, c.kill_time, orphans)
    c.out.write(
        "\nDelivery per listener (latency from the speaker's send to this peer's receipt;\n"
        "repair is the silence after the relay was killed, for its orphans):\n\n"
    )
    c.out.write(format_table([r for r in rows if r.name != "Host"]) + "\n")
    if c.killed:
        c.out.write(f"{c.killed:<12} killed mid-talk (no report)\n")
    c.out.write(f"\nWhat each listener heard is in {c.output}/Listener-N.wav; play one with\n")
    c.out.write(f"    aplay {c.output}/Listener-1.wav   (or any audio player)\n")


def run(out: TextIO, output: Path = Path("demo-out")) -> int:
    """Run the whole demo; ``output`` is emptied first and receives the WAVs and reports."""
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    started = time.monotonic()
    code = trio.run(_run, out, output)
    out.write(f"\nThe demo took {time.monotonic() - started:.1f} s.\n")
    return code
