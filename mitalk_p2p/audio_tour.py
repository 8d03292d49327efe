"""The audio half of ``mitalk demo``: a room's media plane on a simulated network.

Real Opus, real sealing and signatures, real sender keys and the real tree
protocol, driven by :class:`~mitalk_p2p.sim.peer_net.PeerNet` on a virtual
clock: a speaker's voice fans out through 24 listeners, a listener tries to
speak without the floor, a kick rotates the keys, and a relay vanishes.
"""

from __future__ import annotations

import array
import contextlib
import math
from typing import TextIO

import nacl.utils

from .codec import CodecConfig, OpusDecoder, OpusEncoder, is_dtx
from .core.errors import WireError
from .core.identity import Identity, PublicKey
from .core.ids import ROOM_ID_SIZE, RoomId
from .core.invite import create_invite
from .core.jitter import PlayFrame, RecoverWithFec
from .core.media import MediaConfig
from .core.media_events import AudioOut, FrameReceived, SendDatagram
from .core.media_frame import (
    FrameHeader,
    KeyGeneration,
    open_frame,
    parse_header,
    room_tag,
    seal_frame,
)
from .core.ops import AcceptStage, InviteToStage, Kick
from .core.peer import Peer
from .core.replica import RoomConfig
from .core.roles import Role
from .sim.peer_net import LinkModel, PeerNet

FRAME = 0.020
LISTENERS = 24
CONFIG = RoomConfig(heartbeat_interval=1.0, host_timeout=4.0, succession_step=1.0)


def _voice(seconds: float) -> list[bytes]:
    """A voiced test signal, cut into 20 ms PCM frames."""
    rate, frames = 48_000, []
    for index in range(round(seconds / FRAME)):
        samples = array.array("h")
        for i in range(960):
            t = (index * 960 + i) / rate
            pitch = 140 + 40 * math.sin(2 * math.pi * 0.7 * t)
            envelope = math.sin(math.pi * ((t * 4) % 1.0)) ** 2
            samples.append(int(8000 * envelope * math.sin(2 * math.pi * pitch * t)))
        frames.append(samples.tobytes())
    return frames


class AudioTour:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.room_id = RoomId(nacl.utils.random(ROOM_ID_SIZE))
        link = LinkModel(latency=0.008, jitter=0.004, loss=0.01)
        self.net = PeerNet(self.room_id, seed=7, default_link=link)
        self.config = MediaConfig(report_frames=True)
        host = Identity.generate("ann")
        self.host = self.net.add(
            Peer.create_room(
                host,
                self.room_id,
                name="Town hall",
                address="sim:ann",
                now=0.0,
                room_config=CONFIG,
                media_config=self.config,
                fanout=3,
            )
        )
        self.names = {host.public_key: "ann"}
        self.encoder = OpusEncoder(CodecConfig())

    def say(self, text: str) -> None:
        print(f"   {text}", file=self.out)

    def section(self, title: str) -> None:
        print(f"\n== {title}", file=self.out)

    def add(self, name: str) -> Peer:
        identity = Identity.generate(name)
        invite = create_invite(
            self.host.identity,
            room_id=self.room_id,
            room_name="Town hall",
            role=Role.LISTENER,
            now=self.net.now,
            lifetime=3600,
        )
        peer = Peer.joining(
            identity,
            invite,
            address=f"sim:{name}",
            room_config=CONFIG,
            media_config=self.config,
            fanout=3,
        )
        self.net.join(peer, self.host.me)
        self.names[identity.public_key] = name
        return peer

    def speak(self, peer: Peer, pcm_frames: list[bytes]) -> None:
        start = self.net.now
        for index, pcm in enumerate(pcm_frames):
            self.net.run_until(start + index * FRAME)
            packet = self.encoder.encode(pcm)
            if not is_dtx(packet):
                peer.send_frame(packet, self.net.now, self.net.now)
                self.net.flush(peer.me)
        self.net.run_for(0.3)

    def heard(self, listener: PublicKey, speaker: PublicKey, since: float = 0.0) -> int:
        return sum(
            1
            for e in self.net.events_of(listener)
            if isinstance(e, FrameReceived) and e.speaker == speaker and e.arrived >= since
        )


def run(out: TextIO) -> int:
    tour = AudioTour(out)
    net, host = tour.net, tour.host
    tour.section("Audio: a fanout tree of peers, no media server")
    listeners = [tour.add(f"guest{i:02}") for i in range(LISTENERS)]
    net.run_until(2.0)
    coordinator = host.coordinator
    tree = coordinator.tree if coordinator else None
    if tree is None:
        tour.say("the host planned no tree")
        return 1
    tour.say(
        f"{len(tree.members)} peers, fanout 3: the host planned a tree {tree.max_depth} levels "
        f"deep; every member has a parent and a backup parent"
    )
    voice = _voice(2.0)
    start = net.now
    tour.speak(host, voice)
    counts = [tour.heard(p.me, host.me, start) for p in listeners]
    sent = host.statistics().media.frames_sent
    tour.say(f"ann spoke for 2 s: {sent} sealed, signed Opus frames")
    tour.say(f"each listener verified and decrypted between {min(counts)} and {max(counts)}")
    decoder = OpusDecoder(CodecConfig())
    samples = 0
    for event in net.events_of(listeners[-1].me):
        if isinstance(event, AudioOut) and isinstance(event.playout, PlayFrame):
            samples += len(decoder.decode(event.playout.payload)) // 2
        elif isinstance(event, AudioOut) and isinstance(event.playout, RecoverWithFec):
            samples += len(decoder.recover_from_fec(event.playout.next_payload)) // 2
    stats = listeners[-1].statistics().media.speakers[host.me]
    tour.say(
        f"guest{LISTENERS - 1:02} decoded {samples / 48_000:.2f} s of audio through its jitter "
        f"buffer (target {stats.currentTarget * 1000:.0f} ms, "
        f"{stats.fecRecoveredSamples} samples rebuilt from FEC, "
        f"{stats.concealedSamples} concealed)"
    )

    tour.section("A listener without the floor tries to speak")
    forger = listeners[5]
    forger_index = host.state.members[forger.me].joined_seq if host.state else 0
    header = FrameHeader(room_tag(tour.room_id), forger_index, KeyGeneration(0, 0), 1, 0)
    fake = seal_frame(
        header, b"fake", room_id=tour.room_id, sender_key=bytes(32), speaker=forger.identity
    )
    for peer in listeners[:4]:
        net.inject_datagram(fake, forger.media.address, peer.me, 0.001)
    net.run_for(0.1)
    refused = sum(p.statistics().media.dropped.get("not-on-floor", 0) for p in listeners[:4])
    tour.say(f"4 peers got its frame and dropped it unplayed: not-on-floor x{refused}")

    tour.section("A kick rotates every speaker's key")
    bob = listeners[0]
    net.act(host.me, lambda p: p.act(InviteToStage(bob.me), net.now))
    net.run_for(0.3)
    net.act(bob.me, lambda p: p.act(AcceptStage(), net.now))
    net.run_for(0.5)
    tour.speak(bob, voice[:25])
    kicked = listeners[7]
    stolen = kicked.media.held_keys(bob.me)
    net.act(host.me, lambda p: p.act(Kick(kicked.me), net.now))
    tour.speak(bob, voice[:50])
    generation = bob.media.sending_generation
    tour.say(f"guest07 was kicked; guest00 now seals with key generation {generation}")
    bob.send_frame(tour.encoder.encode(voice[0]), net.now, net.now)
    datagrams = [o.data for o in bob.outbound() if isinstance(o, SendDatagram)]
    bob.events()
    opened = 0
    for old_key in stolen.held() if stolen else ():
        with contextlib.suppress(WireError):
            open_frame(
                parse_header(datagrams[0]),
                datagrams[0],
                room_id=tour.room_id,
                sender_key=old_key.secret,
            )
            opened += 1
    tour.say(
        f"guest07 still holds {len(stolen.held()) if stolen else 0} old key(s); "
        f"they open {opened} of the new frames"
    )

    tour.section("A relay vanishes")
    tree = coordinator.tree if coordinator else None
    assert tree is not None
    relay = max(tree.children(host.me), key=lambda k: len(tree.subtree(k)))
    orphans = [k for k in tree.subtree(relay) if k != relay]
    crash_at = net.now
    net.crash(relay)
    tour.speak(host, voice)
    gaps = []
    for key in orphans:
        resumed = [
            e.arrived
            for e in net.events_of(key)
            if isinstance(e, FrameReceived) and e.speaker == host.me and e.arrived > crash_at + 0.05
        ]
        gaps.append(min(resumed) - crash_at if resumed else math.inf)
    tour.say(
        f"{tour.names[relay]} crashed with {len(orphans)} peers below it; they all heard ann "
        f"again within {max(gaps) * 1000:.0f} ms (switch to backup parent, then a rebalance)"
    )
    tour.section("Done")
    ok = min(counts) >= 0.9 * sent and refused == 4 and opened == 0 and max(gaps) <= 1.0
    return 0 if ok else 1
