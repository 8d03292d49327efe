"""Scenario files: a room, its network, a timeline of actions and the expectations.

A scenario is a TOML file (see ``scenarios/`` and the README).  :func:`load_scenario`
reads and checks it completely before anything runs: an unknown key, a wrong
type, an action naming a peer that does not exist or a time out of order is a
:class:`ScenarioError` that names the file, the line and the reason.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import attrs

from .network import DISTRIBUTIONS, LinkModel
from .toml_lines import describe, locate

HOST = "host"
"""The name of the implicit host, and the word for "whoever hosts now" in actions."""
BUSIEST_RELAY = "busiest_relay"
ANONYMOUS_PREFIX = "l"
ROLES = ("host", "moderator", "speaker", "listener")
REST = "rest"

T = TypeVar("T")


class ScenarioError(ValueError):
    """A scenario file that can't run: ``file:line: reason``."""

    def __init__(self, file: str, line: int | None, reason: str) -> None:
        self.file, self.line, self.reason = file, line, reason
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {reason}")


# --- the model ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RoomSettings:
    name: str = "Simulated room"
    fanout: int = 6
    frame_ms: int = 20
    codec: str = "opus"
    """``opus``: speakers really encode Opus; ``synthetic``: Opus-sized dummy payloads."""
    decode: bool = False
    """Listeners run jitter buffers and really decode (and conceal) the audio."""
    heartbeat_s: float = 1.0
    host_timeout_s: float = 4.0
    succession_step_s: float = 1.0


@attrs.frozen(kw_only=True)
class PeerPlan:
    name: str
    role: str = "listener"
    relay_capacity: int = 6
    upload_kbps: float = 0.0
    queue_ms: float = 500.0
    clock_offset_ms: float = 0.0
    join_at: float | None = 0.0
    """When the peer joins on its own; ``None`` when a timeline ``join`` action does it."""


@attrs.frozen(kw_only=True)
class LinkOverride:
    between: tuple[str, str]
    changes: Mapping[str, float | str]


@attrs.frozen(kw_only=True)
class Action:
    at: float
    kind: str
    peer: str | None = None
    target: str | None = None
    duration: float = 0.0
    audio: str = "synthetic"
    role: str = "listener"
    groups: tuple[tuple[str, ...], ...] = ()
    changes: Mapping[str, float | str] = attrs.Factory(dict)
    depth: int | None = None
    """For a ``crash`` of ``busiest_relay``: choose among the relays at this tree depth."""
    line: int | None = None


@attrs.frozen(kw_only=True)
class Expectation:
    check: str
    min: float | None = None
    max_ms: float | None = None
    percentile: float = 95.0
    speaker: str | None = None
    peer: str | None = None
    listeners: tuple[str, ...] = ()
    start: float | None = None
    end: float | None = None
    role: str | None = None
    count: int | None = None
    line: int | None = None

    @property
    def name(self) -> str:
        return _expectation_name(self)


@attrs.frozen(kw_only=True)
class Scenario:
    name: str
    description: str
    path: Path | None
    seed: int
    duration: float
    room: RoomSettings
    link: LinkModel
    upload_kbps: float
    queue_ms: float
    links: tuple[LinkOverride, ...]
    peers: tuple[PeerPlan, ...]
    timeline: tuple[Action, ...]
    expectations: tuple[Expectation, ...]
    join_spread_s: float = 1.0

    @property
    def peer_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.peers)

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path is not None else Path.cwd()


# --- actions and checks, and the fields each takes --------------------------------------

PEER_ACTIONS = frozenset(
    {"leave", "raise_hand", "lower_hand", "accept_stage", "decline_stage", "step_down"}
)
MODERATION_ACTIONS = frozenset(
    {"invite_to_stage", "move_to_audience", "mute", "unmute", "kick", "promote", "demote"}
)
ACTIONS: dict[str, tuple[set[str], set[str]]] = {
    # action: (required fields, optional fields), besides "at" and "action"
    "join": ({"peer"}, {"via", "role"}),
    **{name: ({"peer"}, set()) for name in PEER_ACTIONS},
    **{name: ({"target"}, {"peer"}) for name in MODERATION_ACTIONS},
    "speak": ({"peer", "duration"}, {"audio"}),
    "crash": ({"peer"}, {"depth"}),
    "crash_host": (set(), set()),
    "partition": ({"groups"}, set()),
    "heal": (set(), set()),
    "set_network": (set(), set(attrs.fields_dict(LinkModel))),
    "eavesdrop": ({"peer"}, set()),
}
CHECKS: dict[str, tuple[set[str], set[str]]] = {
    "delivery": ({"min"}, {"speaker", "listeners", "from", "until"}),
    "latency": ({"max_ms"}, {"percentile", "speaker", "listeners", "from", "until"}),
    "outage": ({"max_ms"}, {"speaker", "listeners", "from", "until"}),
    "tree_repair": ({"max_ms"}, set()),
    "host_takeover": ({"max_ms"}, set()),
    "one_moderator_per_term": (set(), set()),
    "kicked_decrypts_nothing": ({"peer"}, set()),
    "heard": ({"speaker", "from", "until"}, {"listeners"}),
    "role": ({"peer", "role"}, set()),
    "hosts": ({"count"}, set()),
    "no_frame_played_twice": (set(), set()),
}


def _expectation_name(e: Expectation) -> str:
    parts = [e.check]
    if e.check == "delivery":
        parts.append(f">= {e.min:g}")
    elif e.check == "latency":
        parts.append(f"p{e.percentile:g} <= {e.max_ms:g} ms")
    elif e.check in ("tree_repair", "host_takeover", "outage"):
        parts.append(f"<= {e.max_ms:g} ms")
    elif e.check == "heard":
        parts.append(f"{e.speaker} in [{e.start:g}, {e.end:g}] s")
    elif e.check in ("kicked_decrypts_nothing",):
        parts.append(str(e.peer))
    elif e.check == "role":
        parts.append(f"{e.peer} is {e.role}")
    elif e.check == "hosts":
        parts.append(f"= {e.count}")
    if e.speaker and e.check in ("delivery", "latency", "outage"):
        parts.append(f"from {e.speaker}")
    if e.check in ("delivery", "latency", "outage") and (e.start is not None or e.end is not None):
        parts.append(f"sent in [{e.start or 0:g}, {e.end if e.end is not None else 'end'}]")
    return " ".join(parts)


# --- reading ------------------------------------------------------------------------


def load_scenario(path: Path | str) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(str(path), None, "no such scenario file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(str(path), None, f"can't read it: {error}") from None
    return parse_scenario(text, file=str(path), path=path)


def parse_scenario(text: str, *, file: str = "<scenario>", path: Path | None = None) -> Scenario:
    try:
        document = tomllib.loads(text)
    except ValueError as error:  # TOMLDecodeError, or an integer too long to convert
        line = _toml_error_line(str(error))
        raise ScenarioError(file, line, f"not valid TOML: {error}") from None
    return _Reader(text, file, path).scenario(document)


def _toml_error_line(message: str) -> int | None:
    found = re.search(r"line (\d+)", message)
    return int(found.group(1)) if found else None


@attrs.define
class _Reader:
    text: str
    file: str
    path: Path | None

    def fail(self, where: Sequence[str | int], reason: str) -> ScenarioError:
        line = locate(self.text, where)
        return ScenarioError(self.file, line, f"{describe(where)}: {reason}" if where else reason)

    # Typed field access.

    def table(self, value: Any, where: tuple[str | int, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a table, not {_type_name(value)}")
        return value

    def take(
        self,
        table: dict[str, Any],
        where: tuple[str | int, ...],
        key: str,
        kind: type[T],
        default: T,
        check: Callable[[T], str | None] | None = None,
    ) -> T:
        if key not in table:
            return default
        value = table[key]
        here = (*where, key)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:
                raise self.fail(here, "is far too large") from None
        if kind is float and isinstance(value, float) and not math.isfinite(value):
            raise self.fail(here, "must be a finite number")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(here, f"must be {_kind_name(kind)}, not {_type_name(value)}")
        if check is not None and (problem := check(value)) is not None:
            raise self.fail(here, problem)
        return value

    def maybe(
        self,
        table: dict[str, Any],
        where: tuple[str | int, ...],
        key: str,
        kind: type[T],
        check: Callable[[T], str | None] | None = None,
    ) -> T | None:
        """Like :meth:`take`, with ``None`` when the key is absent."""
        if key not in table:
            return None
        return self.take(table, where, key, kind, cast(T, None), check)

    def names(
        self, table: dict[str, Any], where: tuple[str | int, ...], key: str
    ) -> tuple[str, ...]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail((*where, key), "must be a list of peer names")
        return tuple(value)

    def only(self, table: dict[str, Any], where: tuple[str | int, ...], allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                hint = f"; expected one of: {', '.join(sorted(allowed))}" if allowed else ""
                raise self.fail((*where, key), f"unknown key{hint}")

    # Sections.

    def scenario(self, doc: dict[str, Any]) -> Scenario:
        self.only(
            doc,
            (),
            {
                "name",
                "description",
                "seed",
                "duration",
                "room",
                "network",
                "peers",
                "peer",
                "timeline",
                "expect",
            },
        )
        default_name = self.path.stem if self.path is not None else "scenario"
        name = self.take(doc, (), "name", str, default_name, _nonempty)
        description = self.take(doc, (), "description", str, "")
        seed = self.take(doc, (), "seed", int, 1)
        duration = self.take(doc, (), "duration", float, 10.0, _positive)
        room = self.room(doc.get("room", {}))
        link, upload, queue, overrides = self.network(doc.get("network", {}))
        peers, spread = self.peers(doc, upload, queue)
        known = {p.name for p in peers}
        timeline = self.timeline(doc.get("timeline", []), known, duration)
        joined_later = {a.peer for a in timeline if a.kind == "join"}
        peers = tuple(attrs.evolve(p, join_at=None) if p.name in joined_later else p for p in peers)
        for i, override in enumerate(overrides):
            for peer in override.between:
                if peer not in known:
                    raise self.fail(("network", "link", i, "between"), f"no peer named {peer!r}")
        expectations = self.expectations(doc.get("expect", []), known, duration)
        return Scenario(
            name=name,
            description=description,
            path=self.path,
            seed=seed,
            duration=duration,
            room=room,
            link=link,
            upload_kbps=upload,
            queue_ms=queue,
            links=tuple(overrides),
            peers=peers,
            timeline=timeline,
            expectations=expectations,
            join_spread_s=spread,
        )

    def room(self, value: Any) -> RoomSettings:
        where: tuple[str | int, ...] = ("room",)
        table = self.table(value, where)
        self.only(table, where, set(attrs.fields_dict(RoomSettings)))
        defaults = RoomSettings()
        return RoomSettings(
            name=self.take(table, where, "name", str, defaults.name, _nonempty),
            fanout=self.take(table, where, "fanout", int, defaults.fanout, _between(2, 64)),
            frame_ms=self.take(table, where, "frame_ms", int, 20, _choice((10, 20, 40))),
            codec=self.take(table, where, "codec", str, "opus", _choice(("opus", "synthetic"))),
            decode=self.take(table, where, "decode", bool, False),
            heartbeat_s=self.take(table, where, "heartbeat_s", float, 1.0, _positive),
            host_timeout_s=self.take(table, where, "host_timeout_s", float, 4.0, _positive),
            succession_step_s=self.take(table, where, "succession_step_s", float, 1.0, _positive),
        )

    def link_changes(
        self, table: dict[str, Any], where: tuple[str | int, ...], skip: set[str]
    ) -> dict[str, float | str]:
        changes: dict[str, float | str] = {}
        for key in attrs.fields_dict(LinkModel):
            if key not in table or key in skip:
                continue
            if key == "distribution":
                changes[key] = self.take(table, where, key, str, "uniform", _choice(DISTRIBUTIONS))
            elif key in ("latency_ms", "jitter_ms", "reorder_ms"):
                changes[key] = self.take(table, where, key, float, 0.0, _not_negative)
            else:
                changes[key] = self.take(table, where, key, float, 0.0, _probability)
        return changes

    def network(self, value: Any) -> tuple[LinkModel, float, float, list[LinkOverride]]:
        where: tuple[str | int, ...] = ("network",)
        table = self.table(value, where)
        allowed = set(attrs.fields_dict(LinkModel)) | {"upload_kbps", "queue_ms", "link"}
        self.only(table, where, allowed)
        link = LinkModel().with_changes(**self.link_changes(table, where, set()))
        upload = self.take(table, where, "upload_kbps", float, 0.0, _not_negative)
        queue = self.take(table, where, "queue_ms", float, 500.0, _positive)
        overrides = []
        entries = table.get("link", [])
        if not isinstance(entries, list):
            raise self.fail((*where, "link"), "must be an array of tables ([[network.link]])")
        for i, entry in enumerate(entries):
            here = (*where, "link", i)
            item = self.table(entry, here)
            self.only(item, here, set(attrs.fields_dict(LinkModel)) | {"between"})
            between = self.names(item, here, "between")
            if len(between) != 2 or between[0] == between[1]:
                raise self.fail((*here, "between"), "must name two different peers")
            overrides.append(
                LinkOverride(
                    between=(between[0], between[1]), changes=self.link_changes(item, here, set())
                )
            )
        return link, upload, queue, overrides

    def peers(
        self, doc: dict[str, Any], upload: float, queue: float
    ) -> tuple[tuple[PeerPlan, ...], float]:
        where: tuple[str | int, ...] = ("peers",)
        table = self.table(doc.get("peers", {}), where)
        self.only(table, where, {"listeners", "relay_capacity", "join_spread_s"})
        count = self.take(table, where, "listeners", int, 0, _between(0, 100_000))
        capacity = self.take(table, where, "relay_capacity", int, 6, _between(0, 64))
        spread = self.take(table, where, "join_spread_s", float, 1.0, _not_negative)
        named: list[PeerPlan] = []
        entries = doc.get("peer", [])
        if not isinstance(entries, list):
            raise self.fail(("peer",), "must be an array of tables ([[peer]])")
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            here: tuple[str | int, ...] = ("peer", i)
            item = self.table(entry, here)
            fields = {
                "name",
                "role",
                "relay_capacity",
                "upload_kbps",
                "queue_ms",
                "clock_offset_ms",
            }
            self.only(item, here, fields)
            if "name" not in item:
                raise self.fail(here, "a peer needs a name")
            name = self.take(item, here, "name", str, "", _peer_name)
            if name in seen:
                raise self.fail((*here, "name"), f"peer {name!r} is defined twice")
            seen.add(name)
            named.append(
                PeerPlan(
                    name=name,
                    role=self.take(item, here, "role", str, "listener", _choice(ROLES)),
                    relay_capacity=self.take(
                        item, here, "relay_capacity", int, capacity, _between(0, 64)
                    ),
                    upload_kbps=self.take(item, here, "upload_kbps", float, upload, _not_negative),
                    queue_ms=self.take(item, here, "queue_ms", float, queue, _positive),
                    clock_offset_ms=self.take(item, here, "clock_offset_ms", float, 0.0),
                )
            )
        hosts = [p for p in named if p.role == "host"]
        if len(hosts) > 1:
            raise self.fail(("peer", named.index(hosts[1]), "role"), "a room has one host")
        if not hosts:
            if HOST in seen:
                index = [p.name for p in named].index(HOST)
                raise self.fail(("peer", index, "role"), "the peer named 'host' must be the host")
            named.insert(
                0,
                PeerPlan(
                    name=HOST,
                    role="host",
                    relay_capacity=capacity,
                    upload_kbps=upload,
                    queue_ms=queue,
                ),
            )
        else:
            named.remove(hosts[0])
            named.insert(0, hosts[0])
        width = max(3, len(str(count)))
        for n in range(1, count + 1):
            name = f"{ANONYMOUS_PREFIX}{n:0{width}}"
            if name in seen:
                raise self.fail(("peers", "listeners"), f"anonymous listener {name} is also named")
            named.append(
                PeerPlan(
                    name=name,
                    relay_capacity=capacity,
                    upload_kbps=upload,
                    queue_ms=queue,
                    join_at=spread * n / max(count, 1),
                )
            )
        if len(named) < 2:
            raise self.fail(("peers",), "a scenario needs at least one peer besides the host")
        return tuple(named), spread

    def timeline(self, value: Any, known: set[str], duration: float) -> tuple[Action, ...]:
        if not isinstance(value, list):
            raise self.fail(("timeline",), "must be an array of tables ([[timeline]])")
        actions: list[Action] = []
        last = 0.0
        for i, entry in enumerate(value):
            here: tuple[str | int, ...] = ("timeline", i)
            item = self.table(entry, here)
            if "action" not in item:
                raise self.fail(here, f"needs an action: one of {', '.join(sorted(ACTIONS))}")
            kind = self.take(item, here, "action", str, "", _choice(tuple(sorted(ACTIONS))))
            required, optional = ACTIONS[kind]
            self.only(item, here, required | optional | {"at", "action"})
            for key in sorted(required | {"at"}):
                if key not in item:
                    raise self.fail(here, f"{kind} needs {key!r}")
            at = self.take(item, here, "at", float, 0.0, _not_negative)
            if at < last:
                raise self.fail(
                    (*here, "at"), f"time {at:g} s is before the previous action's {last:g} s"
                )
            if at > duration:
                raise self.fail((*here, "at"), f"time {at:g} s is after the end ({duration:g} s)")
            last = at
            peer = self.maybe(item, here, "peer", str)
            target = self.maybe(item, here, "target", str)
            self.check_peer(peer, (*here, "peer"), known, kind)
            self.check_peer(target, (*here, "target"), known, kind)
            groups: tuple[tuple[str, ...], ...] = ()
            if kind == "partition":
                groups = self.groups(item["groups"], (*here, "groups"), known)
            action = Action(
                at=at,
                kind=kind,
                peer=peer,
                target=target,
                duration=self.take(item, here, "duration", float, 0.0, _positive),
                audio=self.take(item, here, "audio", str, "synthetic", _nonempty),
                role=self.take(item, here, "role", str, "listener", _choice(ROLES[1:])),
                groups=groups,
                changes=self.link_changes(item, here, set()) if kind == "set_network" else {},
                depth=self.maybe(item, here, "depth", int, _between(1, 64)),
                line=locate(self.text, here),
            )
            if action.depth is not None and peer != BUSIEST_RELAY:
                raise self.fail((*here, "depth"), f"depth goes with peer = {BUSIEST_RELAY!r}")
            if kind == "join" and "via" in item:
                self.check_peer(self.take(item, here, "via", str, ""), (*here, "via"), known, kind)
            if kind == "set_network" and not action.changes:
                raise self.fail(here, "set_network needs at least one link setting, e.g. loss")
            actions.append(action)
        joins = [a.peer for a in actions if a.kind == "join"]
        for name in joins:
            if joins.count(name) > 1:
                index = [i for i, a in enumerate(actions) if a.kind == "join" and a.peer == name][1]
                raise self.fail(("timeline", index, "peer"), f"{name} joins twice")
        return tuple(actions)

    def check_peer(
        self, name: str | None, where: tuple[str | int, ...], known: set[str], kind: str
    ) -> None:
        if name is None:
            return
        special = {BUSIEST_RELAY} if kind == "crash" else set()
        if name not in known and name not in special:
            raise self.fail(where, f"no peer named {name!r}")

    def groups(
        self, value: Any, where: tuple[str | int, ...], known: set[str]
    ) -> tuple[tuple[str, ...], ...]:
        if not isinstance(value, list) or len(value) < 2:
            raise self.fail(where, "must be a list of at least two lists of peer names")
        groups: list[tuple[str, ...]] = []
        used: set[str] = set()
        rest = False
        for i, group in enumerate(value):
            if not isinstance(group, list) or not all(isinstance(n, str) for n in group):
                raise self.fail((*where, i), "must be a list of peer names")
            names: list[str] = []
            for entry in group:
                if entry == REST:
                    if rest:
                        raise self.fail((*where, i), "'rest' may appear once")
                    rest = True
                    names.append(REST)
                    continue
                for name in _expand(entry):
                    if name not in known:
                        raise self.fail((*where, i), f"no peer named {name!r}")
                    if name in used:
                        raise self.fail((*where, i), f"{name} is in two groups")
                    used.add(name)
                    names.append(name)
            groups.append(tuple(names))
        return tuple(groups)

    def expectations(self, value: Any, known: set[str], duration: float) -> tuple[Expectation, ...]:
        if not isinstance(value, list):
            raise self.fail(("expect",), "must be an array of tables ([[expect]])")
        out = []
        for i, entry in enumerate(value):
            here: tuple[str | int, ...] = ("expect", i)
            item = self.table(entry, here)
            if "check" not in item:
                raise self.fail(here, f"needs a check: one of {', '.join(sorted(CHECKS))}")
            check = self.take(item, here, "check", str, "", _choice(tuple(sorted(CHECKS))))
            required, optional = CHECKS[check]
            self.only(item, here, required | optional | {"check"})
            for key in sorted(required):
                if key not in item:
                    raise self.fail(here, f"{check} needs {key!r}")
            speaker = self.maybe(item, here, "speaker", str)
            peer = self.maybe(item, here, "peer", str)
            self.check_peer(speaker, (*here, "speaker"), known, check)
            self.check_peer(peer, (*here, "peer"), known, check)
            listeners = self.names(item, here, "listeners")
            for name in listeners:
                if name not in known:
                    raise self.fail((*here, "listeners"), f"no peer named {name!r}")
            start = self.maybe(item, here, "from", float, _not_negative)
            end = self.maybe(item, here, "until", float, _not_negative)
            if start is not None and end is not None and end <= start:
                raise self.fail((*here, "until"), "must be after 'from'")
            if end is not None and end > duration:
                raise self.fail((*here, "until"), f"is after the end ({duration:g} s)")
            out.append(
                Expectation(
                    check=check,
                    min=self.maybe(item, here, "min", float, _probability),
                    max_ms=self.maybe(item, here, "max_ms", float, _positive),
                    percentile=self.take(
                        item, here, "percentile", float, 95.0, _between_f(1.0, 100.0)
                    ),
                    speaker=speaker,
                    peer=peer,
                    listeners=listeners,
                    start=start,
                    end=end,
                    role=self.maybe(item, here, "role", str, _choice(ROLES)),
                    count=self.maybe(item, here, "count", int, _between(0, 100)),
                    line=locate(self.text, here),
                )
            )
        return tuple(out)


def _expand(entry: str) -> list[str]:
    """``"l001..l030"`` names a run of anonymous listeners; anything else is one name."""
    found = re.fullmatch(r"([A-Za-z_]*)(\d+)\.\.([A-Za-z_]*)(\d+)", entry)
    if not found or found.group(1) != found.group(3):
        return [entry]
    prefix, first, last = found.group(1), found.group(2), found.group(4)
    width = len(first)
    return [f"{prefix}{n:0{width}}" for n in range(int(first), int(last) + 1)]


# --- value checks -----------------------------------------------------------------------


def _type_name(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


def _kind_name(kind: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        kind, kind.__name__
    )


def _nonempty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _peer_name(value: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", value):
        return "peer names are 1-32 letters, digits, '_', '.' or '-'"
    if value in (BUSIEST_RELAY, REST) or ".." in value:
        return f"{value!r} is reserved"
    return None


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than zero"


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else "must not be negative"


def _probability(value: float) -> str | None:
    return None if 0.0 <= value <= 1.0 else "must be between 0 and 1"


def _between(low: int, high: int) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}"

    return check


def _between_f(low: float, high: float) -> Callable[[float], str | None]:
    def check(value: float) -> str | None:
        return None if low <= value <= high else f"must be between {low:g} and {high:g}"

    return check


def _choice(options: tuple[Any, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        shown = ", ".join(str(o) for o in options)
        return None if value in options else f"{value!r} is not one of: {shown}"

    return check
