"""The coordinator's side of the worker processes: start, command, listen, stop.

Each worker is ``python -m mitalk_p2p.bench.worker`` (see :mod:`.worker` for
the line protocol).  :func:`open_workers` starts them, reads their status
lines as they come, and on exit, by any route, asks them to leave and kills
whichever has not exited within :data:`EXIT_TIMEOUT`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import IO, Any, Final

import attrs
import trio

from ..core.errors import MitalkError
from .worker import WorkerConfig

logger = logging.getLogger(__name__)

EXIT_TIMEOUT: Final = 10.0
"""Seconds the workers get to leave the room and exit before they are killed."""
STDERR_TAIL: Final = 2000


class BenchError(MitalkError):
    """The benchmark could not run to the end; the message says where it stopped."""


@attrs.define(eq=False)
class WorkerProcess:
    index: int
    process: trio.Process
    stderr: IO[bytes]
    status: dict[str, Any] = attrs.Factory(dict)
    answers: dict[str, dict[str, Any]] = attrs.Factory(dict)
    exited: bool = False

    async def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            await self.process.stdin.send_all((json.dumps(command) + "\n").encode())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise BenchError(f"worker {self.index} is gone{self.stderr_tail()}") from None

    def stderr_tail(self) -> str:
        try:
            self.stderr.seek(0)
            text = self.stderr.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""
        return f"; its last words: {text[-STDERR_TAIL:]}" if text else ""


@attrs.define(eq=False)
class WorkerPool:
    workers: list[WorkerProcess]
    _changed: trio.Event = attrs.Factory(trio.Event)

    def total(self, field: str) -> int:
        return sum(int(worker.status.get(field, 0)) for worker in self.workers)

    async def wait_until(self, what: str, condition: Callable[[], bool], within: float) -> None:
        """Return once ``condition()`` holds (re-checked on every worker line), or raise."""
        if not await self.holds_within(condition, within):
            raise BenchError(f"{what} did not happen within {within:g} s ({self.describe()})")

    async def holds_within(self, condition: Callable[[], bool], within: float) -> bool:
        """Whether ``condition()`` came to hold within ``within`` seconds."""
        with trio.move_on_after(within):
            while not condition():
                self._check_alive()
                await self._changed.wait()
            return True
        return False

    async def quiet_within(self, field: str, quiet: float, within: float) -> bool:
        """Whether ``field`` (summed) stayed unchanged for ``quiet`` s within ``within`` s."""
        with trio.move_on_after(within):
            while True:
                before = self.total(field)
                with trio.move_on_after(quiet):
                    while self.total(field) == before:
                        self._check_alive()
                        await self._changed.wait()
                    continue
                return True
        return False

    async def ask(
        self, command: dict[str, Any], answer: str, within: float
    ) -> list[dict[str, Any]]:
        """Send ``command`` to every worker; return each one's ``answer`` line."""
        for worker in self.workers:
            worker.answers.pop(answer, None)
        for worker in self.workers:
            await worker.send(command)
        await self.wait_until(
            f"every worker's {answer!r}",
            lambda: all(answer in worker.answers for worker in self.workers),
            within,
        )
        return [worker.answers[answer] for worker in self.workers]

    async def send_each(self, commands: Sequence[dict[str, Any]]) -> None:
        for worker, command in zip(self.workers, commands, strict=True):
            await worker.send(command)

    def describe(self) -> str:
        fields = ("joined", "parented", "hearing")
        return ", ".join(f"{self.total(field)} {field}" for field in fields)

    def _check_alive(self) -> None:
        for worker in self.workers:
            if worker.exited:
                error = worker.answers.get("error", {}).get("message")
                detail = f": {error}" if error else worker.stderr_tail()
                raise BenchError(f"worker {worker.index} stopped{detail}")

    async def _read(self, worker: WorkerProcess) -> None:
        assert worker.process.stdout is not None
        buffer = b""
        async for chunk in worker.process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self._take(worker, line)
        await worker.process.wait()
        worker.exited = True
        self._notify()

    def _take(self, worker: WorkerProcess, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            logger.warning("worker %d wrote a line that is not JSON: %r", worker.index, line[:80])
            return
        if not isinstance(message, dict):
            return
        event = message.get("event")
        if event == "status":
            worker.status = message
        elif isinstance(event, str):
            worker.answers[event] = message
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


@asynccontextmanager
async def open_workers(configs: Sequence[WorkerConfig]) -> AsyncIterator[WorkerPool]:
    """Start one worker per config; stop them all when the block exits."""
    command = [sys.executable, "-m", "mitalk_p2p.bench.worker"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    pool = WorkerPool([])
    try:
        async with trio.open_nursery() as nursery:
            try:
                for index, config in enumerate(configs):
                    stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _close)
                    try:
                        process = await trio.lowlevel.open_process(
                            command,
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            stderr=stderr,
                            env=env,
                        )
                    except BaseException:
                        stderr.close()
                        raise
                    worker = WorkerProcess(index, process, stderr)
                    pool.workers.append(worker)
                    nursery.start_soon(pool._read, worker)
                    await worker.send(config.to_json())
                yield pool
            finally:
                with trio.CancelScope(shield=True):
                    await _stop(pool)
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await _close(pool)


async def _stop(pool: WorkerPool) -> None:
    for worker in pool.workers:
        stdin = worker.process.stdin
        if worker.process.returncode is None and stdin is not None:
            with trio.move_on_after(1):
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stdin.send_all(b'{"cmd": "exit"}\n')
                await stdin.aclose()
    with trio.move_on_after(EXIT_TIMEOUT):
        for worker in pool.workers:
            await worker.process.wait()
    for worker in pool.workers:
        if worker.process.returncode is None:
            logger.warning("worker %d did not exit in time; killing it", worker.index)
            worker.process.kill()
            await worker.process.wait()


async def _close(pool: WorkerPool) -> None:
    for worker in pool.workers:
        if worker.process.returncode is None:
            worker.process.kill()
            await worker.process.wait()
        for stream in (worker.process.stdout, worker.process.stdin):
            if stream is not None:
                await stream.aclose()
        worker.stderr.close()
