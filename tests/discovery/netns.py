"""A private two-namespace LAN for mDNS tests, so nothing reaches a real network.

``Lan.create()`` makes two network namespaces joined by a veth pair (created
directly inside them, so it never exists in the host's namespace), with
``HOST_IP`` on one side and ``GUEST_IP`` on the other, loopback up and multicast on.
Processes run inside with ``ip netns exec``; zeroconf instances for in-process tests
are created by :func:`in_netns` in a thread that first enters the namespace (a
socket belongs to the namespace of the thread that made it, and ``setns`` changes
only the calling thread).  ``Lan.destroy()`` deletes both namespaces.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from itertools import count
from typing import Final, TypeVar

import attrs

T = TypeVar("T")

HOST_IP: Final = "10.231.7.200"
GUEST_IP: Final = "10.231.7.10"
"""Sorts before ``HOST_IP`` as text, so LAN candidates on the guest side are tried first."""
CLONE_NEWNET: Final = 0x40000000
_counter = count()


def unavailable_reason() -> str | None:
    """Why namespaces can't be used here, or ``None`` when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False, timeout=10
    )
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, check=False, timeout=10
    )
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@attrs.frozen
class Lan:
    host_ns: str
    guest_ns: str

    @classmethod
    def create(cls) -> Lan:
        tag = f"mtkd{os.getpid() % 100000}x{next(_counter)}"
        lan = cls(f"{tag}h", f"{tag}g")
        try:
            _ip("netns", "add", lan.host_ns)
            _ip("netns", "add", lan.guest_ns)
            _ip("link", "add", "veth-h", "netns", lan.host_ns, "type", "veth",
                "peer", "name", "veth-g", "netns", lan.guest_ns)  # fmt: skip
            for ns, device, address in (
                (lan.host_ns, "veth-h", HOST_IP),
                (lan.guest_ns, "veth-g", GUEST_IP),
            ):
                _ip("-n", ns, "addr", "add", f"{address}/24", "dev", device)
                _ip("-n", ns, "link", "set", device, "multicast", "on", "up")
                _ip("-n", ns, "link", "set", "lo", "multicast", "on", "up")
        except BaseException:
            lan.destroy()
            raise
        return lan

    def destroy(self) -> None:
        for ns in (self.host_ns, self.guest_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False,
                           timeout=10)  # fmt: skip

    def command(self, ns: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns, *argv]


def _enter(ns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    path = f"/run/netns/{ns}"
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns({path}): {os.strerror(error)}")
    finally:
        os.close(fd)
    if os.stat("/proc/thread-self/ns/net").st_ino != os.stat(path).st_ino:
        raise RuntimeError(f"this thread did not enter {ns}")


def in_netns(ns: str, make: Callable[[], T]) -> T:
    """``make()`` called in a new thread inside namespace ``ns`` (blocking until it returns)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            _enter(ns)
            result.append(make())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"in-netns-{ns}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]
