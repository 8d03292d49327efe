"""Joining from hints, on 127.0.0.1 without mDNS: the wrong peer is named and skipped.

Real peers (websockets, Noise) on loopback.  A "fake" peer hosts a room with the
same id under its own key; a joiner that is pointed at it first must name it, skip
it and end up with the genuine host.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from mitalk_p2p import cli
from mitalk_p2p.core.identity import Identity
from mitalk_p2p.core.invite import SignedInvite, create_invite
from mitalk_p2p.core.roles import Role
from mitalk_p2p.discovery.candidates import BOOTSTRAP, Candidate
from mitalk_p2p.discovery.joining import (
    JoinSearch,
    join_searching,
    load_saved_invite,
    save_invite,
)
from mitalk_p2p.runtime.peer_runtime import (
    HostRoom,
    JoinError,
    JoinRoom,
    PeerConfig,
    RunningPeer,
    open_peer,
)

BOUND = 15.0


def _invite(host: RunningPeer, *, hints: Sequence[str] = ()) -> SignedInvite:
    state = host.state
    assert state is not None
    return create_invite(
        host.identity, room_id=state.room_id, room_name=state.name, role=Role.LISTENER,
        now=time.time(), lifetime=600, addresses=hints,
    )  # fmt: skip


async def test_a_peer_with_the_wrong_key_is_named_skipped_and_the_host_joined() -> None:
    notes: list[str] = []
    async with open_peer(PeerConfig(Identity.generate("Host"), HostRoom("Genuine"))) as host:
        state = host.state
        assert state is not None
        fake_room = HostRoom("Genuine", room_id=state.room_id)
        async with open_peer(PeerConfig(Identity.generate("Fake"), fake_room)) as fake:
            invite = _invite(host)

            async def bootstrap() -> list[Candidate]:
                return [Candidate(host.control_address, BOOTSTRAP)]

            search = JoinSearch(
                via=(fake.control_address,), lookup=bootstrap, search=BOUND, note=notes.append
            )
            config = PeerConfig(Identity.generate("Guest"), JoinRoom(invite))

            async def inside(peer: RunningPeer) -> tuple[object, object]:
                assert peer.state is not None
                return peer.state.host, peer.state.room_id

            with trio.fail_after(BOUND):
                joined_host, room_id = await join_searching(config, search, inside)
            assert (joined_host, room_id) == (host.me, state.room_id)
            (note,) = notes
            assert note.startswith(f"{fake.control_address} (picked from the room list) is not")
            assert f"it proved key {fake.me.fingerprint}" in note
            assert f"the invite is from {host.me.fingerprint}" in note
            assert fake.state is not None and list(fake.state.members) == [fake.me]


async def test_with_nothing_but_dead_hints_the_runtimes_error_is_kept() -> None:
    async with open_peer(PeerConfig(Identity.generate("Host"), HostRoom("Gone"))) as host:
        invite = _invite(host, hints=("127.0.0.1:9",))
    config = PeerConfig(Identity.generate("Guest"), JoinRoom(invite))

    async def never(peer: RunningPeer) -> None:
        raise AssertionError("joined a room that is gone")

    with trio.fail_after(BOUND), pytest.raises(JoinError, match=r"^could not reach the room: "):
        await join_searching(config, JoinSearch(), never)
    nowhere = PeerConfig(Identity.generate("G"), JoinRoom(_invite_without_host()))
    with pytest.raises(JoinError) as nothing:
        await join_searching(nowhere, JoinSearch(), never)
    assert str(nothing.value) == "found no address for the room: the invite carries no address"


def _invite_without_host() -> SignedInvite:
    from mitalk_p2p.core.ids import RoomId

    issuer = Identity.generate("Nobody")
    return create_invite(issuer, room_id=RoomId(bytes(16)), room_name="Nowhere",
                         role=Role.LISTENER, now=time.time(), lifetime=60)  # fmt: skip


async def test_saved_invites_are_private_and_checked(tmp_path: Path) -> None:
    async with open_peer(PeerConfig(Identity.generate("Host"), HostRoom("Kept"))) as host:
        invite = _invite(host)
    path = save_invite(tmp_path, invite)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    me = Identity.generate("Me").public_key
    room_id = invite.invite.room_id
    assert load_saved_invite(tmp_path, room_id, me, time.time()) == invite
    assert load_saved_invite(tmp_path, room_id, me, time.time() + 86400) is None  # expired
    path.write_text("mitalk:garbage")
    assert load_saved_invite(tmp_path, room_id, me, time.time()) is None


def test_mdns_commands_refuse_while_mdns_is_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # tests/conftest.py turns mDNS off for the whole suite.
    assert cli.main(["--profile", str(tmp_path), "rooms", "--seconds", "1"]) == 2
    assert "mDNS is turned off (MITALK_MDNS=off)" in capsys.readouterr().err
    assert cli.main(["--profile", str(tmp_path), "join", "--pick", "1"]) == 2
    assert "no invite given, and looking for rooms on the LAN is off" in capsys.readouterr().err


def test_invite_without_address_hints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rooms = tmp_path / "rooms"
    rooms.mkdir()
    (rooms / f"{'ab' * 16}.json").write_text(
        '{"room_id": "' + "ab" * 16 + '", "name": "Mine", "addresses": ["10.0.0.1:7000"]}'
    )
    for flags, expected in (([], ("10.0.0.1:7000",)), (["--no-address-hints"], ())):
        assert cli.main(["--profile", str(tmp_path), "invite", *flags]) == 0
        token = capsys.readouterr().out.strip()
        assert SignedInvite.from_token(token).invite.addresses == expected


def test_rooms_help_lists_the_command() -> None:
    out = io.StringIO()
    parser = cli.build_parser()
    parser.print_help(out)
    assert "rooms" in out.getvalue()


async def test_when_only_a_wrong_peer_answers_the_error_names_it() -> None:
    async with open_peer(PeerConfig(Identity.generate("Host"), HostRoom("Real"))) as host:
        invite = _invite(host)
        state = host.state
        assert state is not None
        fake_room = HostRoom("Real", room_id=state.room_id)
        async with open_peer(PeerConfig(Identity.generate("Fake"), fake_room)) as fake:
            config = PeerConfig(Identity.generate("Guest"), JoinRoom(invite))

            async def never(peer: RunningPeer) -> None:
                raise AssertionError("joined the fake room")

            with trio.fail_after(BOUND), pytest.raises(JoinError) as refused:
                await join_searching(config, JoinSearch(via=(fake.control_address,)), never)
            assert str(refused.value) == (
                f"could not reach the room: {fake.control_address} (picked from the room list)"
                f" is not the room's host: it proved key {fake.me.fingerprint}, but the invite"
                f" is from {host.me.fingerprint}; skipping it"
            )
