"""Finding a room by mDNS alone on a LAN of namespaces, and what a stock browser sees.

mDNS runs only inside the lab: every process here is in a lab namespace, whose
only interfaces are ``lo`` and the lab link (``MITALK_MDNS=on`` opts these
processes back in; the test suite turns mDNS off everywhere else).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
import trio

from mitalk_p2p import profile
from mitalk_p2p.core.control import PROTOCOL_VERSION
from mitalk_p2p.core.invite import SignedInvite

from ..audio_match import tail_correlation
from .avahi import Avahi, AvahiUnavailable, open_avahi, parse_browse
from .lan_room import SOURCE, event, open_lan_room
from .netns_lab import NetnsLab

pytestmark = pytest.mark.lan

SERVICE: Final = "_mitalk._udp"
MIN_CORRELATION = 0.9
TALK = 3.5
"""Seconds the host talks before the audio is judged."""
BROWSE_TIMEOUT = 15.0
ROOM_NAME: Final = 'Café "Avahi"'
"""Not plain ASCII, and with quotes, which the browser must escape."""


async def test_listeners_find_the_room_by_mdns_alone_and_hear_the_host(
    lab: NetnsLab, tmp_path: Path
) -> None:
    namespaces = lab.namespaces
    invite = tmp_path / "invite.txt"
    async with open_lan_room(lab, tmp_path, mdns=True) as room:
        host = await room.start_mitalk(
            namespaces[0],
            "Host",
            ["host", "mDNS room", "--invite-file", str(invite), "--no-address-hints",
             "--invite-uses", "3", "--fanout", "2",
             "--input", f"wav:{SOURCE}", "--loop", "--output", "null"],
        )  # fmt: skip
        await host.wait_for("the host starting", event("ready"))
        assert SignedInvite.from_token(invite.read_text()).invite.addresses == ()
        listeners = [
            await room.start_mitalk(
                namespaces[index],
                f"L{index}",
                ["join", f"@{invite}", "--input", "none",
                 "--output", f"wav:{room.wav(f'L{index}')}"],
            )
            for index in (1, 2, 3)
        ]
        for peer in listeners:
            await peer.wait_for("joining the room found by mDNS", event("ready"))
        await trio.sleep(TALK)  # the host talks
    for peer in listeners:
        correlation = tail_correlation(SOURCE, room.wav(peer.name), 2.0)
        assert correlation >= MIN_CORRELATION, f"{peer.name}: correlation {correlation:.3f}"
        assert peer.process.returncode == 0


async def _browse_until(lab: NetnsLab, avahi: Avahi, room_id: str) -> None:
    """Return once the live ``avahi-browse`` resolves the room ``room_id``."""
    browser = await lab.open_process(
        avahi.namespace,
        ["avahi-browse", "-rp", SERVICE],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=avahi.environment(),
    )
    assert browser.stdout is not None
    seen = b""
    try:
        with trio.fail_after(BROWSE_TIMEOUT):
            while f"id={room_id}".encode() not in seen:
                chunk = await browser.stdout.receive_some()
                assert chunk, f"avahi-browse ended without seeing the room: {seen!r}"
                seen += chunk
    finally:
        with trio.CancelScope(shield=True):
            browser.kill()
            await browser.wait()
            await browser.stdout.aclose()


@pytest.fixture
def avahi(lab: NetnsLab, tmp_path: Path) -> Iterator[Avahi]:
    """A private Avahi on the lab's last host; skips, saying why, where it can't run."""
    with contextlib.ExitStack() as stack:
        try:
            running = stack.enter_context(open_avahi(lab, lab.namespaces[-1], tmp_path / "avahi"))
        except AvahiUnavailable as exc:
            pytest.skip(f"avahi can't run here: {exc}")
        yield running


async def test_a_stock_mdns_browser_lists_the_room_with_its_txt_fields(
    lab: NetnsLab, avahi: Avahi, tmp_path: Path
) -> None:
    async with open_lan_room(lab, tmp_path, mdns=True) as room:
        host = await room.start_mitalk(
            lab.namespaces[0], "Host", ["host", ROOM_NAME, "--input", "none", "--output", "null"]
        )
        ready = await host.wait_for("the host starting", event("ready"))
        await _browse_until(lab, avahi, str(ready["room_id"]))
        listing = await trio.run_process(
            lab.command(avahi.namespace, ["avahi-browse", "-rtp", SERVICE]),
            capture_stdout=True,
            capture_stderr=True,
            env=avahi.environment(),
        )
    identity, _ = profile.load_or_create_identity(tmp_path / "Host")
    output = listing.stdout.decode()
    rooms = [txt for txt in parse_browse(output).values() if txt.get("id") == ready["room_id"]]
    assert rooms, f"avahi-browse -rtp did not list the room:\n{output}"
    txt = rooms[0]
    assert txt["name"] == ROOM_NAME
    assert txt["fp"] == identity.fingerprint
    assert txt["v"] == str(PROTOCOL_VERSION)
    assert txt["n"] == "0"


def test_avahi_browse_output_is_read_field_by_field() -> None:
    output = (
        r"+;eth0;IPv4;Caf\195\169;_mitalk._udp;local" "\n"
        r'=;eth0;IPv4;Caf\195\169;_mitalk._udp;local;h.local;10.213.0.11;7001;'
        r'"name=Caf\195\169 \"A\" \\ ;x" "v=1" "n=2"' "\n"
    )
    assert parse_browse(output) == {
        r"Caf\195\169": {"name": 'Café "A" \\ ;x', "v": "1", "n": "2"}
    }
