"""Where a joiner may find a room, and in which order to try the addresses.

A joiner knows the room id and the invite's issuer.  Addresses come from several
sources at once: a room picked from the LAN list, bootstrap nodes (another
module's lookup, passed in as a coroutine), and mDNS records with the room's id.
:func:`search_round` runs the sources in parallel and returns once something new
answered (plus a short grace period, so that near-simultaneous answers are ordered
together rather than by luck), once no source can say anything more, or at the
deadline.

Every address is only a hint: whoever answers there must still prove, in the
Noise handshake, that it holds the issuer's key.  The order only decides what is
tried first (:func:`order_candidates`): a picked room, then bootstrap answers (they
are signed by the room's host), then LAN records that claim the issuer's key, then
other LAN records; ties are broken by address, so the order is reproducible.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Final

import attrs
import trio

from ..core.identity import PublicKey
from ..core.ids import RoomId
from .mdns import RoomSeen, ZeroconfFactory, default_zeroconf, open_room_browser, open_zeroconf
from .switch import MdnsError

logger = logging.getLogger(__name__)

GRACE: Final = 0.5
"""Seconds to keep listening after the first new answer, for others close behind."""

PICKED: Final = "picked from the room list"
BOOTSTRAP: Final = "from a bootstrap node"
LAN: Final = "seen on the LAN"


@attrs.frozen
class Candidate:
    """An address where the room's host might be, and where the hint came from."""

    address: str
    source: str
    claimed_key: PublicKey | None = None
    """The host key the hint claims (LAN records); unproven until the handshake."""


@attrs.frozen
class MdnsSettings:
    """How to browse: which interfaces, which environment, how to build zeroconf."""

    interfaces: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    create: ZeroconfFactory = default_zeroconf


def lan_candidates(seen: Iterable[RoomSeen], room_id: RoomId) -> list[Candidate]:
    """One candidate per control address of every record for ``room_id``."""
    return [
        Candidate(address, LAN, room.record.host_key)
        for room in seen
        if room.record.room_id == room_id
        for address in room.control_addresses
    ]


def order_candidates(candidates: Iterable[Candidate], issuer: PublicKey) -> list[Candidate]:
    """The order to try ``candidates`` in, each address once (see the module docstring)."""

    def rank(candidate: Candidate) -> int:
        if candidate.source == PICKED:
            return 0
        if candidate.source == BOOTSTRAP:
            return 1
        if candidate.claimed_key == issuer:
            return 2
        return 3

    best: dict[str, Candidate] = {}
    for candidate in candidates:
        known = best.get(candidate.address)
        if known is None or rank(candidate) < rank(known):
            best[candidate.address] = candidate
    return sorted(best.values(), key=lambda c: (rank(c), c.address))


@attrs.define(eq=False)
class _Round:
    found: list[Candidate]
    exclude: set[str]
    running: int = 0
    changed: trio.Event = attrs.Factory(trio.Event)

    def fresh(self) -> list[Candidate]:
        return [c for c in self.found if c.address not in self.exclude]

    def add(self, candidates: Iterable[Candidate]) -> None:
        known = {(c.address, c.source) for c in self.found}
        new = [c for c in candidates if (c.address, c.source) not in known]
        if new:
            self.found.extend(new)
            self.poke()

    def poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


async def search_round(
    *,
    room_id: RoomId,
    issuer: PublicKey,
    known: Sequence[Candidate] = (),
    exclude: Iterable[str] = (),
    lookup: Callable[[], Awaitable[Sequence[Candidate]]] | None = None,
    mdns: MdnsSettings | None = None,
    deadline: float = math.inf,
    patience: float = math.inf,
    grace: float = GRACE,
    note: Callable[[str], None] | None = None,
) -> list[Candidate]:
    """New candidates (not in ``exclude``), ordered, from ``known``, ``lookup`` and mDNS.

    Returns ``grace`` seconds after the first new candidate, as soon as no source is
    left that could still answer, after ``patience`` seconds without anything new,
    or at ``deadline`` (trio time), whichever is first.  The mDNS browser is closed
    before returning.  A source that fails is reported through ``note`` and skipped.
    """
    state = _Round(list(known), set(exclude))
    started = trio.current_time()

    async def run_lookup(call: Callable[[], Awaitable[Sequence[Candidate]]]) -> None:
        try:
            state.add(await call())
        finally:
            state.running -= 1
            state.poke()

    async def run_browser(settings: MdnsSettings) -> None:
        try:
            async with (
                open_zeroconf(settings.interfaces, env=settings.env, create=settings.create)
                as zc,
                open_room_browser(zc) as browser,
            ):
                while True:
                    state.add(lan_candidates(browser.rooms.values(), room_id))
                    await browser.wait_changed(browser.version)
        except MdnsError as exc:
            if note is not None:
                note(f"not searching the LAN: {exc}")
        finally:
            state.running -= 1
            state.poke()

    async with trio.open_nursery() as nursery:
        if lookup is not None:
            state.running += 1
            nursery.start_soon(run_lookup, lookup)
        if mdns is not None:
            state.running += 1
            nursery.start_soon(run_browser, mdns)
        with trio.move_on_at(deadline):
            first_new: float | None = None
            while True:
                now = trio.current_time()
                if state.fresh() and first_new is None:
                    first_new = now
                if state.running == 0:
                    break
                wake = first_new + grace if first_new is not None else started + patience
                if now >= wake:
                    break
                with trio.move_on_at(wake):
                    await state.changed.wait()
        nursery.cancel_scope.cancel()
    return order_candidates(state.fresh(), issuer)
