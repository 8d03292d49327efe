"""Processes inside the test's namespaces, with their JSON events and stderr lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from mitalk_p2p.discovery.switch import MDNS_ENV

from .netns import Lan

REPO: Final = Path(__file__).resolve().parents[2]
BOUND: Final = 20.0
"""Seconds any one awaited event may take: far above normal, reached only by a bug."""
STOP_TIMEOUT: Final = 10.0


@attrs.define(eq=False)
class Proc:
    name: str
    process: trio.Process
    events: list[dict[str, Any]] = attrs.Factory(list)
    errors: list[str] = attrs.Factory(list)
    _changed: trio.Event = attrs.Factory(trio.Event)

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _read(self, stream: trio.abc.ReceiveStream, stderr: bool) -> None:
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                if stderr:
                    self.errors.append(line)
                else:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(event, dict):
                        self.events.append(event)
                self._poke()
        if stderr:
            await self.process.wait()
        self._poke()

    async def _wait(self, what: str, found: Callable[[], Any]) -> Any:
        with trio.move_on_after(BOUND):
            while True:
                result = found()
                if result is not None:
                    return result
                if self.process.returncode is not None:
                    break
                await self._changed.wait()
        tail = "\n".join(self.errors[-15:])
        raise AssertionError(f"{self.name}: {what} did not happen; its stderr ends:\n{tail}")

    async def event(self, what: str, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        return await self._wait(  # type: ignore[no-any-return]
            what, lambda: next((e for e in self.events if predicate(e)), None)
        )

    async def stderr_line(self, what: str, predicate: Callable[[str], bool]) -> str:
        return await self._wait(  # type: ignore[no-any-return]
            what, lambda: next((line for line in self.errors if predicate(line)), None)
        )

    async def exit_code(self) -> int:
        with trio.fail_after(BOUND):
            return await self.process.wait()

    def send(self, sig: signal.Signals) -> None:
        if self.process.returncode is None:
            self.process.send_signal(sig)


@attrs.define
class Procs:
    """Starts processes in ``lan`` and stops every one of them (by PID) at the end."""

    lan: Lan
    nursery: trio.Nursery
    workdir: Path
    started: list[Proc] = attrs.Factory(list)

    async def start(self, ns: str, name: str, argv: Sequence[str]) -> Proc:
        env = {**os.environ, MDNS_ENV: "on", "PYTHONUNBUFFERED": "1"}
        process = await trio.lowlevel.open_process(
            self.lan.command(ns, [sys.executable, *argv]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
        )
        proc = Proc(name, process)
        self.started.append(proc)
        assert process.stdout is not None and process.stderr is not None
        self.nursery.start_soon(proc._read, process.stdout, False)
        self.nursery.start_soon(proc._read, process.stderr, True)
        return proc

    async def mitalk(self, ns: str, name: str, *arguments: str) -> Proc:
        profile = self.workdir / name
        return await self.start(
            ns, name, ["-m", "mitalk_p2p", "--profile", str(profile), *arguments]
        )

    async def stop_all(self) -> None:
        """SIGTERM (peers leave properly), then SIGKILL what is still running."""
        for proc in self.started:
            proc.send(signal.SIGCONT)
            proc.send(signal.SIGTERM)
        with trio.move_on_after(STOP_TIMEOUT):
            for proc in self.started:
                await proc.process.wait()
        for proc in self.started:
            if proc.process.returncode is None:
                proc.process.kill()
                await proc.process.wait()
