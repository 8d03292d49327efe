"""A simulated room of whole peers (room replica + media plane) for media tests."""

from __future__ import annotations

import functools

import attrs

from mitalk_p2p.core.identity import PublicKey
from mitalk_p2p.core.media import MediaConfig
from mitalk_p2p.core.media_events import FrameReceived, SendDatagram
from mitalk_p2p.core.ops import AcceptStage, InviteToStage
from mitalk_p2p.core.peer import Peer
from mitalk_p2p.core.sender_keys import SeededKeySource
from mitalk_p2p.core.tree import Tree
from mitalk_p2p.sim.peer_net import LinkModel, PeerNet

from .room_fixtures import CONFIG, ROOM, invite_for, person

FRAME = 0.020
PAYLOAD = bytes(range(60))


@attrs.define
class MediaRoom:
    net: PeerNet
    host: Peer
    peers: dict[str, Peer]

    def __getitem__(self, name: str) -> Peer:
        return self.host if name == "host" else self.peers[name]

    @property
    def listeners(self) -> list[Peer]:
        return list(self.peers.values())

    def add(self, name: str, config: MediaConfig | None = None) -> Peer:
        peer = Peer.joining(
            person(name),
            invite_for(self.host.identity),
            address=PeerNet.address_of(name),
            room_config=CONFIG,
            media_config=config or self.host.media.config,
            key_source=SeededKeySource(name.encode().ljust(32, b".")),
            fanout=self.host.fanout,
        )
        self.net.join(peer, self.host.me)
        self.peers[name] = peer
        return peer

    def to_stage(self, name: str) -> None:
        target = self[name]
        self.net.act(self.host.me, lambda p: p.act(InviteToStage(target.me), self.net.now))
        self.net.run_for(0.2)
        self.net.act(target.me, lambda p: p.act(AcceptStage(), self.net.now))
        self.net.run_for(0.5)

    def speak(self, name: str, seconds: float, *, start_seq_time: float | None = None) -> None:
        """``name`` sends one frame every 20 ms for ``seconds`` while the network runs."""
        speaker = self[name]
        begin = self.net.now if start_seq_time is None else start_seq_time
        for i in range(round(seconds / FRAME)):
            self.net.run_until(begin + i * FRAME)
            moment = self.net.now
            self.net.act(speaker.me, functools.partial(_send_payload, capture_time=moment))

    def received(self, name: str, speaker: str) -> list[FrameReceived]:
        key = self[speaker].me
        return [
            e
            for e in self.net.events_of(self[name].me)
            if isinstance(e, FrameReceived) and e.speaker == key
        ]

    def capture(self, name: str, seconds_of_frames: int = 1) -> list[bytes]:
        """Frames ``name`` seals, taken off its outbound queue instead of being sent."""
        speaker = self[name]
        out = []
        for _ in range(seconds_of_frames):
            assert speaker.send_frame(PAYLOAD, self.net.now, self.net.now)
            datagrams = [o.data for o in speaker.outbound() if isinstance(o, SendDatagram)]
            out.append(datagrams[0])
        speaker.events()
        return out


def media_room(
    count: int,
    *,
    fanout: int = 6,
    seed: int = 0,
    link: LinkModel | None = None,
    config: MediaConfig | None = None,
) -> MediaRoom:
    """A room with a host and ``count`` listeners, its tree built, after two seconds."""
    net = PeerNet(ROOM, seed=seed, default_link=link or LinkModel(latency=0.005))
    media_config = config or MediaConfig(report_frames=True)
    host = Peer.create_room(
        person("host"),
        ROOM,
        name="Standup",
        address=PeerNet.address_of("host"),
        now=0.0,
        room_config=CONFIG,
        media_config=media_config,
        key_source=SeededKeySource(b"host".ljust(32, b".")),
        fanout=fanout,
    )
    net.add(host)
    room = MediaRoom(net, host, {})
    for i in range(count):
        room.add(f"p{i:03}")
    net.run_until(2.0)
    return room


def subtree(room: MediaRoom, key: PublicKey) -> set[PublicKey]:
    tree = room.host.coordinator.tree if room.host.coordinator else None
    assert tree is not None
    return set(tree.subtree(key)) - {key}


def _send_payload(peer: Peer, *, capture_time: float) -> bool:
    return peer.send_frame(PAYLOAD, capture_time, capture_time)


def host_tree(room: MediaRoom) -> Tree:
    """The tree the host's coordinator planned last."""
    coordinator = room.host.coordinator
    assert coordinator is not None and coordinator.tree is not None
    return coordinator.tree
