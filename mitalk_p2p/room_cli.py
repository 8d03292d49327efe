"""``mitalk host``, ``join``, ``rooms``, ``invite`` and ``devices``.

``host`` and ``join`` put this machine in a room and open the console (see
:mod:`.console.session`).  Audio comes from ``--input`` (a microphone, a WAV
file, a tone, synthetic speech, silence, or nothing) and goes to ``--output``
(the speakers, a WAV file of the room mix, or nowhere), with ``--tracks DIR``
adding one time-aligned WAV per speaker.

A host also writes a small room file in its profile (id, name, addresses), so
that ``mitalk invite`` can sign more invites later without the room running
in the same process.

Whoever hosts a room advertises it on the LAN with mDNS, and ``rooms`` lists the
rooms advertised there, live.  ``join`` looks for the room's host on the LAN,
through bootstrap nodes and at the invite's addresses at once, and without an
invite offers the rooms it sees; the handshake checks the host's key in every case
(see :mod:`.discovery`).  mDNS follows ``--listen``: a specific address speaks on
that interface, ``0.0.0.0`` on all, loopback on none (``--mdns-interface`` says
otherwise); ``--no-mdns`` or ``MITALK_MDNS=off`` turn it off.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO, TypeGuard

import attrs
import trio

from . import profile
from .arg_types import bounded_int
from .audio.io import FrameInput, FrameOutput, NullOutput, input_from_spec
from .audio.playout import Playback
from .audio.sources import AudioSourceError
from .audio.wav_writer import open_wav_writer
from .console.session import (
    ConsoleSession,
    LineSource,
    ScriptLines,
    StreamLines,
    TerminalLines,
    install_completion,
)
from .core.errors import MitalkError
from .core.identity import Identity, PublicKey
from .core.ids import RoomId
from .core.invite import InviteError, SignedInvite, create_invite
from .core.media import MediaConfig
from .core.roles import Role
from .runtime.addresses import AddressError, parse_address
from .runtime.peer_runtime import HostRoom, JoinRoom, PeerConfig, RunningPeer, open_peer

if TYPE_CHECKING:
    from .discovery.candidates import Candidate, MdnsSettings

INPUT_FORMS: Final = "mic, none, silence, synthetic, tone[:HZ], wav:PATH or PATH.wav"
OUTPUT_FORMS: Final = "speaker, null, wav:PATH or PATH.wav"
DURATION_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
ANNOUNCEMENT_LIFETIME: Final = 120


class _Context(Protocol):
    out: TextIO

    def profile_dir(self) -> Path: ...


# -- argument types -----------------------------------------------------------------


def duration(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``2h`` or ``7d`` as whole seconds."""
    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in DURATION_UNITS else "s"
    number = value[:-1] if value[-1:] in DURATION_UNITS else value
    try:
        seconds = float(number) * DURATION_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; write e.g. 90s, 15m, 2h or 7d"
        ) from None
    if not 1 <= seconds <= 366 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration from 1s to 366d")
    return int(seconds)


def address(text: str) -> str:
    try:
        parse_address(text, any_port=True)
    except AddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def bootstrap_node(text: str) -> str:
    """A bootstrap node: ``HOST:PORT`` or ``ws://HOST:PORT/`` (as the node prints it)."""
    if text.startswith("ws://"):
        address(text.removeprefix("ws://").split("/", 1)[0])
        return text
    if "://" in text:
        raise argparse.ArgumentTypeError(
            f"{text!r}: bootstrap nodes are reached at HOST:PORT or ws://HOST:PORT/"
        )
    return address(text)


def role(text: str) -> Role:
    try:
        parsed = Role.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if parsed is Role.HOST:
        raise argparse.ArgumentTypeError("nobody can be invited as host; the host is elected")
    return parsed


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and 0 < value <= 86400):
        raise argparse.ArgumentTypeError(f"{text!r}: a number of seconds from 0 to 86400")
    return value


def ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


positive_int = bounded_int(1, 1_000_000)
"""A whole number from 1 to a million."""


# -- parsers ------------------------------------------------------------------------


def _room_options(parser: argparse.ArgumentParser) -> None:
    net = parser.add_argument_group("network")
    net.add_argument(
        "--listen",
        type=address,
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="control (websocket) address; others dial it (default: 127.0.0.1, any port)",
    )
    net.add_argument(
        "--media",
        type=address,
        default=None,
        metavar="HOST:PORT",
        help="media (UDP) address (default: the --listen host, any port)",
    )
    audio = parser.add_argument_group("audio")
    audio.add_argument(
        "--input", default="auto", metavar="SPEC", help=f"what you say: auto, {INPUT_FORMS}"
    )
    audio.add_argument("--loop", action="store_true", help="repeat a WAV input forever")
    audio.add_argument("--input-device", metavar="DEV", help="microphone (index or name)")
    audio.add_argument(
        "--output", default="auto", metavar="SPEC", help=f"what you hear: auto, {OUTPUT_FORMS}"
    )
    audio.add_argument("--output-device", metavar="DEV", help="speakers (index or name)")
    audio.add_argument(
        "--tracks", type=Path, metavar="DIR", help="also write one WAV per speaker into DIR"
    )
    console = parser.add_argument_group("console")
    console.add_argument(
        "--script", type=Path, metavar="FILE", help="run the console commands in FILE first"
    )
    console.add_argument(
        "--detach",
        action="store_true",
        help="read no commands from stdin; stay until /leave in the script, a kick, or a signal",
    )
    console.add_argument(
        "--json-events", action="store_true", help="print one JSON object per room event"
    )
    console.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="on exit, write per-frame timings and statistics to FILE (JSON)",
    )
    net.add_argument(
        "--bootstrap",
        action="append",
        type=bootstrap_node,
        default=[],
        metavar="HOST:PORT|URL",
        help="a bootstrap node to announce the room to / find it through (repeatable)",
    )
    net.add_argument(
        "--relay-capacity",
        type=int,
        default=6,
        choices=range(0, 33),
        metavar="N",
        help="how many listeners you offer to relay to (0 to 32, default 6)",
    )
    net.add_argument(
        "--no-mdns",
        action="store_true",
        help="neither advertise the room on the LAN nor look for it there (mDNS);"
        " MITALK_MDNS=off in the environment turns mDNS off for every command",
    )
    _mdns_interface_option(net)
    parser.add_argument("--name", metavar="NAME", help="your display name in this room")


def _mdns_interface_option(
    group: Any,
    default: str = "the --listen address, every interface for 0.0.0.0, none for 127.0.0.1",
) -> None:
    group.add_argument(
        "--mdns-interface",
        action="append",
        type=ip_address,
        default=[],
        metavar="IP",
        help=f"speak mDNS only on the interface with this address (repeatable; default: {default})",
    )


def add_host(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "host",
        help="start a room and print an invite",
        description="Start a room with you as its host, print an invite, and open the console.",
        parents=parents,
    )
    parser.add_argument("room_name", metavar="ROOM", help="the room's name")
    parser.add_argument("--topic", default="", help="what the room is about")
    parser.add_argument(
        "--invite-role", type=role, default=Role.LISTENER, help="role of the printed invite"
    )
    parser.add_argument(
        "--invite-uses", type=positive_int, default=100, help="how many may use it (100)"
    )
    parser.add_argument(
        "--invite-expires", type=duration, default=24 * 3600, help="lifetime (default 24h)"
    )
    parser.add_argument(
        "--invite-file", type=Path, metavar="FILE", help="also write the invite to FILE"
    )
    parser.add_argument(
        "--fanout",
        type=positive_int,
        default=6,
        help="the most listeners any peer relays to (default 6)",
    )
    parser.add_argument(
        "--open",
        action="store_true",
        help="let anyone on the LAN listen: publish a listener invite with the room's"
        " mDNS record, for `mitalk join` without an invite",
    )
    _address_hints_option(parser)
    _room_options(parser)
    parser.set_defaults(handler=cmd_host)


def _address_hints_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-address-hints",
        action="store_true",
        help="leave this machine's addresses out of the invite; joiners then find the"
        " room on the LAN or through bootstrap nodes",
    )


def add_join(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "join",
        help="join a room with an invite, or one found on the LAN",
        description=(
            "Join the room an invite names and open the console.  Without an invite, "
            "list the rooms on the LAN and join the one you choose (with an invite saved "
            "from an earlier join, or the room's open invite)."
        ),
        parents=parents,
    )
    parser.add_argument(
        "invite",
        metavar="INVITE",
        nargs="?",
        help="the invite (mitalk:...), or @FILE to read it from FILE;"
        " leave it out to choose a room on the LAN",
    )
    parser.add_argument(
        "--pick",
        metavar="NAME|NUMBER",
        help="without an invite: the room to join from the LAN list (default: ask)",
    )
    parser.add_argument(
        "--browse",
        type=seconds,
        default=3.0,
        metavar="S",
        help="without an invite: how long to look for rooms (default 3)",
    )
    parser.add_argument(
        "--search",
        type=seconds,
        default=10.0,
        metavar="S",
        help="how long to keep looking for the room's host on the LAN while the"
        " addresses known fail (default 10)",
    )
    _room_options(parser)
    parser.set_defaults(handler=cmd_join)


def add_invite(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "invite",
        help="make an invite to a room you host",
        description=(
            "Sign an invite to a room this profile hosts (the most recent one unless --room "
            "says which).  Give it to the person; it is all they need to join."
        ),
        parents=parents,
    )
    parser.add_argument("--room", metavar="ID", help="the room id (32 hex digits)")
    parser.add_argument("--role", type=role, default=Role.LISTENER, help="listener or speaker")
    parser.add_argument("--expires", type=duration, default=24 * 3600, help="lifetime (24h)")
    parser.add_argument("--uses", type=positive_int, default=1, help="how many may use it (1)")
    parser.add_argument(
        "--for",
        dest="audience",
        metavar="KEY",
        help="only this person may use it: their public key (64 hex digits, see `mitalk id`)",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    _address_hints_option(parser)
    parser.set_defaults(handler=cmd_invite)


def add_devices(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "devices",
        help="list microphones and speakers",
        description="List the sound devices PortAudio sees, for --input-device/--output-device.",
        parents=parents,
    )
    parser.set_defaults(handler=cmd_devices)


def add_rooms(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "rooms",
        help="list the rooms on the LAN as they appear and vanish",
        description=(
            "Watch the rooms advertised on the LAN (mDNS): name, topic, listeners, the "
            "host's fingerprint and address.  A line per change, or a live table on a "
            "terminal.  What a record says is a claim; compare the fingerprint with the "
            "host's before trusting a room."
        ),
        parents=parents,
    )
    parser.add_argument(
        "--seconds", type=seconds, metavar="S", help="stop after S seconds (default: Ctrl-C)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per change")
    _mdns_interface_option(parser, "every interface")
    parser.set_defaults(handler=cmd_rooms)


# -- handlers -----------------------------------------------------------------------


def cmd_devices(args: argparse.Namespace, ctx: _Context) -> int:
    from .audio.devices import format_device_table, list_devices

    ctx.out.write(format_device_table(list_devices()) + "\n")
    return 0


def cmd_rooms(args: argparse.Namespace, ctx: _Context) -> int:
    from .discovery.rooms_view import watch

    _require_mdns("list the rooms on the LAN")
    ignored = trio.run(
        partial(
            watch,
            ctx.out,
            _mdns_settings(args),
            seconds=args.seconds if args.seconds is not None else math.inf,
            as_json=args.json,
            redraw=not args.json and ctx.out.isatty(),
        )
    )
    if ignored:
        sys.stderr.write(f"note: ignored {ignored} malformed room record(s) on the LAN\n")
    return 0


def cmd_invite(args: argparse.Namespace, ctx: _Context) -> int:
    identity, _ = profile.load_or_create_identity(ctx.profile_dir())
    room = _load_room_file(ctx.profile_dir(), args.room)
    audience = _parse_key(args.audience) if args.audience else None
    invite = create_invite(
        identity,
        room_id=RoomId.from_hex(str(room["room_id"])),
        room_name=str(room["name"]),
        role=args.role,
        now=time.time(),
        lifetime=args.expires,
        audience=audience,
        max_uses=args.uses,
        addresses=(
            ()
            if args.no_address_hints
            else tuple(str(a) for a in room["addresses"])  # type: ignore[attr-defined]
        ),
    )
    if args.json:
        record = {
            "invite": invite.token,
            "room_id": invite.invite.room_id.hex,
            "role": args.role.label,
            "expires_at": invite.invite.expires_at,
            "max_uses": invite.invite.max_uses,
        }
        ctx.out.write(json.dumps(record) + "\n")
    else:
        ctx.out.write(invite.token + "\n")
    return 0


def cmd_host(args: argparse.Namespace, ctx: _Context) -> int:
    identity = _identity(args, ctx)
    room = HostRoom(args.room_name, topic=args.topic)
    return _run_room(args, ctx, identity, room)


def cmd_join(args: argparse.Namespace, ctx: _Context) -> int:
    if args.invite is None:
        identity = _identity(args, ctx)
        return _run_room(args, ctx, identity, _choose_from_lan(args, ctx, identity))
    text: str = args.invite
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problem = "it is not text" if isinstance(exc, UnicodeDecodeError) else exc.strerror
            raise MitalkError(
                f"could not read the invite from {text[1:]}: {problem or exc}"
            ) from None
    try:
        invite = SignedInvite.from_token(text)
        invite.verify(time.time())
    except InviteError as exc:
        raise MitalkError(f"that invite can't be used: {exc}") from None
    identity = _identity(args, ctx)
    return _run_room(args, ctx, identity, JoinRoom(invite))


async def _discover(nodes: list[str], invite: SignedInvite, err: TextIO) -> tuple[str, ...]:
    """The room's current addresses from the bootstrap nodes (tried before the invite's).

    Every node is asked at once and the first that knows the room answers, so a
    node that is down changes nothing while another one is up.
    """
    from .runtime.bootstrap_client import BootstrapError, find_room

    try:
        found = await find_room(nodes, invite.invite.room_id)
    except BootstrapError as exc:
        err.write(f"note: {exc}\n")
        return ()
    if found is None:
        return ()
    err.write(f"found {found.name!r} through a bootstrap node at {', '.join(found.addresses)}\n")
    return tuple(found.addresses)


async def _keep_announced(nodes: list[str], peer: RunningPeer) -> None:
    """Announce the room to the bootstrap nodes whenever this peer is its host.

    The first host announces from the start; a successor starts when it takes
    over, signing with its own key under its new term (which the nodes require).
    A peer that stops being the host stops announcing without withdrawing; the
    host withdraws when it leaves.
    """
    from bootstrap.announcement import (
        Announcement,
        Withdrawal,
        create_announcement,
        create_withdrawal,
    )

    from .runtime.bootstrap_client import keep_announced

    def hosting() -> bool:
        state = peer.state
        return state is not None and state.host == peer.me

    def announcement() -> Announcement | None:
        state = peer.state
        if state is None or state.host != peer.me:
            return None
        return create_announcement(
            peer.identity,
            room_id=state.room_id,
            name=state.name,
            topic=state.topic,
            host=peer.me,
            addresses=(peer.control_address,),
            listener_count=max(0, len(state.members) - 1),
            term=state.term,
            now=time.time(),
            lifetime=ANNOUNCEMENT_LIFETIME,
        )

    def withdrawal() -> Withdrawal | None:
        state = peer.state
        if state is None or state.host != peer.me:
            return None
        return create_withdrawal(
            peer.identity, room_id=state.room_id, term=state.term, now=time.time()
        )

    async def announce_while_hosting() -> None:
        await keep_announced(
            nodes, announcement, interval=ANNOUNCEMENT_LIFETIME / 3, make_withdrawal=withdrawal
        )

    while True:
        await peer.wait_for(hosting)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announce_while_hosting)
            await peer.wait_for(lambda: not hosting())
            nursery.cancel_scope.cancel()


def _choose_from_lan(args: argparse.Namespace, ctx: _Context, identity: Identity) -> JoinRoom:
    """Browse the LAN, let the user choose a room, and find a credential for it."""
    from .discovery.joining import choose, credential_for, load_saved_invite
    from .discovery.rooms_view import browse_for

    if not _mdns_on(args):
        raise MitalkError(
            "no invite given, and looking for rooms on the LAN is off (--no-mdns or"
            " MITALK_MDNS=off): join with an invite"
        )
    err = sys.stderr
    err.write(f"looking for rooms on the LAN for {args.browse:g} s…\n")
    rooms = trio.run(browse_for, args.browse, _mdns_settings(args))
    if not rooms:
        raise MitalkError(
            f"no rooms found on the LAN within {args.browse:g} s; ask a host for an invite"
            " and run `mitalk join INVITE`"
        )
    ask = _ask_terminal if sys.stdin.isatty() else None
    room = choose(rooms, args.pick, ask=ask, err=err)
    now = time.time()
    saved = load_saved_invite(ctx.profile_dir(), room.record.room_id, identity.public_key, now)
    if saved is not None:
        err.write("using the invite saved from an earlier visit to this room\n")
    return JoinRoom(credential_for(room, saved, now), via=room.control_addresses)


def _ask_terminal(prompt: str) -> str:
    sys.stderr.write(prompt)
    sys.stderr.flush()
    return sys.stdin.readline()


def _mdns_on(args: argparse.Namespace) -> bool:
    from .discovery.switch import mdns_allowed

    return not getattr(args, "no_mdns", False) and mdns_allowed()


def _require_mdns(what: str) -> None:
    from .discovery.switch import MDNS_ENV, mdns_allowed

    if not mdns_allowed():
        raise MitalkError(f"can't {what}: mDNS is turned off ({MDNS_ENV}=off)")


def _mdns_settings(args: argparse.Namespace) -> MdnsSettings:
    """Browse on ``--mdns-interface``, else on a specific --listen address, else everywhere."""
    from .discovery.candidates import MdnsSettings

    interfaces: tuple[str, ...] = tuple(getattr(args, "mdns_interface", ()))
    listen: str | None = getattr(args, "listen", None)
    if not interfaces and listen is not None:
        host, _ = parse_address(listen, any_port=True)
        parsed = ipaddress.ip_address(host)
        if not (parsed.is_unspecified or parsed.is_loopback):
            interfaces = (host,)
    return MdnsSettings(interfaces)


def _reachable_from_lan(args: argparse.Namespace) -> bool:
    """Whether the peer listens beyond loopback (or mDNS interfaces were named)."""
    host, _ = parse_address(args.listen, any_port=True)
    return bool(args.mdns_interface) or not ipaddress.ip_address(host).is_loopback


async def _bootstrap_candidates(
    nodes: list[str], invite: SignedInvite, err: TextIO
) -> list[Candidate]:
    from .discovery.candidates import BOOTSTRAP, Candidate

    return [Candidate(address, BOOTSTRAP) for address in await _discover(nodes, invite, err)]


async def _keep_advertised(args: argparse.Namespace, peer: RunningPeer, err: TextIO) -> None:
    from .discovery.advertise import keep_room_advertised

    def note(message: str) -> None:
        err.write(f"note: {message}\n")

    await keep_room_advertised(
        peer,
        interfaces=tuple(args.mdns_interface),
        open_room=getattr(args, "open", False),
        note=note,
    )


def _identity(args: argparse.Namespace, ctx: _Context) -> Identity:
    identity, _ = profile.load_or_create_identity(ctx.profile_dir(), display_name=args.name)
    return identity


def _parse_key(text: str) -> PublicKey:
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raise MitalkError(f"{text!r} is not a public key: expected 64 hex digits") from None
    if len(raw) != 32:
        raise MitalkError(f"a public key is 64 hex digits, got {len(text.strip())}")
    return PublicKey(raw)


# -- room files ---------------------------------------------------------------------


def _rooms_dir(profile_dir: Path) -> Path:
    return profile_dir / "rooms"


def save_room_file(profile_dir: Path, peer: RunningPeer) -> Path:
    state = peer.state
    assert state is not None
    directory = _rooms_dir(profile_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{state.room_id.hex}.json"
    record = {
        "room_id": state.room_id.hex,
        "name": state.name,
        "addresses": [peer.control_address],
        "saved_at": time.time(),
    }
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def _load_room_file(profile_dir: Path, room: str | None) -> dict[str, object]:
    directory = _rooms_dir(profile_dir)
    if room is not None:
        try:
            RoomId.from_hex(room)
        except MitalkError:
            raise MitalkError(f"{room!r} is not a room id (32 hex digits)") from None
        candidates = [directory / f"{room.lower()}.json"]
    else:
        candidates = sorted(
            directory.glob("*.json") if directory.is_dir() else [],
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
    for path in candidates:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise MitalkError(f"the room file {path} is unreadable: {exc}") from None
        if not _room_record_valid(record):
            raise MitalkError(f"the room file {path} is damaged; host the room again")
        return record
    which = f"room {room}" if room else "any room"
    raise MitalkError(f"this profile has not hosted {which}; start one with `mitalk host`")


def _room_record_valid(record: object) -> TypeGuard[dict[str, object]]:
    """Whether a decoded room file has the fields ``mitalk invite`` reads, of the right types."""
    if not isinstance(record, dict):
        return False
    addresses = record.get("addresses")
    return (
        isinstance(record.get("room_id"), str)
        and isinstance(record.get("name"), str)
        and isinstance(addresses, list)
        and all(isinstance(a, str) for a in addresses)
    )


# -- audio --------------------------------------------------------------------------


def _has_device(kind: str) -> bool:
    try:
        from .audio.devices import find_device

        return find_device(None, kind) is not None  # type: ignore[arg-type]
    except MitalkError:
        return False


@asynccontextmanager
async def _audio_input(args: argparse.Namespace, err: TextIO) -> AsyncIterator[FrameInput | None]:
    spec: str = args.input
    if spec == "auto":
        spec = "mic" if _has_device("input") else "none"
        if spec == "none":
            err.write("note: no microphone found; you can listen but not speak (see --input)\n")
    if spec == "none":
        yield None
    elif spec == "mic":
        from .audio.devices import open_device_input

        async with open_device_input(args.input_device) as mic:
            yield mic
    else:
        try:
            yield input_from_spec(spec, seed=os.getpid(), loop=args.loop)
        except AudioSourceError as exc:
            raise MitalkError(f"--input: {exc}") from None


@asynccontextmanager
async def _audio_output(args: argparse.Namespace) -> AsyncIterator[Playback]:
    spec: str = args.output
    async with AsyncExitStack() as stack:
        if spec == "auto":
            spec = "speaker" if _has_device("output") else "null"
        output: FrameOutput
        if spec == "speaker":
            from .audio.devices import open_device_output

            output = await stack.enter_async_context(open_device_output(args.output_device))
        elif spec == "null":
            output = NullOutput()
        elif spec.startswith("wav:") or spec.lower().endswith(".wav"):
            output = open_wav_writer(spec.removeprefix("wav:"))
        else:
            raise MitalkError(f"--output {spec!r}: expected one of: auto, {OUTPUT_FORMS}")
        tracks = TrackFiles(args.tracks) if args.tracks else None
        yield Playback(output, track_output=tracks)


@attrs.define
class TrackFiles:
    """Opens one WAV per speaker in ``directory``, named after the speaker."""

    directory: Path
    name_of: Callable[[PublicKey], str] = attrs.field(default=lambda key: key.short)
    _used: set[str] = attrs.Factory(set)

    def __call__(self, key: PublicKey) -> FrameOutput:
        base = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.name_of(key))
        name = base or key.short
        if name in self._used:
            name = f"{base}-{key.short}"
        self._used.add(name)
        return open_wav_writer(self.directory / f"{name}.wav")


# -- the room -----------------------------------------------------------------------


def _run_room(
    args: argparse.Namespace, ctx: _Context, identity: Identity, room: HostRoom | JoinRoom
) -> int:
    from .runtime.interfaces import dialable_address

    for option in ("listen", "media"):
        value = getattr(args, option)
        if value is None:
            continue
        try:
            setattr(args, option, dialable_address(value))
        except AddressError as exc:
            raise MitalkError(f"--{option}: {exc}") from None
    return trio.run(_room_main, args, ctx, identity, room)


async def _room_main(
    args: argparse.Namespace, ctx: _Context, identity: Identity, room: HostRoom | JoinRoom
) -> int:
    err = sys.stderr
    media = args.media or f"{args.listen.rpartition(':')[0]}:0"
    async with (
        _audio_input(args, err) as audio_input,
        _audio_output(args) as playback,
    ):
        config = PeerConfig(
            identity,
            room,
            control_address=args.listen,
            media_address=media,
            audio_input=audio_input,
            playback=playback,
            record_frames=args.report is not None,
            fanout=getattr(args, "fanout", 6),
            media_config=MediaConfig(relay_capacity=args.relay_capacity),
        )
        if isinstance(room, JoinRoom):
            reason, session = await _join_room(args, ctx, config, playback)
        else:
            async with open_peer(config) as peer:
                reason, session = await _session(args, ctx, peer, playback)
        session.say(_farewell(reason))
        session.emit({"event": "exited", "reason": reason, "time": time.monotonic()})
    return 0 if reason == "left" else 1


async def _join_room(
    args: argparse.Namespace, ctx: _Context, config: PeerConfig, playback: Playback
) -> tuple[str, ConsoleSession]:
    """Join, trying the room's addresses from every source (see :mod:`.discovery.joining`)."""
    from .discovery.joining import JoinSearch, join_searching, save_invite

    room = config.room
    assert isinstance(room, JoinRoom)
    err = sys.stderr

    def note(message: str) -> None:
        err.write(f"note: {message}\n")

    search = JoinSearch(
        via=room.via,
        lookup=(
            partial(_bootstrap_candidates, args.bootstrap, room.invite, err)
            if args.bootstrap
            else None
        ),
        mdns=_mdns_settings(args) if _mdns_on(args) and _reachable_from_lan(args) else None,
        search=args.search,
        note=note,
    )

    async def run(peer: RunningPeer) -> tuple[str, ConsoleSession]:
        try:
            save_invite(ctx.profile_dir(), room.invite)
        except OSError as exc:
            note(f"could not keep the invite in the profile: {exc.strerror or exc}")
        return await _session(args, ctx, peer, playback)

    return await join_searching(attrs.evolve(config, room=attrs.evolve(room, via=())), search, run)


async def _session(
    args: argparse.Namespace, ctx: _Context, peer: RunningPeer, playback: Playback
) -> tuple[str, ConsoleSession]:
    """The console and background tasks of a peer in its room, until it leaves."""
    out, err = ctx.out, sys.stderr
    if isinstance(playback.track_output, TrackFiles):
        playback.track_output.name_of = peer.name_of
    interactive = (
        sys.stdin.isatty() and args.script is None and not args.json_events
    ) and not args.detach
    session = ConsoleSession(
        peer,
        out,
        err,
        json_events=args.json_events,
        show_status=interactive and err.isatty(),
        playback=playback,
    )
    peer.subscribe(session.on_event)
    _announce(args, ctx, peer, session)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drive_console, session, args, interactive)
        nursery.start_soon(_leave_on_signal, peer)
        if args.bootstrap:  # announces whenever this peer is the host
            nursery.start_soon(_keep_announced, args.bootstrap, peer)
        if _mdns_on(args):  # advertises whenever this peer is the host
            nursery.start_soon(_keep_advertised, args, peer, err)
        elif getattr(args, "open", False):
            session.say("note: --open has no effect with mDNS off; the room is invite-only")
        if session.show_status:
            nursery.start_soon(session.run_status)
        await peer.left.wait()
        nursery.cancel_scope.cancel()
    reason = peer.left_reason or "left"
    if args.report is not None:
        _write_report(args.report, peer, playback)
    return reason, session


def _announce(
    args: argparse.Namespace, ctx: _Context, peer: RunningPeer, session: ConsoleSession
) -> None:
    state = peer.state
    assert state is not None
    record: dict[str, object] = {
        "event": "ready",
        "time": time.monotonic(),
        "room_id": state.room_id.hex,
        "room": state.name,
        "me": {"name": peer.identity.display_name, "fp": peer.me.short},
        "role": peer.role.label if peer.role is not None else None,
        "control": peer.control_address,
        "media": peer.media_address,
        "host_key": state.host.raw.hex() if state.host is not None else None,
    }
    if isinstance(peer.config.room, HostRoom):
        save_room_file(ctx.profile_dir(), peer)
        invite = _host_invite(args, peer)
        if args.invite_file is not None:
            args.invite_file.write_text(invite.token + "\n", encoding="utf-8")
        record["invite"] = invite.token
        session.say(f"Hosting {state.name!r} at {peer.control_address}. Invite others with:")
        session.say(f"  mitalk join {invite.token}")
    else:
        session.say(
            f"Joined {state.name!r} as {peer.role.label if peer.role is not None else '?'}"
            f" ({len(state.members)} here). Type /help for commands."
        )
    session.emit(record)


def _host_invite(args: argparse.Namespace, peer: RunningPeer) -> SignedInvite:
    """The invite ``mitalk host`` prints: with this peer's address unless told otherwise."""
    if not args.no_address_hints:
        return peer.invite(
            role=args.invite_role, lifetime=args.invite_expires, max_uses=args.invite_uses
        )
    state = peer.state
    assert state is not None
    return create_invite(
        peer.identity,
        room_id=state.room_id,
        room_name=state.name,
        role=args.invite_role,
        now=time.time(),
        lifetime=args.invite_expires,
        max_uses=args.invite_uses,
        issuer_role=peer.role,
    )


async def _leave_on_signal(peer: RunningPeer) -> None:
    """SIGTERM or SIGHUP leave the room properly, as /leave would."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async for _ in signals:
            peer.leave()
            return


async def _drive_console(session: ConsoleSession, args: argparse.Namespace, tty: bool) -> None:
    if args.script is not None:
        try:
            lines = args.script.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            session.error(f"could not read the script {args.script}: {exc}")
        else:
            await session.run_lines(ScriptLines(lines), leave_at_end=False)
    if args.detach:
        return  # the room keeps running until /leave, a kick, or a signal
    if args.script is not None and not tty:
        return
    source: LineSource
    if tty:
        install_completion(session)
        source = TerminalLines(lambda: session.peer.state)
    else:
        source = StreamLines(sys.stdin)
    await session.run_lines(source, leave_at_end=True)


def _farewell(reason: str) -> str:
    return {
        "left": "You left the room.",
        "kicked": "You were removed from the room by a moderator.",
        "dropped": "You are no longer in the room (it moved on without you).",
    }.get(reason, f"You are no longer in the room ({reason}).")


def _write_report(path: Path, peer: RunningPeer, playback: Playback) -> None:
    log = peer.frame_log
    stats = peer.statistics()
    overall = playback.statistics().overall
    buffers = stats.peer.media.speakers.values()
    record = {
        "name": peer.identity.display_name,
        "key": peer.me.raw.hex(),
        "sent": {str(seq): at for seq, at in log.sent.items()},
        "received": [[key.raw.hex(), seq, at] for key, seq, at in log.received],
        "played": overall.frames_played,
        "fec": overall.frames_fec,
        "concealed": overall.frames_concealed,
        "concealed_fraction": overall.concealed_fraction,
        "concealed_samples": sum(j.concealedSamples for j in buffers),
        "samples_received": sum(j.totalSamplesReceived for j in buffers),
        "parent_switches": stats.peer.media.parent_switches,
        "dropped": stats.peer.media.dropped,
    }
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
