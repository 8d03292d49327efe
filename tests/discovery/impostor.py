"""A spoofer for the tests: a real peer hosting a fake copy of someone else's room.

It hosts a room with the victim's room id and name under its own key, and
advertises it on mDNS at its own address.  With ``--claim-key`` the record names
the victim's key instead of its own (the record is unsigned, so anyone can copy
it).  It prints one JSON line once advertised, and on SIGTERM one with what it saw:
the members it admitted and the handshakes that failed.

    python -m tests.discovery.impostor --room-id HEX --name NAME --listen IP:PORT
        [--claim-key HEX]
"""

from __future__ import annotations

import argparse
import json
import signal

import trio

from mitalk_p2p.core.events import RoomChanged
from mitalk_p2p.core.identity import Identity, PublicKey
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.ops import Admit
from mitalk_p2p.discovery.mdns import Advert, open_room_advertiser, open_zeroconf
from mitalk_p2p.discovery.room_record import RoomRecord
from mitalk_p2p.runtime.addresses import parse_address
from mitalk_p2p.runtime.peer_runtime import HostRoom, PeerConfig, open_peer


def _say(**record: object) -> None:
    print(json.dumps(record), flush=True)


async def main(args: argparse.Namespace) -> None:
    identity = Identity.generate("Impostor")
    host, port = parse_address(args.listen)
    room_id = RoomId.from_hex(args.room_id)
    room = HostRoom(args.name, room_id=room_id)
    config = PeerConfig(identity, room, control_address=args.listen, media_address=f"{host}:0")
    admitted: list[str] = []
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with open_peer(config) as peer:
            peer.subscribe(
                lambda event: admitted.append(event.op.member.fingerprint)
                if isinstance(event, RoomChanged) and isinstance(event.op, Admit)
                and event.op.member != identity.public_key
                else None
            )  # fmt: skip
            claimed = PublicKey(bytes.fromhex(args.claim_key)) if args.claim_key else peer.me
            record = RoomRecord(
                room_id=room_id, name=args.name, host_key=claimed, listeners=0,
                control_port=port,
            )  # fmt: skip
            _, media_port = parse_address(peer.media_address)
            async with (
                open_zeroconf((host,)) as zc,
                open_room_advertiser(zc, Advert(record, (host,), media_port)) as advertiser,
            ):
                _say(event="advertised", fp=identity.fingerprint, instance=advertiser.name,
                     control=peer.control_address)  # fmt: skip
                async for _ in signals:
                    break
            stats = peer.plane.statistics()
            _say(event="exit", admitted=admitted, handshakes_failed=stats.handshakes_failed)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--room-id", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--claim-key")
    trio.run(main, parser.parse_args())
