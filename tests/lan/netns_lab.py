"""A small LAN built from Linux network namespaces, for tests that need real hosts.

Layout: one *switch* namespace holds a bridge (``br0``, multicast snooping off, so
it floods multicast like a hub).  Each *host* namespace has ``lo`` and ``eth0``, one
end of a veth pair whose other end (``p1``, ``p2``, ...) is a port of the bridge.
The links are created from inside the switch namespace straight into their host
namespaces, so nothing is ever added to the root namespace; the hosts' addresses
(:data:`SUBNET`) exist only on those links.

Namespace names are ``mtklan-<pid>-<random>-<role>``.  The creator's process id
lets a later run tell the leftovers of an aborted run (owner gone) from a lab
that a parallel run is still using (owner alive); :func:`remove_stale_labs`
deletes only the former.

Everything here shells out to ``ip`` (iproute2) and needs root.
:func:`create_lab` raises :class:`LabUnavailable` with the reason when that is
not possible, so callers can skip rather than fail.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any, Final

import attrs
import trio

logger = logging.getLogger(__name__)

PREFIX: Final = "mtklan-"
SUBNET: Final = ipaddress.IPv4Network("10.213.0.0/24")
FIRST_HOST: Final = 11
"""Host *i* (from 0) gets ``SUBNET`` address ``FIRST_HOST + i``: 10.213.0.11, .12, ..."""
BRIDGE: Final = "br0"
HOST_LINK: Final = "eth0"
MAX_HOSTS: Final = 64
IP_TIMEOUT: Final = 10.0
"""Seconds any one ``ip`` command may take."""


class LabUnavailable(Exception):
    """Network namespaces can't be made here; the message says why."""


@attrs.frozen
class LabHost:
    """One host of the lab: its namespace, its address and its port on the bridge."""

    namespace: str
    address: str
    port: str


@attrs.define(eq=False)
class NetnsLab:
    """A running lab.  Close it (or use :func:`open_lab`) to remove every part of it."""

    tag: str
    """The unique part of every name, ``mtklan-<pid>-<random>``."""
    switch: str
    """The namespace holding the bridge."""
    hosts: tuple[LabHost, ...]
    _processes: list[subprocess.Popen[bytes]] = attrs.Factory(list)
    closed: bool = False

    @property
    def namespaces(self) -> tuple[str, ...]:
        """The host namespaces, in order."""
        return tuple(host.namespace for host in self.hosts)

    def host(self, namespace: str) -> LabHost:
        for host in self.hosts:
            if host.namespace == namespace:
                return host
        raise KeyError(f"{namespace!r} is not a host of lab {self.tag}")

    def address(self, namespace: str) -> str:
        """The IPv4 address of ``namespace``'s ``eth0``."""
        return self.host(namespace).address

    def command(self, namespace: str, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed so that it runs inside ``namespace``.

        ``ip netns exec`` execs the command in place, so the process id of what
        starts is the command's own.
        """
        self.host(namespace)
        return ["ip", "netns", "exec", namespace, *argv]

    def run(self, namespace: str, argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` in ``namespace``; :meth:`close` kills it if it still runs."""
        process: subprocess.Popen[bytes] = subprocess.Popen(self.command(namespace, argv), **popen)
        self._processes.append(process)
        return process

    async def open_process(
        self, namespace: str, argv: Sequence[str], **options: Any
    ) -> trio.Process:
        """:meth:`run` for trio: a :class:`trio.Process` the caller must wait for."""
        return await trio.lowlevel.open_process(self.command(namespace, argv), **options)

    def link_down(self, namespace: str) -> None:
        """Pull ``namespace``'s cable: its bridge port goes down.

        The host keeps its interface and address, as a laptop whose Wi-Fi drops
        does; it sees no carrier, and whatever it sends is lost.
        """
        _ip("-n", self.switch, "link", "set", self.host(namespace).port, "down")

    def link_up(self, namespace: str) -> None:
        """Plug ``namespace``'s cable back in."""
        _ip("-n", self.switch, "link", "set", self.host(namespace).port, "up")

    def close(self) -> None:
        """Stop what still runs in the lab and delete its namespaces (and so its links).

        Safe to call twice, and after a partial :func:`create_lab`.
        """
        if self.closed:
            return
        self.closed = True
        for process in self._processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for namespace in (*self.namespaces, self.switch):
            _kill_namespace_processes(namespace)
            _delete_namespace(namespace)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def _namespace_names() -> list[str]:
    listing = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def _kill_namespace_processes(namespace: str) -> None:
    """SIGKILL whatever runs in ``namespace``: a lab namespace holds only what a lab started."""
    result = _ip("netns", "pids", namespace, check=False)
    for text in result.stdout.split():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(text), signal.SIGKILL)


def _delete_namespace(namespace: str) -> None:
    result = _ip("netns", "delete", namespace, check=False)
    if result.returncode != 0 and namespace in _namespace_names():
        logger.warning("could not delete namespace %s: %s", namespace, result.stderr.strip())


def _owner_alive(name: str) -> bool:
    pid_text = name.removeprefix(PREFIX).split("-", 1)[0]
    if not pid_text.isdigit() or int(pid_text) == 0:
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_labs() -> list[str]:
    """Delete the namespaces of labs whose creating process is gone; returns their names.

    What still runs inside one was started there by that aborted run and would
    keep the namespace and its links alive, so it is killed first.
    """
    stale = [
        name for name in _namespace_names() if name.startswith(PREFIX) and not _owner_alive(name)
    ]
    for name in stale:
        _kill_namespace_processes(name)
        _delete_namespace(name)
    return stale


def check_available() -> None:
    """Raise :class:`LabUnavailable` unless namespaces can be made here."""
    if os.geteuid() != 0:
        raise LabUnavailable("network namespaces need root (run the tests as root)")
    if shutil.which("ip") is None:
        raise LabUnavailable("the `ip` command (iproute2) is not installed")
    probe = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}-probe"
    try:
        result = _ip("netns", "add", probe, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabUnavailable(f"`ip netns add` failed: {exc}") from None
    if result.returncode != 0:
        reason = result.stderr.strip() or f"exit status {result.returncode}"
        raise LabUnavailable(f"`ip netns add` failed: {reason}")
    _delete_namespace(probe)


def create_lab(count: int) -> NetnsLab:
    """Build a lab of ``count`` hosts on one bridge.

    Raises :class:`LabUnavailable` if namespaces can't be made at all, and
    RuntimeError (after removing what was made) if a later step fails.
    """
    if not 1 <= count <= MAX_HOSTS:
        raise ValueError(f"a lab has 1 to {MAX_HOSTS} hosts, not {count}")
    check_available()
    remove_stale_labs()
    tag = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
    hosts = tuple(
        LabHost(f"{tag}-h{i + 1}", str(SUBNET[FIRST_HOST + i]), f"p{i + 1}") for i in range(count)
    )
    lab = NetnsLab(tag, f"{tag}-sw", hosts)
    try:
        _build(lab)
    except BaseException:
        lab.close()
        raise
    logger.info("lab %s: %d hosts on %s", tag, count, SUBNET)
    return lab


def _build(lab: NetnsLab) -> None:
    switch = lab.switch
    _ip("netns", "add", switch)
    _ip("-n", switch, "link", "add", BRIDGE, "type", "bridge", "mcast_snooping", "0")
    _ip("-n", switch, "link", "set", BRIDGE, "up")
    prefix = SUBNET.prefixlen
    for host in lab.hosts:
        ns = host.namespace
        _ip("netns", "add", ns)
        # Fresh links skip IPv6 duplicate address detection, so their link-local
        # addresses are usable at once instead of after a second or two.
        _sysctl(ns, "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
        _ip("-n", switch, "link", "add", host.port, "type", "veth",
            "peer", "name", HOST_LINK, "netns", ns)  # fmt: skip
        _ip("-n", switch, "link", "set", host.port, "master", BRIDGE, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "addr", "add", f"{host.address}/{prefix}", "dev", HOST_LINK)
        _ip("-n", ns, "link", "set", HOST_LINK, "multicast", "on", "up")
        _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", HOST_LINK)


def _sysctl(namespace: str, *settings: str) -> None:
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, "sysctl", "-qw", *settings],
        capture_output=True,
        text=True,
        timeout=IP_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        logger.info("sysctl in %s: %s", namespace, result.stderr.strip())


@contextlib.contextmanager
def open_lab(count: int) -> Iterator[NetnsLab]:
    """:func:`create_lab`, closed on the way out whatever happens."""
    lab = create_lab(count)
    try:
        yield lab
    finally:
        lab.close()
