"""A bench worker process: many listeners of one room on one trio loop.

Started by :mod:`.fanout` as ``python -m mitalk_p2p.bench.worker``.  The first
line on stdin is a :class:`WorkerConfig` as JSON; after it, one command per line:

- ``{"cmd": "start"}``: empty the frame logs and start metering (the window
  opens); answered with ``{"event": "started"}``;
- ``{"cmd": "stop"}``: stop metering; answered with ``{"event": "stopped"}``;
- ``{"cmd": "report", "speaker": HEX, "sent": [[SEQ, TIME], ...]}``: answered
  with ``{"event": "report", ...}`` (see :func:`build_report`);
- ``{"cmd": "exit"}``, or the end of stdin: every listener leaves, and the
  worker exits.

On stdout it writes one JSON object per line: the answers above, and
``{"event": "status", ...}`` (listeners joined, with a parent, hearing the
speaker, failed; parent changes and joins tried again so far) whenever that
changes.  A failure is one
``{"event": "error", "message": ...}`` line and exit status 2.

Each listener is a complete peer (:func:`~..runtime.peer_runtime.open_peer`):
its own UDP socket, websocket server and control links, verifying, relaying
and decrypting every frame.  Listeners whose :attr:`WorkerConfig.jitter` flag
is set also run a jitter buffer, whose playout times give the latency
including the buffer.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import attrs
import trio

from ..codec import CodecConfig
from ..core.crypto_memo import CryptoMemo, sharing_crypto_results
from ..core.errors import MitalkError, leaf_exceptions
from ..core.identity import Identity, PublicKey
from ..core.invite import SignedInvite
from ..core.jitter import JitterConfig
from ..core.media import MediaConfig
from ..core.media_events import ParentChanged
from ..core.peer import PeerEvent
from ..runtime.media_meter import MediaMeter
from ..runtime.peer_runtime import JoinError, JoinRoom, PeerConfig, RunningPeer, open_peer
from ..runtime.timers import TimerService, open_timer_service
from .resources import process_cpu_seconds, raise_open_file_limit

logger = logging.getLogger(__name__)

STATUS_INTERVAL: Final = 0.2
"""Seconds between looks at the listeners' state (a line is written only on change)."""
HEARING_WITHIN: Final = 1.0
"""A listener counts as hearing the speaker if a frame arrived this recently."""
JOIN_TIMEOUT: Final = 30.0
"""Seconds one listener may take to join: a loaded host admits joiners one by one."""
FDS_PER_LISTENER: Final = 6
JOIN_ATTEMPTS: Final = 8
JOIN_RETRY_PAUSE: Final = 1.0
"""Seconds before the second attempt; each later one waits one more, up to the sixth."""
RETRIED: Final = ("could not reach the room", "no answer from the room")
"""How the :class:`JoinError` messages that are worth another attempt begin."""
FREEZE_EVERY: Final = 25
"""Joins between two :func:`gc.freeze` calls while the room fills (see :func:`settle_heap`)."""


class WorkerError(MitalkError):
    """The worker cannot go on; the message says why."""


@attrs.frozen
class WorkerConfig:
    invite: str
    """The listener invite's token."""
    names: tuple[str, ...]
    jitter: tuple[bool, ...]
    """Per listener: whether it runs a jitter buffer (and so logs playout times)."""
    fanout: int
    frame_ms: int = 20
    shared_crypto: bool = False
    joins_in_flight: int = 4

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerConfig:
        try:
            return cls(
                invite=str(data["invite"]),
                names=tuple(str(name) for name in data["names"]),
                jitter=tuple(bool(flag) for flag in data["jitter"]),
                fanout=int(data["fanout"]),
                frame_ms=int(data["frame_ms"]),
                shared_crypto=bool(data["shared_crypto"]),
                joins_in_flight=int(data["joins_in_flight"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WorkerError(f"bad worker configuration: {exc!r}") from None


@attrs.define(eq=False)
class Listener:
    peer: RunningPeer
    meter: MediaMeter
    jitter: bool
    parent_changes: int = 0
    failure: str | None = None
    """Why this listener's peer stopped, if it did: it then hears nothing more."""

    def on_event(self, event: PeerEvent) -> None:
        if type(event) is ParentChanged:
            self.parent_changes += 1


@attrs.define(eq=False)
class Worker:
    config: WorkerConfig
    emit: Callable[[dict[str, Any]], None]
    memo: CryptoMemo | None = None
    listeners: list[Listener] = attrs.Factory(list)
    join_retries: int = 0
    metering: bool = False
    window_opened: bool = False
    """Set by the first ``start``: from then on the frame logs are kept whole."""
    metered_from: float = 0.0
    metered_until: float = 0.0
    cpu_from: float = 0.0
    cpu_until: float = 0.0
    _last_status: dict[str, Any] | None = None
    timers: TimerService | None = None

    async def run(self, commands: AsyncIterator[dict[str, Any]]) -> None:
        # One timer service for every peer of the worker: a trio task per peer
        # sleeping until its next deadline costs a cancellation per wake-up.
        async with open_timer_service() as timers, trio.open_nursery() as nursery:
            self.timers = timers
            nursery.start_soon(self._join_all, nursery)
            nursery.start_soon(self._watch)
            async for command in commands:
                if not self._obey(command):
                    break
            nursery.cancel_scope.cancel()

    # --- joining -------------------------------------------------------------------

    async def _join_all(self, peers: trio.Nursery) -> None:
        invite = SignedInvite.from_token(self.config.invite)
        pending = iter(zip(self.config.names, self.config.jitter, strict=True))
        async with trio.open_nursery() as joiners:
            for _ in range(max(1, self.config.joins_in_flight)):
                joiners.start_soon(self._joiner, peers, invite, pending)

    async def _joiner(self, peers: trio.Nursery, invite: SignedInvite, pending: Any) -> None:
        for name, jitter in pending:
            for attempt in range(1, JOIN_ATTEMPTS + 1):
                try:
                    listener: Listener = await peers.start(
                        self._serve_listener, invite, name, jitter
                    )
                except JoinError as exc:
                    # A refusal is final.  A room that can't be reached or doesn't answer
                    # in time is tried again, each time with a new identity: a request
                    # that did reach the host may still be admitted, and that member is
                    # then one more in the room, never this listener twice.
                    if not str(exc).startswith(RETRIED) or attempt == JOIN_ATTEMPTS:
                        raise
                    self.join_retries += 1
                    logger.info("%s: %s; trying again", name, exc)
                    await trio.sleep(JOIN_RETRY_PAUSE * min(attempt, 6))
                    continue
                self.listeners.append(listener)
                if len(self.listeners) % FREEZE_EVERY == 0:
                    gc.freeze()
                break

    async def _serve_listener(
        self,
        invite: SignedInvite,
        name: str,
        jitter: bool,
        *,
        task_status: trio.TaskStatus[Listener],
    ) -> None:
        frame_seconds = self.config.frame_ms / 1000
        media = MediaConfig(
            frame_seconds=frame_seconds,
            relay_capacity=self.config.fanout,
            jitter=JitterConfig(frame_seconds=frame_seconds) if jitter else None,
        )
        meter = MediaMeter(active=self.metering)
        config = PeerConfig(
            Identity.generate(name),
            JoinRoom(invite),
            codec=CodecConfig(frame_ms=self.config.frame_ms),
            media_config=media,
            fanout=self.config.fanout,
            join_timeout=JOIN_TIMEOUT,
            record_frames=True,
            media_meter=meter,
            timers=self.timers,
        )
        listener: Listener | None = None
        try:
            async with open_peer(config) as peer:
                listener = Listener(peer, meter, jitter)
                peer.subscribe(listener.on_event)
                task_status.started(listener)
                await trio.sleep_forever()
        except Exception as exc:
            if listener is None:
                raise
            # One listener's peer failing is a measurement (its frames count as lost),
            # not a reason to stop the others.
            listener.failure = f"{type(exc).__name__}: {exc}"
            logger.warning("listener %s stopped: %s", name, listener.failure)

    # --- status --------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            status = self.status()
            if status != self._last_status:
                self._last_status = status
                self.emit({"event": "status", **status})
            if not self.window_opened:
                self._trim_logs()
            await trio.sleep(STATUS_INTERVAL)

    def status(self) -> dict[str, Any]:
        recent = time.monotonic() - HEARING_WITHIN
        parented = hearing = changes = failed = 0
        for listener in self.listeners:
            if listener.failure is not None:
                failed += 1
            peer = listener.peer
            if peer.core.media.parent is not None:
                parented += 1
            received = peer.frame_log.received
            if received and received[-1][2] >= recent:
                hearing += 1
            changes += listener.parent_changes
        return {
            "joined": len(self.listeners),
            "parented": parented,
            "hearing": hearing,
            "parent_changes": changes,
            "failed": failed,
            "join_retries": self.join_retries,
        }

    def _trim_logs(self) -> None:
        """Outside the window only the newest arrival matters (for ``hearing``)."""
        for listener in self.listeners:
            log = listener.peer.frame_log
            if len(log.received) > 1:
                del log.received[:-1]
            log.played.clear()

    # --- commands ------------------------------------------------------------------

    def _obey(self, command: dict[str, Any]) -> bool:
        """Carry out one command; False when the worker should exit."""
        name = command.get("cmd")
        if name == "start":
            settle_heap()
            for listener in self.listeners:
                log = listener.peer.frame_log
                log.received.clear()
                log.played.clear()
                listener.meter.active = True
            self.metering = self.window_opened = True
            self.metered_from, self.cpu_from = time.monotonic(), process_cpu_seconds()
            self.emit({"event": "started"})
        elif name == "stop":
            for listener in self.listeners:
                listener.meter.active = False
            self.metering = False
            self.metered_until, self.cpu_until = time.monotonic(), process_cpu_seconds()
            self.emit({"event": "stopped"})
        elif name == "report":
            speaker = PublicKey(bytes.fromhex(str(command["speaker"])))
            sent = {int(seq): float(at) for seq, at in command["sent"]}
            self.emit({"event": "report", **self.report(speaker, sent)})
        elif name == "exit":
            return False
        else:
            raise WorkerError(f"unknown command {name!r}")
        return True

    def report(self, speaker: PublicKey, sent: dict[int, float]) -> dict[str, Any]:
        return build_report(
            self.listeners,
            speaker,
            sent,
            metered_s=self.metered_until - self.metered_from,
            cpu_s=self.cpu_until - self.cpu_from,
            memo=self.memo,
        )


def settle_heap() -> None:
    """Collect garbage once, then exempt every surviving object from later collections.

    One process here holds the room state of hundreds of peers, a heap a
    hundred times a real peer's; a full collection over it stalls the event
    loop for a quarter of a second at 300 listeners, seconds at 1,000, and
    every peer on the loop with it (handshakes time out, probes go unanswered).
    Frozen, the long-lived state is no longer traversed, and collections look
    only at what the measured traffic allocates, as on a peer's own device.
    While the room fills, the heap is frozen every :data:`FREEZE_EVERY` joins.
    """
    gc.collect()
    gc.freeze()


def build_report(
    listeners: list[Listener],
    speaker: PublicKey,
    sent: dict[int, float],
    *,
    metered_s: float,
    cpu_s: float,
    memo: CryptoMemo | None,
) -> dict[str, Any]:
    """What the listeners measured, for the frames in ``sent`` (seq → send time).

    Latencies and hold times are whole microseconds.  Per listener: its key and
    parent, frames delivered, their latencies, playout latencies (listeners with
    a jitter buffer), and the datagrams and bytes it received while metered.
    Per worker: the relay meters summed, all hold-time samples, and the
    process's CPU seconds over the metered span.
    """
    rows = []
    totals = dict.fromkeys(("relay_batches", "relay_frames", "relay_copies", "leaf_frames"), 0)
    cpu = {"relay_cpu": 0.0, "leaf_cpu": 0.0}
    arrival_us: list[int] = []
    hold_us: list[int] = []
    handling_us: list[int] = []
    for listener in listeners:
        peer, meter = listener.peer, listener.meter
        latency_us = [
            round((at - sent[seq]) * 1e6)
            for key, seq, at in peer.frame_log.received
            if seq in sent and key == speaker
        ]
        played_us = [
            round((at - sent[seq]) * 1e6)
            for key, seq, at in peer.frame_log.played
            if seq in sent and key == speaker
        ]
        parent = peer.core.media.parent
        rows.append(
            {
                "key": peer.me.raw.hex(),
                "parent": parent.raw.hex() if parent is not None else None,
                "delivered": len(latency_us),
                "latency_us": latency_us,
                "played_us": played_us if listener.jitter else None,
                "frames": meter.frames_received,
                "frame_bytes": meter.frame_bytes,
                "other": meter.other_received,
                "other_bytes": meter.other_bytes,
                "failure": listener.failure,
            }
        )
        for name in totals:
            totals[name] += getattr(meter, name)
        cpu["relay_cpu"] += meter.relay_cpu
        cpu["leaf_cpu"] += meter.leaf_cpu
        arrival_us.extend(meter.arrival_us)
        hold_us.extend(meter.hold_us)
        handling_us.extend(meter.handling_us)
    return {
        "listeners": rows,
        "meters": {
            **totals,
            **cpu,
            "arrival_us": arrival_us,
            "hold_us": hold_us,
            "handling_us": handling_us,
        },
        "metered_s": metered_s,
        "process_cpu_s": cpu_s,
        "memo": None if memo is None else {"hits": memo.hits, "misses": memo.misses},
    }


# --- the process ---------------------------------------------------------------------


async def _lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[dict[str, Any]]:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield _parse(line)
    if buffer.strip():
        yield _parse(buffer)


def _parse(line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        raise WorkerError(f"not a JSON command: {line[:80]!r}") from None
    if not isinstance(value, dict):
        raise WorkerError(f"not a JSON object: {line[:80]!r}")
    return value


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def _main() -> None:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stdin:
        commands = _lines(stdin)
        try:
            first = await commands.__anext__()
        except StopAsyncIteration:
            return
        config = WorkerConfig.from_json(first)
        raise_open_file_limit(FDS_PER_LISTENER * len(config.names) + 64)
        if config.shared_crypto:
            with sharing_crypto_results() as memo:
                await Worker(config, _emit, memo).run(commands)
        else:
            await Worker(config, _emit).run(commands)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        trio.run(_main)
    except KeyboardInterrupt:
        return 130
    except MitalkError as exc:
        _emit({"event": "error", "message": str(exc)})
        return 2
    except BaseExceptionGroup as group:
        leaves = leaf_exceptions(group)
        if all(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            return 130
        problems = [leaf for leaf in leaves if isinstance(leaf, MitalkError)]
        if not problems:
            raise
        _emit({"event": "error", "message": "; ".join(str(p) for p in problems)})
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
