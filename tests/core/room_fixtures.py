"""Builders shared by the room tests: deterministic identities and a ready room."""

from __future__ import annotations

import hashlib

from mitalk_p2p.core.identity import Identity, PublicKey
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.invite import SignedInvite, create_invite
from mitalk_p2p.core.replica import RoomConfig, RoomReplica
from mitalk_p2p.core.roles import Role
from mitalk_p2p.core.room_state import RoomState
from mitalk_p2p.sim.control_net import ControlNet

ROOM = RoomId(bytes(range(16)))
CONFIG = RoomConfig(heartbeat_interval=1.0, host_timeout=4.0, succession_step=1.0)


def person(name: str) -> Identity:
    """A fixed identity per name, so failures reproduce."""
    return Identity.from_seed(hashlib.blake2b(name.encode(), digest_size=32).digest(), name)


def invite_for(
    issuer: Identity,
    *,
    role: Role = Role.LISTENER,
    audience: PublicKey | None = None,
    now: float = 0.0,
    lifetime: int = 3600,
    max_uses: int = 1,
    room_id: RoomId = ROOM,
) -> SignedInvite:
    return create_invite(
        issuer,
        room_id=room_id,
        room_name="Standup",
        role=role,
        now=now,
        lifetime=lifetime,
        audience=audience,
        max_uses=max_uses,
    )


def make_room(*names: str, host: str = "ann") -> tuple[ControlNet, dict[str, RoomReplica]]:
    """A room hosted by ``host`` that every one of ``names`` has joined as a listener."""
    net = ControlNet(ROOM)
    host_replica = net.add(
        RoomReplica.create_room(person(host), ROOM, name="Standup", now=0.0, config=CONFIG)
    )
    replicas = {host: host_replica}
    for name in names:
        replicas[name] = join(net, host_replica, person(name))
    net.pump()
    for replica in replicas.values():
        replica.events()
    return net, replicas


def join(
    net: ControlNet, host: RoomReplica, who: Identity, invite: SignedInvite | None = None
) -> RoomReplica:
    replica = RoomReplica.joining(who, invite or invite_for(host.identity), CONFIG)
    net.join(replica, host.me)
    return replica


def state_of(replica: RoomReplica) -> RoomState:
    """The replica's room state, which a joined replica always has."""
    assert replica.state is not None, f"{replica!r} has no room state"
    return replica.state


def digests(replicas: dict[str, RoomReplica], *names: str) -> set[bytes]:
    chosen = names or tuple(replicas)
    result = set()
    for name in chosen:
        state = replicas[name].state
        assert state is not None
        result.add(state.digest())
    return result
