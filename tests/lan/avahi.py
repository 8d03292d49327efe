"""A private Avahi (the stock Linux mDNS daemon) inside one lab namespace.

``avahi-daemon`` and its client ``avahi-browse`` talk over the D-Bus *system*
bus, so this runs a private ``dbus-daemon`` (a unix socket in the work
directory, a permissive policy) and points both at it through
``DBUS_SYSTEM_BUS_ADDRESS``.  The daemon is confined to the namespace's lab
interface (``allow-interfaces``), publishes nothing of its own, and runs in a
mount namespace of its own with a fresh tmpfs on ``/run``: its pid file and
socket paths are compiled in (``/run/avahi-daemon``), and this way two runs
never see each other's, and the machine's ``/run`` is left alone.

Both daemons are started synchronously (so a test can be skipped, with the
reason, before its trio loop starts); a thread copies each one's output to a
log file and reports the line that says it is ready.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import attrs

from .netns_lab import HOST_LINK, NetnsLab

TOOLS: Final = ("dbus-daemon", "avahi-daemon", "avahi-browse", "unshare", "mount")
STARTUP_TIMEOUT: Final = 15.0
STOP_TIMEOUT: Final = 5.0

BUS_CONFIG: Final = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

DAEMON_CONFIG: Final = f"""[server]
host-name=mitalk-lab-browser
use-ipv4=yes
use-ipv6=no
allow-interfaces={HOST_LINK}
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000

[wide-area]
enable-wide-area=no

[publish]
disable-publishing=yes

[reflector]
enable-reflector=no
"""

DAEMON_SCRIPT: Final = (
    "mount -t tmpfs mitalk-lab /run && mkdir /run/avahi-daemon && exec avahi-daemon "
    '--no-drop-root --no-chroot --no-rlimits --no-proc-title -f "$1"'
)


class AvahiUnavailable(Exception):
    """Avahi can't run here; the message says why."""


@attrs.frozen
class Avahi:
    """A running private Avahi: run ``avahi-browse`` in ``namespace`` with ``environment()``."""

    namespace: str
    bus_address: str

    def environment(self) -> dict[str, str]:
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.bus_address}


@attrs.define(eq=False)
class _Watched:
    """A daemon whose output a thread copies to ``log``, noting the first line with ``marker``."""

    process: subprocess.Popen[bytes]
    log: Path
    marker: bytes
    found: bytes | None = None
    done: threading.Event = attrs.Factory(threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._copy, name=f"watch {self.log.name}")
        self._thread.start()

    def _copy(self) -> None:
        output = self.process.stdout
        assert output is not None
        with output, self.log.open("wb") as log:
            for line in output:
                log.write(line)
                log.flush()
                if self.found is None and self.marker in line:
                    self.found = line
                    self.done.set()
        self.done.set()  # the process closed its output: it will not be ready

    def wait_ready(self, what: str) -> bytes:
        """The marker line; :class:`AvahiUnavailable` if the daemon ends or takes too long."""
        self.done.wait(STARTUP_TIMEOUT)
        if self.found is not None:
            return self.found
        tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
        status = self.process.poll()
        state = "is not ready" if status is None else f"exited with status {status}"
        raise AvahiUnavailable(f"{what} {state}: {' / '.join(tail) or 'no output'}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._thread is not None:
            self._thread.join()


def check_tools() -> None:
    """Raise :class:`AvahiUnavailable` naming what is not installed."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise AvahiUnavailable(
            f"not installed: {', '.join(missing)} (Debian: avahi-daemon, avahi-utils, dbus)"
        )


def _watch(lab: NetnsLab, namespace: str, argv: list[str], log: Path, marker: bytes,
           env: dict[str, str] | None = None) -> _Watched:  # fmt: skip
    process = lab.run(
        namespace, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    watched = _Watched(process, log, marker)
    watched.start()
    return watched


@contextlib.contextmanager
def open_avahi(lab: NetnsLab, namespace: str, workdir: Path) -> Iterator[Avahi]:
    """A private D-Bus and Avahi daemon in ``namespace``, stopped on the way out.

    Raises :class:`AvahiUnavailable` (leaving nothing running) if either can't start.
    """
    check_tools()
    workdir.mkdir(parents=True, exist_ok=True)
    bus_config = workdir / "bus.conf"
    bus_config.write_text(BUS_CONFIG.format(socket=workdir / "bus.socket"), encoding="utf-8")
    daemon_config = workdir / "avahi-daemon.conf"
    daemon_config.write_text(DAEMON_CONFIG, encoding="utf-8")
    with contextlib.ExitStack() as running:
        bus = _watch(
            lab,
            namespace,
            ["dbus-daemon", f"--config-file={bus_config}", "--nofork", "--nopidfile",
             "--print-address=1"],
            workdir / "dbus.log",
            b"unix:path=",
        )  # fmt: skip
        running.callback(bus.stop)
        avahi = Avahi(namespace, bus.wait_ready("dbus-daemon").decode().strip())
        daemon = _watch(
            lab,
            namespace,
            ["unshare", "--mount", "--propagation", "private", "--",
             "sh", "-c", DAEMON_SCRIPT, "avahi-daemon", str(daemon_config)],
            workdir / "avahi-daemon.log",
            b"Server startup complete",
            env=avahi.environment(),
        )  # fmt: skip
        running.callback(daemon.stop)
        daemon.wait_ready("avahi-daemon")
        yield avahi


def parse_browse(output: str) -> dict[str, dict[str, str]]:
    """The resolved services (``=`` lines) of ``avahi-browse -p`` output: each one's TXT
    fields, by service name."""
    found = {}
    for line in output.splitlines():
        parts = line.split(";", 9)
        if parts[0] == "=" and len(parts) == 10:
            found[parts[3]] = dict(text.partition("=")[::2] for text in _txt_strings(parts[9]))
    return found


def _txt_strings(field: str) -> list[str]:
    """The strings of an ``avahi-browse -p`` TXT field: each is in double quotes, with
    ``\\"`` and ``\\\\`` for quote and backslash and ``\\DDD`` (decimal) for any other
    byte outside printable ASCII, e.g. ``"name=Caf\\195\\169" "n=0"``."""
    strings = []
    current: bytearray | None = None
    position = 0
    while position < len(field):
        char = field[position]
        position += 1
        if current is None:
            if char == '"':
                current = bytearray()
        elif char == '"':
            strings.append(current.decode("utf-8", errors="replace"))
            current = None
        elif char == "\\" and field[position : position + 3].isdigit():
            current.append(int(field[position : position + 3]) & 0xFF)
            position += 3
        elif char == "\\" and position < len(field):
            current += field[position].encode()
            position += 1
        else:
            current += char.encode()
    return strings
