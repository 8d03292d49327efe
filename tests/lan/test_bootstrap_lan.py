"""Finding a room through a bootstrap node on a LAN of namespaces, with mDNS off.

The host runs on one lab host, three listeners on three others, and the
bootstrap node on the fifth.  Each listener holds an invite that names no
address, and mDNS is off everywhere (``--no-mdns``, ``MITALK_MDNS=off``), so the
bootstrap node is the only way in.  Then (test C) the node is killed, and the
room must not notice.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import trio

from ..audio_match import received_after, tail_correlation
from .lan_room import SOURCE, event, form_bootstrap_room, open_lan_room
from .netns_lab import NetnsLab

pytestmark = pytest.mark.lan

MIN_CORRELATION = 0.9
TALK = 3.5
"""Seconds the host talks, once the room has formed, before the audio is judged."""
JUDGED = 2.0
"""Seconds of each listener's recording compared with what the host said."""


async def test_listeners_find_the_room_through_the_bootstrap_node_and_hear_the_host(
    lab: NetnsLab, tmp_path: Path
) -> None:
    async with open_lan_room(lab, tmp_path, mdns=False) as room:
        formed = await form_bootstrap_room(room)
        await trio.sleep(TALK)  # the host talks
    for peer in formed.listeners:
        # Judged once the room has formed: the end of each recording, not its start,
        # when later joiners may still be moving the first ones in the tree.
        correlation = tail_correlation(SOURCE, room.wav(peer.name), JUDGED)
        assert correlation >= MIN_CORRELATION, f"{peer.name}: correlation {correlation:.3f}"
        assert peer.process.returncode == 0


async def test_the_room_keeps_talking_after_the_bootstrap_node_dies(
    lab: NetnsLab, tmp_path: Path
) -> None:
    async with open_lan_room(lab, tmp_path, mdns=False) as room:
        formed = await form_bootstrap_room(room)
        host, first = formed.host, formed.listeners[0]
        await trio.sleep(1.0)  # the host talks
        killed_at = time.monotonic()
        formed.node.process.send_signal(signal.SIGKILL)
        await formed.node.process.wait()

        # Moderation still works: a hand goes up, and the stage invitation goes through.
        await first.say("/hand")
        await host.wait_for("seeing the raised hand", event("hand_raised", actor=first.name))
        await host.say(f"/stage {first.name}")
        await first.wait_for("the stage invitation", event("invited_to_stage", target=first.name))
        await first.say("/accept")
        await host.wait_for("the stage acceptance", event("stage_accepted", actor=first.name))
        await trio.sleep(2.0)  # the host keeps talking
        stopped_at = time.monotonic()

    assert formed.node.process.returncode == -signal.SIGKILL
    assert host.process.returncode == 0, room.logs()
    for peer in formed.listeners:
        report = room.report(peer.name)
        heard = received_after(report, killed_at)
        # 20 ms frames: at least half of what the host said after the kill arrived.
        expected = (stopped_at - killed_at) / 0.020
        assert heard >= expected / 2, f"{peer.name}: {heard} frames after the kill"
        assert peer.process.returncode == 0
