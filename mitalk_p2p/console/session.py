"""The console of a running peer: commands in, events and a status line out.

Commands come from one :class:`LineSource` (a terminal with line editing, piped
stdin, or a script file), and every command goes through
:func:`~.commands.parse_command`, so a script does exactly what typing would.
Output is either human lines (events as sentences, answers to ``/who`` and
friends, a live status line on a terminal), or with ``json_events`` one JSON
object per line for tools, the human text then going to the error stream.

Bad input never ends the session: each problem is one line, ``error: ...``.
Scripts may also use ``/sleep SECONDS`` to pace themselves.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping
from typing import Final, Protocol, TextIO

import attrs
import trio

from ..audio.playout import Playback
from ..core.errors import MitalkError
from ..core.identity import PublicKey
from ..core.peer import PeerEvent
from ..runtime.peer_runtime import RunningPeer
from .commands import (
    HELP_TEXT,
    LeaveRoom,
    LocalQuery,
    NoCommand,
    QueryKind,
    RoomAction,
    complete,
    parse_command,
)
from .event_log import NameBook, describe_event, event_to_json
from .status import LinkQuality, render_status, render_tree, render_who, status_view

STATUS_INTERVAL: Final = 1.0
MAX_SLEEP: Final = 3600.0


class LineSource(Protocol):
    async def read_line(self) -> str | None:
        """The next command line, or None at the end of input."""


@attrs.define
class ScriptLines:
    """The lines of a script file, in order."""

    lines: list[str]
    _index: int = 0

    async def read_line(self) -> str | None:
        await trio.lowlevel.checkpoint()
        if self._index >= len(self.lines):
            return None
        self._index += 1
        return self.lines[self._index - 1]


@attrs.define
class StreamLines:
    """Lines from a text stream (piped stdin), read in a worker thread."""

    stream: TextIO

    async def read_line(self) -> str | None:
        line = await trio.to_thread.run_sync(self.stream.readline, abandon_on_cancel=True)
        return line if line else None


@attrs.define
class TerminalLines:
    """Lines typed at a terminal, with readline editing and tab-completion of names."""

    completer_state: Callable[[], object]

    async def read_line(self) -> str | None:
        try:
            return await trio.to_thread.run_sync(input, abandon_on_cancel=True)
        except EOFError:
            return None


def install_completion(session: ConsoleSession) -> None:
    """Tab-completes commands and member names, where the readline module exists."""
    try:
        import readline
    except ImportError:
        return

    def completer(text: str, index: int) -> str | None:
        line = readline.get_line_buffer()
        options = complete(line, session.peer.state)
        return options[index] if index < len(options) else None

    readline.set_completer(completer)
    readline.parse_and_bind("tab: complete")


@attrs.define(eq=False)
class ConsoleSession:
    peer: RunningPeer
    out: TextIO
    err: TextIO
    json_events: bool = False
    show_status: bool = False
    playback: Playback | None = None
    names: NameBook = attrs.Factory(NameBook)
    errors: int = 0
    _status_shown: bool = False

    # --- output --------------------------------------------------------------------

    def say(self, text: str) -> None:
        """A human line: to stdout, or to stderr when stdout carries JSON."""
        self._clear_status()
        stream = self.err if self.json_events else self.out
        stream.write(text + "\n")
        stream.flush()

    def emit(self, record: Mapping[str, object]) -> None:
        if self.json_events:
            self.out.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
            self.out.flush()

    def error(self, message: str) -> None:
        self.errors += 1
        self.say(f"error: {message}")
        self.emit({"event": "error", "message": message, "time": self._now()})

    def on_event(self, event: PeerEvent) -> None:
        state = self.peer.state
        if state is not None:
            self.names.learn(state)
        self.names.observe(event)
        record = event_to_json(event, self.names, self._now())
        if record is not None:
            self.emit(record)
        line = describe_event(event, self.names)
        if line is not None:
            self.say(line)

    def _now(self) -> float:
        return round(self.peer.shared_time(), 6)

    def _clear_status(self) -> None:
        if self._status_shown:
            self.err.write("\r\x1b[K")
            self._status_shown = False

    def draw_status(self) -> None:
        speaking = self.playback.speaking if self.playback is not None else frozenset()
        line = render_status(
            status_view(self.peer.state, self.peer.me, speaking, self.link_quality())
        )
        self.err.write("\r\x1b[K" + line)
        self.err.flush()
        self._status_shown = True

    def link_quality(self) -> LinkQuality | None:
        media = self.peer.core.media
        parent = media.parent
        for link in media.statistics().links:
            if link.peer == parent and link.role == "parent":
                return LinkQuality(link.rtt_ms, link.loss)
        return None

    # --- commands ------------------------------------------------------------------

    async def run_lines(self, source: LineSource, *, leave_at_end: bool) -> None:
        """Run commands until the input ends (then leave, if asked) or the peer leaves."""
        while not self.peer.left.is_set():
            line = await source.read_line()
            if line is None:
                if leave_at_end:
                    self.peer.leave()
                return
            await self.run_line(line)

    async def run_line(self, line: str) -> None:
        text = line.strip()
        if text.split(maxsplit=1)[:1] == ["/sleep"]:
            await self._sleep(text)
            return
        try:
            command = parse_command(text, self.peer.state, self.peer.me)
        except MitalkError as exc:
            self.error(str(exc))
            return
        if isinstance(command, NoCommand):
            return
        if isinstance(command, LeaveRoom):
            self.say("leaving the room")
            self.peer.leave()
            return
        if isinstance(command, LocalQuery):
            answer = self.answer(command.kind)
            self.say(answer)
            self.emit(
                {"event": "answer", "query": command.kind.name.lower(), "text": answer,
                 "time": self._now()}
            )
            return
        assert isinstance(command, RoomAction)
        try:
            self.peer.act(command.op)
        except MitalkError as exc:
            self.error(f"{command.description}: {exc}")
            return
        self.emit({"event": "command", "command": command.description, "time": self._now()})

    async def _sleep(self, text: str) -> None:
        argument = text[len("/sleep") :].strip()
        try:
            seconds = float(argument)
        except ValueError:
            self.error(f"/sleep takes a number of seconds, not {argument!r}")
            return
        if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SLEEP:
            self.error(f"/sleep takes 0 to {MAX_SLEEP:g} seconds, not {argument}")
            return
        with trio.move_on_after(seconds):
            await self.peer.left.wait()

    def answer(self, kind: QueryKind) -> str:
        peer = self.peer
        state = peer.state
        if kind is QueryKind.HELP:
            return HELP_TEXT
        if kind is QueryKind.STATS:
            return self.stats_text()
        if state is None:
            return "not in a room yet"
        if kind is QueryKind.WHO:
            speaking = self.playback.speaking if self.playback is not None else frozenset()
            return render_who(state, peer.me, speaking)
        return self.tree_text()

    def tree_text(self) -> str:
        peer = self.peer
        coordinator = peer.core.coordinator
        if coordinator is not None and coordinator.tree is not None:
            tree = coordinator.tree
            parents: dict[PublicKey, PublicKey | None] = dict(tree.parents)
            return render_tree(parents, peer.name_of, root=tree.root)
        media = peer.core.media
        lines = [f"parent:   {peer.name_of(media.parent) if media.parent else '(none yet)'}"]
        children = ", ".join(peer.name_of(c) for c in media.children) or "(none)"
        lines.append(f"children: {children}")
        lines.append("(the whole tree is known to the host; ask there for /tree)")
        return "\n".join(lines)

    def stats_text(self) -> str:
        stats = self.peer.statistics()
        media = stats.peer.media
        lines = [
            f"frames: sent {media.frames_sent}, forwarded {media.frames_forwarded}, "
            f"accepted {media.frames_accepted}, dropped {media.dropped_total}",
            f"links: {stats.control.links_open} open, {stats.control.dial_failures} failed dials;"
            f" udp in {stats.udp.datagrams_received} out {stats.udp.datagrams_sent}",
        ]
        quality = self.link_quality()
        if quality is not None:
            lines.append(f"parent link: {quality}")
        if self.playback is not None:
            overall = self.playback.statistics().overall
            lines.append(
                f"playback: {overall.frames_played} played, {overall.frames_fec} FEC, "
                f"{overall.frames_concealed} concealed "
                f"({100 * overall.concealed_fraction:.1f} %)"
            )
        return "\n".join(lines)

    async def run_status(self) -> None:
        """Redraw the status line every second (terminals only)."""
        while True:
            self.draw_status()
            await trio.sleep(STATUS_INTERVAL)


def default_streams() -> tuple[TextIO, TextIO]:
    return sys.stdout, sys.stderr
