"""Joining a room with help from the LAN: choose a room, find a credential, find the host.

:func:`join_searching` is ``open_peer`` for a joiner that does not know where the
room is.  It tries one candidate address at a time (see :mod:`.candidates`), each
time with a fresh peer, so that every failure is reported on its own: an address
where someone else answers (the handshake proves a key other than the invite's
issuer) is named as such and skipped, and the search goes on until ``search``
seconds have passed.  Only "could not reach the room" failures move on to the next
candidate; a room that answers and refuses ends the attempt.  The runtime's
failure names each address and what happened there (refused, timed out, or a
peer that proved another key than the invite's issuer).

Invites a peer joined with are kept in the profile (``invites/<room-id>.token``,
mode 0600), so ``mitalk join`` without an invite can use them again for a room it
picks from the LAN list.
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final, TextIO, TypeVar

import attrs
import trio

from ..core.errors import MitalkError
from ..core.identity import PublicKey
from ..core.ids import RoomId
from ..core.invite import InviteError, SignedInvite
from ..runtime.peer_runtime import (
    JoinError,
    JoinFailure,
    JoinRoom,
    PeerConfig,
    RunningPeer,
    open_peer,
)
from .candidates import GRACE, PICKED, Candidate, MdnsSettings, search_round
from .mdns import RoomSeen
from .rooms_view import numbered, pick

T = TypeVar("T")

UNREACHABLE: Final = "could not reach the room: "


# --- saved invites -------------------------------------------------------------------


def invite_path(profile_dir: Path, room_id: RoomId) -> Path:
    return profile_dir / "invites" / f"{room_id.hex}.token"


def save_invite(profile_dir: Path, invite: SignedInvite) -> Path:
    """Keep ``invite`` for its room (mode 0600; the token is a credential)."""
    path = invite_path(profile_dir, invite.invite.room_id)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (invite.token + "\n").encode("ascii"))
    finally:
        os.close(fd)
    return path


def load_saved_invite(
    profile_dir: Path, room_id: RoomId, me: PublicKey, now: float
) -> SignedInvite | None:
    """The saved invite for ``room_id`` if there is one that still verifies for ``me``."""
    path = invite_path(profile_dir, room_id)
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        invite = SignedInvite.from_token(text)
        invite.verify(now, room_id=room_id, audience=me)
    except InviteError:
        return None
    return invite


# --- choosing a room from the LAN list -------------------------------------------------


def choose(
    rooms: Sequence[RoomSeen],
    choice: str | None,
    *,
    ask: Callable[[str], str] | None,
    err: TextIO,
) -> RoomSeen:
    """The room to join: ``choice`` (``--pick``), else asked through ``ask`` (a terminal).

    Without either, a single room is taken; several are an error naming ``--pick``.
    """
    err.write(numbered(rooms) + "\n")
    if choice is not None:
        return pick(rooms, choice)
    if ask is None:
        if len(rooms) == 1:
            err.write(f"joining the only room found, {rooms[0].record.name!r}\n")
            return rooms[0]
        raise MitalkError(
            f"{len(rooms)} rooms found: choose one with --pick NAME or --pick NUMBER"
        )
    while True:
        answer = ask("Join which room? (number or name; empty to give up) ").strip()
        if not answer:
            raise MitalkError("no room chosen")
        try:
            return pick(rooms, answer)
        except MitalkError as exc:
            err.write(f"{exc}\n")


def credential_for(room: RoomSeen, saved: SignedInvite | None, now: float) -> SignedInvite:
    """The invite to join ``room`` with: one saved earlier, else the room's open invite.

    An open invite is used only if it verifies as issued by the key the record names
    (the handshake then holds the host to that key).
    """
    if saved is not None:
        return saved
    record = room.record
    if record.open_invite is not None:
        try:
            record.open_invite.verify(now, room_id=record.room_id, expected_issuer=record.host_key)
        except InviteError as exc:
            raise MitalkError(f"the open invite of {record.name!r} can't be used: {exc}") from None
        return record.open_invite
    raise MitalkError(
        f"{record.name!r} is invite-only: ask its host ({record.fingerprint}) for an invite,"
        " then run `mitalk join INVITE`"
    )


# --- finding the host ------------------------------------------------------------------


def unreachable(exc: JoinError) -> bool:
    """Whether ``exc`` says no address answered as the host (rather than a refusal)."""
    return exc.failure is JoinFailure.UNREACHABLE


def explain(candidate: Candidate, exc: JoinError) -> str:
    """One line on why ``candidate`` did not work."""
    where = f"{candidate.address} ({candidate.source})"
    for address, problem in exc.problems:
        if address == candidate.address:
            if problem.startswith("not the room's host"):
                return f"{where} is {problem}; skipping it"
            return f"{where} did not work: {problem}"
    return f"{where} did not work: {exc}"


@attrs.define
class JoinSearch:
    """How :func:`join_searching` looks for the room."""

    via: tuple[str, ...] = ()
    """Addresses known before searching (a room picked from the LAN list)."""
    lookup: Callable[[], Awaitable[Sequence[Candidate]]] | None = None
    """The bootstrap lookup, if any; asked once."""
    mdns: MdnsSettings | None = None
    """How to browse the LAN; ``None`` for not at all."""
    search: float = 10.0
    """Seconds to keep looking for new addresses while the known ones fail."""
    note: Callable[[str], None] = lambda _message: None


async def join_searching(
    config: PeerConfig,
    search: JoinSearch,
    run: Callable[[RunningPeer], Awaitable[T]],
) -> T:
    """Join the room ``config.room`` names, trying candidates until one is the host.

    ``run(peer)`` is called inside the joined peer and its result returned.  Raises
    :class:`JoinError` when nothing worked.
    """
    room = config.room
    assert isinstance(room, JoinRoom)
    invite = room.invite.invite
    hints = invite.addresses
    deadline = trio.current_time() + search.search
    known = [Candidate(address, PICKED) for address in search.via]
    lookup = search.lookup
    tried: set[str] = set()
    failures: list[JoinError] = []
    problems: list[str] = []
    first = True
    searching_said = False
    while True:
        if search.mdns is not None and not searching_said and not (first and (known or hints)):
            search.note(f"looking for the room on the LAN (for up to {search.search:g} s)…")
            searching_said = True
        batch = await search_round(
            room_id=invite.room_id,
            issuer=invite.issuer,
            known=known,
            exclude=tried,
            lookup=lookup,
            mdns=search.mdns,
            deadline=deadline,
            patience=GRACE if first and hints else math.inf,
            note=search.note,
        )
        lookup = None
        if first and not batch and not hints:
            raise JoinError(_nothing_found(search))
        attempts: list[Candidate | None] = list(batch) or ([None] if first else [])
        was_first, first = first, False
        for candidate in attempts:
            via = () if candidate is None else (candidate.address,)
            if candidate is not None:
                tried.add(candidate.address)
            joined = False
            try:
                async with open_peer(
                    attrs.evolve(config, room=attrs.evolve(room, via=via))
                ) as peer:
                    joined = True
                    return await run(peer)
            except JoinError as exc:
                if joined or not unreachable(exc):
                    raise
                failures.append(exc)
                if candidate is None:
                    problems.append(str(exc).removeprefix(UNREACHABLE))
                else:
                    problems.append(explain(candidate, exc))
                    search.note(problems[-1])
        if search.mdns is None or trio.current_time() >= deadline:
            break
        if not batch and not was_first:  # the round ended with nothing new: nothing can come
            break
    if len(failures) == 1 and not tried:  # only the invite's own addresses: as they failed
        raise failures[0]
    raise JoinError(UNREACHABLE + "; ".join(problems))


def _nothing_found(search: JoinSearch) -> str:
    places = ["the invite carries no address"]
    if search.mdns is not None:
        places.append(f"nothing answered on the LAN within {search.search:g} s")
    if search.lookup is not None:
        places.append("no bootstrap node knew the room")
    return "found no address for the room: " + ", ".join(places)
