"""What a person in a room sees at a glance: the status line, the member table, the relay tree.

Display names and room names come from other peers, so every one of them is
passed through :func:`clean` before it reaches a terminal: a name must not be
able to break a line, move the cursor or reverse the text around it.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import math
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping

import attrs

from ..core.identity import PublicKey
from ..core.roles import Role
from ..core.room_state import Member, RoomState

STATUS_WIDTH = 100
"""Columns of the status line; narrower than most terminals, so it never wraps."""
ROOM_NAME_COLUMNS = 30
LIST_NAME_COLUMNS = 16
WHO_NAME_COLUMNS = 24
LISTED_HANDS = 8
"""Raised hands named in a :class:`StatusView`; the rest are only counted."""
WHO_LIMIT = 100
SHORT_TAG_LENGTH = 4
"""Fingerprint characters in an ``@`` tag, as in :attr:`PublicKey.short`."""
UNNAMED = "(unnamed)"

GOOD_RTT_MS = 150.0
GOOD_LOSS = 0.01
FAIR_RTT_MS = 400.0
FAIR_LOSS = 0.05

_KEPT_FORMATS = frozenset("\u200c\u200d")
"""Zero-width (non-)joiners, which emoji and some scripts need.  Every other format
character goes: bidi controls can make a name display as somebody else's, and
invisible ones make two different names look alike."""


# --- text for a terminal ----------------------------------------------------------


def clean(text: str) -> str:
    """``text`` as one printable line: controls and line breaks become spaces, format
    characters (bidi controls, invisible ones) go, unassigned and private characters
    become ``?``, and runs of whitespace shrink to one space.
    """
    if not text.isprintable():
        text = "".join(_printable(char) for char in text)
    return " ".join(text.split())


def _printable(char: str) -> str:
    category = unicodedata.category(char)
    if category == "Cf":
        return char if char in _KEPT_FORMATS else ""
    if category in ("Cs", "Co", "Cn"):
        return "?"
    return " " if category in ("Cc", "Zl", "Zp") else char


def clean_name(name: str) -> str:
    """A display name made safe by :func:`clean`; a blank one shows as ``(unnamed)``."""
    return clean(name) or UNNAMED


def _char_width(char: str) -> int:
    if unicodedata.combining(char) or char in _KEPT_FORMATS:
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def text_width(text: str) -> int:
    """Terminal columns ``text`` takes: wide East Asian characters count twice."""
    if text.isascii():
        return len(text)
    return sum(_char_width(char) for char in text)


def fit(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns, ending in ``…`` when something was cut."""
    if text_width(text) <= width:
        return text
    if width <= 0:
        return ""
    used, kept = 0, []
    for char in text:
        columns = _char_width(char)
        if used + columns > width - 1:
            break
        kept.append(char)
        used += columns
    return "".join(kept).rstrip() + "…"


def pad(text: str, width: int) -> str:
    """``text`` fitted to ``width`` columns and padded with spaces to exactly that width."""
    text = fit(text, width)
    return text + " " * (width - text_width(text))


# --- fingerprints -----------------------------------------------------------------


@functools.lru_cache(maxsize=1 << 17)
def compact_fingerprint(key: PublicKey) -> str:
    """The fingerprint without its dashes, the form ``@`` selectors and tags use.

    Cached because resolving a selector or tagging a table hashes every member's key.
    """
    return key.fingerprint.replace("-", "")


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def fingerprint_tags(
    keys: Iterable[PublicKey], population: Iterable[PublicKey]
) -> dict[PublicKey, str]:
    """An ``@`` tag per key: the shortest fingerprint prefix (at least four characters)
    that no other key of ``population`` shares, so typing the tag picks exactly that key.

    Four characters usually suffice, but in a room of thousands two keys share them.
    """
    ordered = sorted({compact_fingerprint(key) for key in population})
    tags = {}
    for key in keys:
        fingerprint = compact_fingerprint(key)
        at = bisect.bisect_left(ordered, fingerprint)
        shared = max(
            (
                _common_prefix(fingerprint, ordered[i])
                for i in (at - 1, at, at + 1)
                if 0 <= i < len(ordered) and ordered[i] != fingerprint
            ),
            default=0,
        )
        tags[key] = "@" + fingerprint[: max(SHORT_TAG_LENGTH, shared + 1)]
    return tags


def member_label(member: Member) -> str:
    """A name plus its short tag, for lines where two people may share a name."""
    return f"{clean_name(member.name)} (@{member.key.short})"


# --- link quality -----------------------------------------------------------------


def _optional_rtt(_instance: object, _attribute: object, value: float | None) -> None:
    if value is not None and (not math.isfinite(value) or value < 0):
        raise ValueError(f"rtt_ms must be a finite number >= 0, got {value}")


def _fraction(_instance: object, _attribute: object, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"loss_fraction must lie in [0, 1], got {value}")


@attrs.frozen
class LinkQuality:
    """Round-trip time and frame loss on this peer's media link (to its relay parent).

    The label follows what a conversation tolerates.  ``good``: RTT ≤ 150 ms and
    loss ≤ 1 % (Opus FEC and concealment hide that much).  ``fair``: RTT ≤ 400 ms
    (ITU-T G.114's limit of acceptable one-way delay, twice) and loss ≤ 5 %.
    ``poor``: anything worse.  ``none``: no round trip measured yet.
    """

    rtt_ms: float | None = attrs.field(validator=_optional_rtt)
    loss_fraction: float = attrs.field(default=0.0, validator=_fraction)

    @property
    def label(self) -> str:
        rtt = self.rtt_ms
        if rtt is None:
            return "none"
        if rtt <= GOOD_RTT_MS and self.loss_fraction <= GOOD_LOSS:
            return "good"
        if rtt <= FAIR_RTT_MS and self.loss_fraction <= FAIR_LOSS:
            return "fair"
        return "poor"

    def __str__(self) -> str:
        if self.rtt_ms is None:
            return "none"
        return f"{self.label} {self.rtt_ms:.0f} ms {self.loss_fraction * 100:.1f}% loss"


# --- the status line ------------------------------------------------------------------


@attrs.frozen
class StatusView:
    """Everything the status line shows, already reduced to names and counts.

    Built by :func:`status_view`; kept apart from rendering so a driver can
    compare two views and redraw only when something changed.
    """

    role: Role | None
    """Your role; None while you are not a member."""
    room_name: str
    here: int
    flags: tuple[str, ...] = ()
    """Your own situation: ``muted``, ``mic off``, ``invited: /accept``, ``hand #2``."""
    speaking: tuple[str, ...] = ()
    hands: tuple[str, ...] = ()
    """The first raised hands, oldest first (at most :data:`LISTED_HANDS`)."""
    hand_count: int = 0
    link: LinkQuality | None = None


def _own_flags(state: RoomState, member: Member) -> tuple[str, ...]:
    flags = []
    if member.muted:
        flags.append("muted")
    if member.self_muted:
        flags.append("mic off")
    if member.stage_invited:
        flags.append("invited: /accept")
    if member.hand_raised:
        ahead = sum(1 for m in state.members.values() if 0 < m.hand_seq < member.hand_seq)
        flags.append(f"hand #{ahead + 1}")
    return tuple(flags)


def _name_or_you(member: Member, me: PublicKey) -> str:
    return "you" if member.key == me else clean_name(member.name)


def status_view(
    state: RoomState | None,
    me: PublicKey,
    speaking: Collection[PublicKey],
    link: LinkQuality | None,
) -> StatusView:
    """The status of ``me`` in ``state``; ``speaking`` are the keys heard right now."""
    if state is None:
        return StatusView(role=None, room_name="not in a room", here=0, link=link)
    member = state.members.get(me)
    talkers = sorted(
        (state.members[key] for key in speaking if key in state.members),
        key=lambda m: m.joined_seq,
    )
    raised = [m for m in state.members.values() if m.hand_raised]
    first = heapq.nsmallest(LISTED_HANDS, raised, key=lambda m: m.hand_seq)
    return StatusView(
        role=member.role if member is not None else None,
        room_name=state.name,
        here=len(state.members),
        flags=_own_flags(state, member) if member is not None else (),
        speaking=tuple(_name_or_you(m, me) for m in talkers),
        hands=tuple(_name_or_you(m, me) for m in first),
        hand_count=len(raised),
        link=link,
    )


def _listed(names: tuple[str, ...], shown: int, total: int) -> str:
    listed = ", ".join(fit(clean_name(name), LIST_NAME_COLUMNS) for name in names[:shown])
    rest = total - min(shown, len(names))
    return f"{listed} +{rest}" if rest and listed else listed


def _segments(view: StatusView, shown: int) -> list[str]:
    role = view.role.label if view.role is not None else "not a member"
    tag = "[" + ", ".join((role, *map(clean, view.flags))) + "]"
    room = fit(clean_name(view.room_name), ROOM_NAME_COLUMNS)
    parts = [f"{tag} {room}", f"{view.here} here"]
    if view.speaking:
        if shown:
            parts.append("speaking: " + _listed(view.speaking, shown, len(view.speaking)))
        else:
            parts.append(f"{len(view.speaking)} speaking")
    if view.hand_count:
        if shown and view.hands:
            listed = _listed(view.hands, shown, view.hand_count)
            parts.append(f"hands: {listed} ({view.hand_count})")
        else:
            parts.append(f"hands: {view.hand_count}")
    if view.link is not None:
        parts.append(f"link: {view.link}")
    return parts


def render_status(view: StatusView, width: int = STATUS_WIDTH) -> str:
    """One line of at most ``width`` columns.

    When it does not fit, the lists of speakers and hands name fewer people
    (the rest become counts); then whole segments go from the end (link,
    hands, speakers), and only then is the line cut.
    """
    longest = max(len(view.speaking), len(view.hands))
    for shown in range(min(longest, width // 2), -1, -1):
        line = " · ".join(_segments(view, shown))
        if text_width(line) <= width:
            return line
    parts = _segments(view, 0)
    while len(parts) > 1:
        parts.pop()
        line = " · ".join([*parts, "…"])
        if text_width(line) <= width:
            return line
    return fit(parts[0], width)


# --- the member table -------------------------------------------------------------


def _hand_column(member: Member, place: Mapping[PublicKey, int]) -> str:
    if member.stage_invited:
        return "invited"
    position = place.get(member.key)
    return f"#{position}" if position is not None else ""


def _mic_column(member: Member, speaking: Collection[PublicKey]) -> str:
    if member.key in speaking:
        return "speaking"
    if member.muted:
        return "muted"
    if member.self_muted:
        return "mic off"
    return "on" if member.role.holds_floor else ""


def _table_order(member: Member) -> tuple[int, int]:
    return (-int(member.role), member.joined_seq)


def render_who(
    state: RoomState,
    me: PublicKey,
    speaking: Collection[PublicKey],
    *,
    limit: int | None = WHO_LIMIT,
) -> str:
    """A table of members: host and moderators first, then speakers, then listeners.

    The ID column holds a tag that ``/kick @TAG`` and the like accept, long
    enough to be unique in this room.  At most ``limit`` rows are shown.
    """
    members = state.members.values()
    if limit is None or limit >= len(members):
        rows = sorted(members, key=_table_order)
    else:
        rows = heapq.nsmallest(limit, members, key=_table_order)
    place = {m.key: i for i, m in enumerate(state.hand_queue(), start=1)}
    tags = fingerprint_tags((m.key for m in rows), state.members)
    lines = [f"{pad('NAME', WHO_NAME_COLUMNS)}  ROLE       HAND     MIC       ID"]
    for m in rows:
        cells = (
            pad(clean_name(m.name), WHO_NAME_COLUMNS),
            pad(m.role.label, 9),
            pad(_hand_column(m, place), 7),
            pad(_mic_column(m, speaking), 8),
            tags[m.key] + ("  (you)" if m.key == me else ""),
        )
        lines.append("  ".join(cells).rstrip())
    hidden = len(members) - len(rows)
    if hidden:
        lines.append(f"… and {hidden} more")
    return "\n".join(lines)


# --- the relay tree ----------------------------------------------------------------


def render_tree(
    parents: Mapping[PublicKey, PublicKey | None],
    names: Callable[[PublicKey], str],
    root: PublicKey | None = None,
    *,
    limit: int | None = None,
) -> str:
    """An ASCII drawing of a relay tree from its child → parent links.

    ``parents`` may include the root mapped to None, or leave it out as
    :attr:`Tree.parents <mitalk_p2p.core.tree.Tree.parents>` does.  ``root``
    (the host) is drawn first; any other member without a parent starts a tree
    of its own, and members caught in a cycle are listed as not connected.
    Children are sorted by name.  At most ``limit`` lines are drawn.
    """
    nodes = set(parents) | {p for p in parents.values() if p is not None}
    if root is not None:
        nodes.add(root)
    if not nodes:
        return "(no relay tree yet)"

    def order(key: PublicKey) -> tuple[str, bytes]:
        return (clean_name(names(key)).casefold(), key.raw)

    children: dict[PublicKey, list[PublicKey]] = {}
    for child, parent in parents.items():
        if parent is not None and child != root:
            children.setdefault(parent, []).append(child)
    tops = sorted((n for n in nodes if n == root or parents.get(n) is None), key=order)
    if root is not None:
        tops.remove(root)
        tops.insert(0, root)

    lines: list[str] = []
    seen: set[PublicKey] = set()
    stack: list[tuple[PublicKey, str, str]] = [(top, "", "") for top in reversed(tops)]
    while stack:
        node, branch, indent = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        lines.append(branch + clean_name(names(node)))
        below = sorted(children.get(node, ()), key=order)
        for i, child in reversed(list(enumerate(below))):
            last = i == len(below) - 1
            fork, rest = ("└─ ", "   ") if last else ("├─ ", "│  ")
            stack.append((child, indent + fork, indent + rest))
    stranded = sorted(nodes - seen, key=order)
    if stranded:
        lines.append("not connected: " + ", ".join(clean_name(names(k)) for k in stranded))
    if limit is not None and len(lines) > limit:
        hidden = len(lines) - limit
        lines = [*lines[:limit], f"… {hidden} more lines"]
    return "\n".join(lines)
