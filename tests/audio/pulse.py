"""A private PulseAudio server with null sinks, so tests can use real sound devices.

How it works:

* :func:`running_pulse_server` starts ``pulseaudio`` in the foreground as a child
  process (``--daemonize=no``, ``-n`` so the system's ``default.pa`` is not loaded,
  ``--exit-idle-time=-1 --disallow-exit`` so it stays up), with a script that loads
  ``module-native-protocol-unix`` on a socket in a fresh temporary directory and one
  ``module-null-sink`` per :class:`NullSink`.  HOME, XDG and PULSE_* variables all
  point into that directory, so the server reads and writes nothing of the user's,
  and D-Bus is pointed at a socket that does not exist.  Running as root works (the
  server only warns about it).
* A script line that fails to load a module is only logged (the server starts
  anyway), so after start-up the sinks are checked with ``pactl``.
* Readiness is a real event, not a poll: the server's systemd notification
  (``READY=1`` on the datagram socket named by ``NOTIFY_SOCKET``), raced against the
  process exiting (a pidfd).  Stop is SIGTERM to the server's own PID and a wait
  for it; the temporary directory is then removed, also when the test failed.
* A null sink plays into nothing at real-time speed; its ``.monitor`` source records
  what was played into it.  So playing into sink ``mic`` and recording ``mic.monitor``
  is a loopback through the real device path.
* PortAudio (Debian's 19.6) has no PulseAudio backend; it reaches the server through
  its ALSA backend and the ALSA ``pulse`` PCM plugin (``libasound2-plugins``).  An
  extra ALSA configuration file, appended to ``ALSA_CONFIG_PATH``, defines one PCM per
  sink for playback (:meth:`PulseServer.playback_device`) and one per monitor for
  capture (:meth:`PulseServer.monitor_device`), each with the server's socket built
  in.  PortAudio lists every PCM defined there, so those names are device specs for
  :func:`mitalk_p2p.audio.devices.find_device`.  ALSA's ``default`` device goes to
  the server's default sink (``speaker``) and source (``mic.monitor``).
* A null sink that no client asks for low latency renders in 2 s blocks, and a
  client that arrives waits for the current block to end: up to 2 s before the first
  captured frame.  So each sink gets a keep-alive: a ``module-loopback`` from a silent
  null source with a 20 ms latency (adding zeros, it leaves the audio unchanged), and
  a suspend and resume right after start-up, which restarts the sink's clock.
* :attr:`PulseServer.env` holds the client variables (``ALSA_CONFIG_PATH``,
  ``PULSE_SERVER``, a private cookie and a client.conf that forbids autospawn): add
  them to a child process's environment.  :func:`pulse_client_environment` sets them
  in this process and makes PortAudio enumerate devices again, since PortAudio only
  does that when it is initialised.

The ``pulse_server`` fixture (session scope) does all of this and skips, with the
reason, when the server cannot run here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

import attrs
import pytest

from mitalk_p2p.audio import devices

STARTUP_TIMEOUT: Final = 10.0
"""Seconds the server gets to report readiness."""

STOP_TIMEOUT: Final = 5.0
"""Seconds the server gets to exit after SIGTERM before it is killed."""

SYSTEM_ALSA_CONFIG: Final = Path("/usr/share/alsa/alsa.conf")
"""ALSA's top-level configuration, which the test configuration is appended to."""

_NAME: Final = re.compile(r"[A-Za-z0-9_]+")


class PulseUnavailable(Exception):
    """The private server cannot run on this machine; the message says why."""


@attrs.frozen
class NullSink:
    """A sink that plays into nothing; its monitor source records what it was given."""

    name: str = attrs.field()
    rate: int = 48000
    channels: int = 1

    @name.validator
    def _check_name(self, _attribute: object, value: str) -> None:
        if not _NAME.fullmatch(value):
            raise ValueError(f"sink names are letters, digits and _, not {value!r}")


DEFAULT_SINKS: Final = (NullSink("mic"), NullSink("speaker"), NullSink("cd", rate=44100))
"""``mic`` stands for a microphone (play into it, capture its monitor), ``speaker`` for
the speakers (the default sink), ``cd`` is a 44.1 kHz sink."""


@attrs.frozen
class ClientStream:
    """A playback (``sink-input``) or recording (``source-output``) stream of a client."""

    kind: str
    index: int
    device: int
    """The index of the sink or source it is attached to."""
    process_id: int | None
    application: str


@attrs.define(eq=False)
class PulseServer:
    """A running private server; see the module docstring."""

    directory: Path
    sinks: tuple[NullSink, ...]
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    """Client variables that lead PulseAudio and ALSA clients to this server."""

    @property
    def sink_names(self) -> tuple[str, ...]:
        return tuple(sink.name for sink in self.sinks)

    @property
    def socket_path(self) -> Path:
        return self.directory / "native"

    def sink(self, name: str) -> NullSink:
        for sink in self.sinks:
            if sink.name == name:
                return sink
        raise KeyError(f"no null sink {name!r}; sinks: {', '.join(self.sink_names)}")

    def playback_device(self, sink: str) -> str:
        """The device spec (an ALSA PCM name) that plays into ``sink``."""
        return f"test_sink_{self.sink(sink).name}"

    def monitor_device(self, sink: str) -> str:
        """The device spec that records ``sink``'s monitor (what was played into it)."""
        return f"test_monitor_{self.sink(sink).name}"

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (this process's environment by default) plus :attr:`env`."""
        return {**(os.environ if base is None else base), **self.env}

    def log(self) -> str:
        """What the server has logged so far."""
        return (self.directory / "server.log").read_text(errors="replace")

    def pactl(self, *args: str) -> str:
        """Run ``pactl`` against this server (from pulseaudio-utils) and return its output."""
        done = subprocess.run(
            ["pactl", *args],
            env=self.child_env(),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def client_streams(self, process_id: int | None = None) -> list[ClientStream]:
        """The playback and recording streams open on the server, or only those of
        process ``process_id``; the server's own keep-alive loopbacks are left out."""
        streams = []
        for kind in ("sink-inputs", "source-outputs"):
            for entry in json.loads(self.pactl("--format=json", "list", kind)):
                if entry.get("client") is None:
                    continue  # the server's own stream (the keep-alive loopbacks)
                properties = entry.get("properties", {})
                pid = properties.get("application.process.id")
                stream = ClientStream(
                    kind=kind,
                    index=int(entry["index"]),
                    device=int(entry.get("sink", entry.get("source", -1))),
                    process_id=None if pid is None else int(pid),
                    application=str(properties.get("application.name", "")),
                )
                if process_id is None or stream.process_id == process_id:
                    streams.append(stream)
        return streams


def _server_script(socket_path: Path, sinks: Sequence[NullSink]) -> str:
    lines = [f"load-module module-native-protocol-unix socket={socket_path} auth-anonymous=1"]
    for sink in sinks:
        lines.append(
            f"load-module module-null-sink sink_name={sink.name} rate={sink.rate} "
            f"channels={sink.channels} sink_properties=device.description={sink.name}"
        )
    lines.append("load-module module-null-source source_name=keepalive rate=48000 channels=1")
    for sink in sinks:
        lines.append(
            f"load-module module-loopback source=keepalive sink={sink.name} latency_msec=20 "
            "source_dont_move=true sink_dont_move=true"
        )
        lines.append(f"suspend-sink {sink.name} 1")
        lines.append(f"suspend-sink {sink.name} 0")
    names = {sink.name for sink in sinks}
    if "speaker" in names:
        lines.append("set-default-sink speaker")
    if "mic" in names:
        lines.append("set-default-source mic.monitor")
    return "\n".join(lines) + "\n"


def _alsa_config(socket_path: Path, sinks: Sequence[NullSink]) -> str:
    server = f"unix:{socket_path}"
    lines = []
    for sink in sinks:
        lines.append(
            f'pcm.test_sink_{sink.name} {{ type pulse server "{server}" device "{sink.name}" }}'
        )
        lines.append(
            f'pcm.test_monitor_{sink.name} {{ type pulse server "{server}" '
            f'device "{sink.name}.monitor" }}'
        )
    return "\n".join(lines) + "\n"


def _server_env(directory: Path, notify: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PULSE_", "XDG_", "DBUS_")) and key not in ("DISPLAY", "HOME")
    }
    env.update(
        HOME=str(directory / "home"),
        XDG_CONFIG_HOME=str(directory / "config"),
        XDG_RUNTIME_DIR=str(directory / "run"),
        PULSE_RUNTIME_PATH=str(directory / "run"),
        PULSE_STATE_PATH=str(directory / "state"),
        DBUS_SESSION_BUS_ADDRESS=f"unix:path={directory / 'no-bus'}",
        NOTIFY_SOCKET=str(notify),
    )
    return env


def _wait_ready(process: subprocess.Popen[bytes], notify: socket.socket, timeout: float) -> None:
    """Return once the server reports ``READY=1``; PulseUnavailable if it exits or
    stays silent for ``timeout`` seconds."""
    try:
        pidfd: int | None = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        pidfd = None  # no pidfds here: an early exit shows up as the timeout
    try:
        deadline = time.monotonic() + timeout
        watched = [notify.fileno()] + ([] if pidfd is None else [pidfd])
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select(watched, [], [], left)
            if notify.fileno() in readable and b"READY=1" in notify.recv(4096).split(b"\n"):
                return
            if pidfd is not None and pidfd in readable:
                status = process.wait()
                raise PulseUnavailable(f"pulseaudio exited with status {status} at start-up")
        raise PulseUnavailable(f"pulseaudio did not report readiness within {timeout:g} s")
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _log_excerpt(directory: Path, count: int = 4) -> str:
    """The server's last errors (or, failing that, last lines), joined on one line."""
    try:
        lines = (directory / "server.log").read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    errors = [line for line in lines if line.startswith("E:")]
    return " | ".join((errors or [line for line in lines if line.strip()])[-count:])


def _launch(
    program: str, directory: Path, base_config: str, sinks: tuple[NullSink, ...], timeout: float
) -> PulseServer:
    """Write the configuration into ``directory``, start the server and wait until it
    is ready; on failure it is stopped again and PulseUnavailable raised."""
    socket_path = directory / "native"
    (directory / "server.pa").write_text(_server_script(socket_path, sinks))
    (directory / "asound.conf").write_text(_alsa_config(socket_path, sinks))
    (directory / "client.conf").write_text("autospawn = no\n")
    notify_path = directory / "notify"
    command = [
        program, "--daemonize=no", "--system=no", "--use-pid-file=no", "-n",
        f"--file={directory / 'server.pa'}", "--exit-idle-time=-1", "--disallow-exit",
        "--no-cpu-limit", "--realtime=no", "--high-priority=no", "--log-target=stderr",
    ]  # fmt: skip
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        with (directory / "server.log").open("wb") as log:
            process = subprocess.Popen(
                command,
                env=_server_env(directory, notify_path),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=directory,
            )
        try:
            _wait_ready(process, notify, timeout)
        except PulseUnavailable as exc:
            _stop(process)
            raise PulseUnavailable(f"{exc}: {_log_excerpt(directory)}") from None
    env = {
        "ALSA_CONFIG_PATH": f"{base_config}:{directory / 'asound.conf'}",
        "PULSE_SERVER": f"unix:{socket_path}",
        "PULSE_COOKIE": str(directory / "cookie"),
        "PULSE_CLIENTCONFIG": str(directory / "client.conf"),
        "PULSE_RUNTIME_PATH": str(directory / "client-run"),
    }
    return PulseServer(directory, sinks, process, env)


def _check_sinks(server: PulseServer) -> None:
    """PulseUnavailable unless every sink exists: a failing line of the start-up script
    is only logged, the server starts regardless."""
    try:
        listed = json.loads(server.pactl("--format=json", "list", "sinks"))
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
        raise PulseUnavailable(f"pactl cannot query the server ({exc})") from exc
    missing = set(server.sink_names) - {str(entry.get("name")) for entry in listed}
    if missing:
        raise PulseUnavailable(
            f"the server lacks the sinks {', '.join(sorted(missing))}: "
            + _log_excerpt(server.directory)
        )


@contextlib.contextmanager
def running_pulse_server(
    sinks: Sequence[NullSink] = DEFAULT_SINKS, *, timeout: float = STARTUP_TIMEOUT
) -> Iterator[PulseServer]:
    """A private server with ``sinks``, stopped (by its PID, waited for) and its
    directory removed on exit.  Raises :class:`PulseUnavailable` when it cannot run."""
    program = shutil.which("pulseaudio")
    if program is None:
        raise PulseUnavailable("the pulseaudio program is not installed (package pulseaudio)")
    if shutil.which("pactl") is None:
        raise PulseUnavailable("the pactl program is not installed (package pulseaudio-utils)")
    base_config = os.environ.get("ALSA_CONFIG_PATH") or str(SYSTEM_ALSA_CONFIG)
    if not all(Path(part).is_file() for part in base_config.split(":")):
        raise PulseUnavailable(f"the ALSA configuration {base_config} does not exist")
    directory = Path(tempfile.mkdtemp(prefix="mitalk-pulse-"))
    try:
        server = _launch(program, directory, base_config, tuple(sinks), timeout)
        try:
            _check_sinks(server)
            yield server
        finally:
            _stop(server.process)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def pulse_client_environment(server: PulseServer) -> Iterator[None]:
    """Point this process's PortAudio at ``server`` (and back again on exit)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in server.env.items():
            patch.setenv(key, value)
        devices.refresh_devices()
        try:
            yield
        finally:
            patch.undo()
            devices.refresh_devices()


@pytest.fixture(scope="session")
def pulse_server() -> Iterator[PulseServer]:
    """A private PulseAudio server that this process's PortAudio reaches; skips when
    it cannot run here."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running_pulse_server())
        except PulseUnavailable as exc:
            pytest.skip(f"no private PulseAudio server: {exc}")
        stack.enter_context(pulse_client_environment(server))
        names = {device.name for device in devices.list_devices()}
        wanted = server.playback_device(server.sink_names[0])
        if wanted not in names:
            pytest.skip(
                f"PortAudio does not list the device {wanted!r}: is the ALSA pulse plugin "
                "(Debian package libasound2-plugins) installed?"
            )
        yield server
