"""The lab itself: hosts reach each other over the bridge, a pulled cable cuts one off,
and nothing of it outlives the test, not even when the test fails."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from . import netns_lab
from .netns_lab import PREFIX, LabUnavailable, NetnsLab, open_lab

pytestmark = pytest.mark.lan

PROBE_PORT = 9999
ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(20)
print("ready", flush=True)
for _ in range(int(sys.argv[3])):
    data, sender = s.recvfrom(64)
    s.sendto(data, sender)
"""
ASK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[3]))
s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
try:
    print(s.recvfrom(64)[0].decode())
except TimeoutError:
    print("no answer")
"""


def _ask(lab: NetnsLab, namespace: str, target: str, timeout: float) -> str:
    """One UDP datagram from ``namespace`` to ``target``'s echo; its answer or "no answer"."""
    argv = [sys.executable, "-c", ASK, target, str(PROBE_PORT), str(timeout)]
    result = subprocess.run(
        lab.command(namespace, argv), capture_output=True, text=True, timeout=timeout + 10
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _root_links() -> set[str]:
    listing = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip() for line in listing.stdout.splitlines()}


def _lab_namespaces(tag: str) -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in listing.stdout.splitlines() if line.startswith(tag)]


def test_hosts_reach_each_other_over_the_bridge_until_a_cable_is_pulled(lab: NetnsLab) -> None:
    first, second = lab.namespaces[:2]
    target = lab.address(second)
    echo = lab.run(
        second,
        [sys.executable, "-c", ECHO, target, str(PROBE_PORT), "2"],
        stdout=subprocess.PIPE,
    )
    try:
        assert echo.stdout is not None and echo.stdout.readline().strip() == b"ready"
        assert _ask(lab, first, target, timeout=5) == "ping"
        lab.link_down(second)
        assert _ask(lab, first, target, timeout=0.5) == "no answer"
        lab.link_up(second)
        assert _ask(lab, first, target, timeout=5) == "ping"
        assert echo.wait(timeout=10) == 0
    finally:
        if echo.stdout is not None:
            echo.stdout.close()
    # The addresses exist only inside the lab.
    assert target not in subprocess.run(["ip", "-o", "addr"], capture_output=True,
                                        text=True, check=True).stdout  # fmt: skip


def test_the_lab_is_removed_even_when_the_test_fails() -> None:
    try:
        netns_lab.check_available()
    except LabUnavailable as exc:
        pytest.skip(f"the LAN lab can't run here: {exc}")
    links_before = _root_links()
    with pytest.raises(RuntimeError, match="the test failed"), open_lab(2) as lab:
        assert len(_lab_namespaces(lab.tag)) == 3  # two hosts and the switch
        assert _root_links() == links_before, "the lab added a link to the root namespace"
        lab.run(lab.namespaces[0], ["sleep", "60"])
        raise RuntimeError("the test failed")
    assert _lab_namespaces(lab.tag) == []
    assert _root_links() == links_before


def test_leftovers_of_an_aborted_run_are_removed_but_a_live_run_is_kept() -> None:
    try:
        netns_lab.check_available()
    except LabUnavailable as exc:
        pytest.skip(f"the LAN lab can't run here: {exc}")
    # No process can have this id: it is above the kernel's largest pid_max.
    dead = f"{PREFIX}4194305-000000-h1"
    subprocess.run(["ip", "netns", "add", dead], check=True)
    leftover = subprocess.Popen(
        ["ip", "netns", "exec", dead, "sh", "-c", "echo inside; exec sleep 60"],
        stdout=subprocess.PIPE,
    )
    try:
        assert leftover.stdout is not None and leftover.stdout.readline() == b"inside\n"
        with open_lab(1) as lab:
            assert dead not in _lab_namespaces(PREFIX)
            assert leftover.wait(timeout=10) == -signal.SIGKILL
            assert netns_lab.remove_stale_labs() == []
            assert len(_lab_namespaces(lab.tag)) == 2
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()
        if leftover.stdout is not None:
            leftover.stdout.close()
        subprocess.run(["ip", "netns", "delete", dead], capture_output=True, check=False)


def test_without_root_or_iproute2_the_lab_says_why_it_cannot_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(LabUnavailable, match="need root"):
        netns_lab.create_lab(2)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LabUnavailable, match="`ip` command"):
        netns_lab.create_lab(2)
