"""The room's media fanout tree: a pure planner that the host runs.

Each room has one tree.  A frame travels on every tree edge except the one it
arrived on, so a speaker can sit anywhere in the tree.  The host plans the tree
from the member list, each member's declared relay capacity and its measured
round-trip time to the host.  The host then sends every member its
:class:`Position` and replans when members join, leave or crash.

Limits
    A member relays to at most ``min(capacity, k)`` children, where ``k`` is
    :attr:`TreeLimits.fanout`.  A member with capacity 0 is leaf-only and never
    gets children.  The root (the host) always relays.  Its limit is its declared
    capacity if it is among the candidates, but at least 1, because the root is
    the one member that can't hang below anyone.  If it isn't among the
    candidates, its limit is ``k``.  No member is deeper than
    ``depth_bound(N, k) = ceil(log_k N) + 1`` (the root has depth 0, and N counts
    the root).

Feasibility
    Whenever the declared capacities allow a tree within these limits
    (:func:`feasible`), the planner returns one.  Otherwise the planner still
    connects everyone, and :attr:`Tree.overloaded` is true.  In that case depth
    gives way before capacity.  If capacity is short, the extra children go to
    relays that are still below ``k`` (shallowest first), and only then past
    ``k`` to the least-loaded relay.  Leaf-only members never get children.

Placement
    A fresh plan sorts members by child limit (descending), then RTT, then key
    bytes, and fills the tree breadth-first.  Relays end up in the upper layers
    and leaf-only members at the bottom.  This order also makes the greatest
    possible number of members fit within each depth, so a fresh plan meets the
    limits exactly when they are feasible.

Stability
    Given the previous tree, the planner keeps every parent edge that is still
    valid and re-attaches only the fragments that lost their place: new members,
    orphans, and subtrees cut for capacity or depth.  An orphan goes to its old
    backup if it can, or else to a slot at its old depth, so its subtree keeps
    its depths.  A newcomer takes the shallowest free slot, at the relay with
    the most room left.  The repaired tree is used only if it is no worse than
    a fresh plan on every limit (fanout, capacity, depth).  Otherwise the room
    is rebuilt from scratch.  An overloaded room whose edges are all still
    valid stays as it is if a fresh plan can't do better, so replanning
    unchanged input never changes anything.

Backups
    Every member except the root gets a backup parent.  A backup is never the
    member itself, its parent, a member of its own subtree, or a leaf-only
    member.  Among the valid backups the planner prefers, in this order:

    - one whose path to the root avoids the member's parent, so a relay crash
      is repaired by one switch per orphan;
    - one with room for this member and for every sibling that uses it as a
      backup too;
    - one that is the backup of no more than ``backup_share * limit`` members;
    - one where the member's subtree still fits the depth bound after a switch.

    Ties go to the relay at the parent's own depth, so after a switch the
    subtree keeps its depths.  A previous backup stays while it is valid,
    independent and has room, even if a fresh choice would be less loaded.  A
    join or leave therefore moves at most about ``backup_share * k`` backups.

    A member has no backup (None) only when no valid backup exists.  This
    happens when every relay other than the member's parent is in the member's
    own subtree: for example, in a room of two, or for the root's only child.
    The root is always a valid backup for members deeper down.  It is always a
    relay, so the first preference can always be met.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from types import MappingProxyType

import attrs

from .errors import LocalProtocolError, RemoteProtocolError
from .identity import PublicKey

__all__ = [
    "DEFAULT_RTT_MS",
    "Candidate",
    "Position",
    "SwitchRefused",
    "Tree",
    "TreeLimits",
    "adopt_switch",
    "changed_positions",
    "depth_bound",
    "feasible",
    "plan_tree",
]

DEFAULT_RTT_MS = 250.0
"""The RTT to assume for a member that hasn't been measured yet."""

_SCAN_LIMIT = 16
"""The most rejected entries one bucket scan looks past before moving on."""

_SETTLE_ROUNDS = 4
"""The most extra backup passes one plan makes while the result still moves."""


def depth_bound(n: int, k: int) -> int:
    """``ceil(log_k n) + 1``: the deepest a member may sit in a tree of ``n``.

    The bound is computed with integers, so there is no floating-point rounding.
    A complete k-ary tree reaches depth ``ceil(log_k n)``.  The extra level
    leaves room for uneven capacities.
    """
    if n < 1:
        raise LocalProtocolError(f"a tree has at least one member, got {n}")
    if k < 2:
        raise LocalProtocolError(f"fanout must be at least 2, got {k}")
    levels, reach = 0, 1
    while reach < n:
        reach *= k
        levels += 1
    return levels + 1


def _check_fanout(_instance: object, _attribute: object, value: int) -> None:
    if value < 2:
        raise LocalProtocolError(f"fanout must be at least 2, got {value}")


def _check_share(_instance: object, _attribute: object, value: int) -> None:
    if value < 1:
        raise LocalProtocolError(f"backup_share must be at least 1, got {value}")


@attrs.frozen
class TreeLimits:
    """Room-wide limits the planner works to."""

    fanout: int = attrs.field(default=6, validator=_check_fanout)
    """k: the most children any member relays to, whatever capacity it declares.

    This also sets the depth bound, ``depth_bound(N, k)``.
    """
    backup_share: int = attrs.field(default=2, kw_only=True, validator=_check_share)
    """The soft cap on backup load: at most this many times a relay's child
    limit may name it as their backup.  The cap spreads backup load, so one
    departure changes few backups and one relay doesn't catch every orphan."""

    def depth_bound(self, n: int) -> int:
        """The depth bound for a tree of ``n`` members."""
        return depth_bound(n, self.fanout)


def _check_capacity(_instance: object, _attribute: object, value: int) -> None:
    if value < 0:
        raise LocalProtocolError(f"relay capacity can't be negative, got {value}")


def _check_rtt(_instance: object, _attribute: object, value: float) -> None:
    # NaN would make the sort order depend on input order.
    if not math.isfinite(value) or value < 0:
        raise LocalProtocolError(f"RTT must be a finite, non-negative number, got {value}")


@attrs.frozen
class Candidate:
    """One member as the planner sees it."""

    key: PublicKey
    capacity: int = attrs.field(validator=_check_capacity)
    """How many children the member is willing to relay to; 0 means leaf-only."""
    rtt_ms: float = attrs.field(default=DEFAULT_RTT_MS, validator=_check_rtt)
    """Measured round-trip time to the host, in milliseconds."""


@attrs.frozen
class Position:
    """What one member needs to know about its place in the tree."""

    parent: PublicKey | None
    """Where frames come from and go to upstream; None for the root."""
    backup: PublicKey | None
    """Where to switch, unprompted, if the parent goes silent; None if no valid one exists."""
    children: tuple[PublicKey, ...] = attrs.field(kw_only=True)
    """Members to relay to, in key-byte order."""
    depth: int = attrs.field(kw_only=True)
    """Hops from the root; the root has depth 0."""


class SwitchRefused(RemoteProtocolError):
    """A member reported a parent switch that the tree can't accept.

    Switching to itself, to a member of its own subtree, to a leaf-only member
    or to a non-member is refused, and so is a switch by the root.  The host
    drops the report and sends the member its current position.
    """


def _raw(key: PublicKey) -> bytes:
    return key.raw


def _freeze_links(links: Mapping[PublicKey, PublicKey]) -> Mapping[PublicKey, PublicKey]:
    return MappingProxyType(dict(sorted(links.items(), key=lambda item: item[0].raw)))


def _freeze_capacities(capacities: Mapping[PublicKey, int]) -> Mapping[PublicKey, int]:
    return MappingProxyType(dict(sorted(capacities.items(), key=lambda item: item[0].raw)))


class _Shape:
    """A tree over member indices, with the arrays every query needs.

    Indices follow key-byte order, so ties broken by index are ties broken by
    key bytes.  ``tin``/``tout`` come from a pre-order walk: ``b`` is in the
    subtree of ``v`` exactly when ``tin[v] <= tin[b] < tout[v]``.
    """

    __slots__ = ("children", "depth", "height", "order", "parent", "root", "tin", "tout")

    def __init__(self, parent: list[int], root: int) -> None:
        n = len(parent)
        children: list[list[int]] = [[] for _ in range(n)]
        for v, p in enumerate(parent):
            if v != root:
                children[p].append(v)
        depth = [0] * n
        tin = [-1] * n
        order: list[int] = []
        stack = [root]
        while stack:
            v = stack.pop()
            tin[v] = len(order)
            order.append(v)
            below = depth[v] + 1
            for c in reversed(children[v]):
                depth[c] = below
                stack.append(c)
        if len(order) != n:
            raise LocalProtocolError("the parent links contain a loop or leave members detached")
        size = [1] * n
        height = [0] * n
        for v in reversed(order):
            if v != root:
                p = parent[v]
                size[p] += size[v]
                if height[v] + 1 > height[p]:
                    height[p] = height[v] + 1
        self.root = root
        self.parent = parent
        self.children = children
        self.depth = depth
        self.tin = tin
        self.tout = [tin[v] + size[v] for v in range(n)]
        self.height = height
        self.order = order

    def contains(self, top: int, node: int) -> bool:
        """True if ``node`` is in the subtree of ``top`` (``top`` itself included)."""
        return self.tin[top] <= self.tin[node] < self.tout[top]


def _excess(shape: _Shape, lim: Sequence[int], k: int, bound: int) -> tuple[int, int, int]:
    """How far a tree overshoots: children past k, children past limits, levels past bound."""
    fanout = capacity = deep = 0
    for v, kids in enumerate(shape.children):
        count = len(kids)
        fanout += max(0, count - k)
        capacity += max(0, count - lim[v])
        deep += max(0, shape.depth[v] - bound)
    return fanout, capacity, deep


@attrs.frozen(repr=False, unsafe_hash=False)
class Tree:
    """A planned tree: who relays to whom, and everyone's backup parent.

    Trees are immutable and compare by value but aren't hashable.  The
    constructor checks the structure: the parent links reach the root from
    every member, and every backup is valid.  A tree that breaks its limits can
    still be built.  :attr:`overloaded` says whether it does.
    """

    root: PublicKey
    parents: Mapping[PublicKey, PublicKey] = attrs.field(converter=_freeze_links)
    """child -> parent for every member except the root, in key-byte order."""
    backups: Mapping[PublicKey, PublicKey] = attrs.field(kw_only=True, converter=_freeze_links)
    """child -> backup parent, for the members that have one."""
    capacities: Mapping[PublicKey, int] = attrs.field(kw_only=True, converter=_freeze_capacities)
    """Every member's declared relay capacity; the root's as adjusted by the planner."""
    limits: TreeLimits = attrs.field(kw_only=True, factory=TreeLimits)
    """The limits the tree was planned for."""
    version: int = attrs.field(kw_only=True, default=0)
    """Goes up by one with every plan or adopted switch."""

    _keys: tuple[PublicKey, ...] = attrs.field(init=False, eq=False)
    _index: dict[PublicKey, int] = attrs.field(init=False, eq=False)
    _shape: _Shape = attrs.field(init=False, eq=False)
    _overloaded: bool = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        keys = tuple(sorted(self.capacities, key=_raw))
        index = {key: i for i, key in enumerate(keys)}
        root = index.get(self.root)
        if root is None:
            raise LocalProtocolError("the root must have a capacity entry")
        if any(capacity < 0 for capacity in self.capacities.values()):
            raise LocalProtocolError("capacities can't be negative")
        if len(self.parents) != len(keys) - 1:
            raise LocalProtocolError("every member except the root needs exactly one parent")
        parent = [-1] * len(keys)
        for child, up in self.parents.items():
            c, p = index.get(child), index.get(up)
            if c is None or p is None or c == root:
                raise LocalProtocolError("parent links must join non-root members to members")
            parent[c] = p
        shape = _Shape(parent, root)
        for child, backup in self.backups.items():
            c, b = index.get(child), index.get(backup)
            if c is None or b is None or c == root:
                raise LocalProtocolError("backups must join non-root members to members")
            if b == parent[c] or shape.contains(c, b) or self.capacities[backup] == 0:
                raise LocalProtocolError(
                    "a backup must be a relay outside the member's subtree and not its parent"
                )
        object.__setattr__(self, "_keys", keys)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_shape", shape)
        object.__setattr__(self, "_overloaded", not self.within_limits(self.limits))

    def _slot(self, key: PublicKey) -> int:
        try:
            return self._index[key]
        except KeyError:
            raise LocalProtocolError(f"{key!r} is not in the tree") from None

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return (
            f"Tree(root={self.root!r}, members={len(self)}, version={self.version}, "
            f"max_depth={self.max_depth}, overloaded={self._overloaded})"
        )

    @property
    def members(self) -> tuple[PublicKey, ...]:
        """Every member, the root included, in key-byte order."""
        return self._keys

    @property
    def max_depth(self) -> int:
        """The depth of the deepest member (0 for a root alone)."""
        return max(self._shape.depth)

    @property
    def overloaded(self) -> bool:
        """True if the tree breaks its own :attr:`limits` (see :meth:`within_limits`).

        For a planned tree this happens only when the capacities make the limits
        infeasible, or after :func:`adopt_switch` accepted a switch that overfills
        a relay or deepens a subtree and no replan has happened yet.
        """
        return self._overloaded

    def position(self, key: PublicKey) -> Position:
        """What ``key`` needs to know: parent, backup, children and depth."""
        i = self._slot(key)
        shape = self._shape
        parent = None if i == shape.root else self._keys[shape.parent[i]]
        return Position(
            parent,
            self.backups.get(key),
            children=tuple(self._keys[c] for c in shape.children[i]),
            depth=shape.depth[i],
        )

    def parent(self, key: PublicKey) -> PublicKey | None:
        """The parent of ``key``; None for the root."""
        self._slot(key)
        return self.parents.get(key)

    def children(self, key: PublicKey) -> tuple[PublicKey, ...]:
        """The members ``key`` relays to, in key-byte order."""
        return tuple(self._keys[c] for c in self._shape.children[self._slot(key)])

    def depth(self, key: PublicKey) -> int:
        """Hops from the root to ``key``."""
        return self._shape.depth[self._slot(key)]

    def subtree(self, key: PublicKey) -> frozenset[PublicKey]:
        """``key`` and every member below it."""
        i = self._slot(key)
        shape = self._shape
        return frozenset(self._keys[v] for v in shape.order[shape.tin[i] : shape.tout[i]])

    def path_to_root(self, key: PublicKey) -> tuple[PublicKey, ...]:
        """``key``, its parent, and so on up to the root."""
        i = self._slot(key)
        shape = self._shape
        path = [i]
        while i != shape.root:
            i = shape.parent[i]
            path.append(i)
        return tuple(self._keys[v] for v in path)

    def limit(self, key: PublicKey, limits: TreeLimits | None = None) -> int:
        """How many children ``key`` may have: ``min(capacity, k)``."""
        self._slot(key)
        return min(self.capacities[key], (limits or self.limits).fanout)

    def within_limits(self, limits: TreeLimits) -> bool:
        """True if every member has at most ``min(capacity, k)`` children and
        no member is deeper than ``depth_bound(N, k)``."""
        k = limits.fanout
        bound = depth_bound(len(self._keys), k)
        shape = self._shape
        capacities = self.capacities
        for i, key in enumerate(self._keys):
            if len(shape.children[i]) > min(capacities[key], k) or shape.depth[i] > bound:
                return False
        return True


# --------------------------------------------------------------------------
# Planning, in index space.


@attrs.define
class _Members:
    """The candidates as parallel lists over indices in key-byte order."""

    keys: list[PublicKey]
    index: dict[PublicKey, int]
    root: int
    capacity: list[int]
    lim: list[int]
    rtt: list[float]


def _members(root: PublicKey, candidates: Iterable[Candidate], limits: TreeLimits) -> _Members:
    k = limits.fanout
    by_key: dict[PublicKey, Candidate] = {}
    for candidate in candidates:
        if candidate.key in by_key:
            raise LocalProtocolError(f"{candidate.key!r} is listed twice")
        by_key[candidate.key] = candidate
    own = by_key.pop(root, None)
    root_capacity = k if own is None else max(1, own.capacity)
    keys = sorted([root, *by_key], key=_raw)
    index = {key: i for i, key in enumerate(keys)}
    capacity = [root_capacity if key == root else by_key[key].capacity for key in keys]
    rtt = [0.0 if key == root else by_key[key].rtt_ms for key in keys]
    lim = [min(c, k) for c in capacity]
    return _Members(keys, index, index[root], capacity, lim, rtt)


def _feasible(root_limit: int, limits: Sequence[int], bound: int) -> bool:
    """Greedy layering with the largest limits first; see the module docstring."""
    rest = sorted(limits, reverse=True)
    slots, placed, depth = root_limit, 0, 0
    while placed < len(rest):
        depth += 1
        if depth > bound or slots == 0:
            return False
        layer = rest[placed : placed + slots]
        placed += len(layer)
        slots = sum(layer)
    return True


def feasible(root: PublicKey, candidates: Sequence[Candidate], limits: TreeLimits) -> bool:
    """True if some tree over these members meets every capacity, ``k`` and the depth bound."""
    m = _members(root, candidates, limits)
    others = [m.lim[v] for v in range(len(m.keys)) if v != m.root]
    return _feasible(m.lim[m.root], others, depth_bound(len(m.keys), limits.fanout))


class _Overflow:
    """Chooses where a member goes when every relay is full.

    The first choice is the shallowest relay still below ``k``.  After that, it
    is the relay with the fewest children.  Entries are refreshed lazily from
    the live child counts.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.under: list[tuple[int, int]] = []
        self.over: list[tuple[int, int, int]] = []

    def add(self, v: int, depth: int) -> None:
        heapq.heappush(self.under, (depth, v))

    def pick(self, nchild: list[int]) -> int:
        """A parent for one more child; the caller then adds the child."""
        under, over = self.under, self.over
        while under:
            depth, v = under[0]
            if nchild[v] + 1 < self.k:
                return v
            heapq.heappop(under)
            if nchild[v] < self.k:
                heapq.heappush(over, (nchild[v] + 1, depth, v))
                return v
            heapq.heappush(over, (nchild[v], depth, v))
        while True:
            count, depth, v = heapq.heappop(over)
            if count == nchild[v]:
                heapq.heappush(over, (count + 1, depth, v))
                return v
            heapq.heappush(over, (nchild[v], depth, v))


def _fresh(m: _Members, k: int) -> list[int]:
    """Breadth-first filling in (limit desc, RTT, key) order, with overflow."""
    n = len(m.keys)
    lim, root = m.lim, m.root
    parent = [-1] * n
    nchild = [0] * n
    order = sorted((v for v in range(n) if v != root), key=lambda v: (-lim[v], m.rtt[v], v))
    queue = deque([root])
    overflow = _Overflow(k)
    overflow.add(root, 0)
    depth = [0] * n
    for v in order:
        while queue and nchild[queue[0]] >= lim[queue[0]]:
            queue.popleft()
        p = queue[0] if queue else overflow.pick(nchild)
        parent[v] = p
        nchild[p] += 1
        depth[v] = depth[p] + 1
        if lim[v] > 0:
            queue.append(v)
            overflow.add(v, depth[v])
    return parent


@attrs.define
class _Previous:
    """The previous tree mapped onto the new member indices (-1 where absent)."""

    parent: list[int]
    depth: list[int]
    backup: list[int]


def _previous(m: _Members, previous: Tree) -> _Previous:
    n = len(m.keys)
    parent, depth, backup = [-1] * n, [-1] * n, [-1] * n
    shape = previous._shape
    for i, key in enumerate(m.keys):
        j = previous._index.get(key)
        if j is None:
            continue
        depth[i] = shape.depth[j]
        if j != shape.root:
            parent[i] = m.index.get(previous._keys[shape.parent[j]], -1)
        old_backup = previous.backups.get(key)
        if old_backup is not None:
            backup[i] = m.index.get(old_backup, -1)
    return _Previous(parent, depth, backup)


def _repair(m: _Members, k: int, bound: int, prev: _Previous, *, strict: bool) -> list[int]:
    """Keep the previous tree's valid edges and re-attach what lost its place.

    An edge is valid while both ends are members and the parent is a relay.
    ``strict`` also drops edges that overfill a parent or sit below the depth
    bound.  The loose variant keeps an overloaded room as it is when nothing
    better is possible.
    """
    n = len(m.keys)
    lim, rtt, root = m.lim, m.rtt, m.root
    kept = [-1] * n
    for v in range(n):
        p = prev.parent[v]
        if v != root and p >= 0 and lim[p] > 0:
            kept[v] = p

    # Sizes of the kept forest, deepest first, so an over-full parent keeps its
    # biggest subtrees and fewer members have to move.
    deepest_first = sorted((v for v in range(n) if kept[v] >= 0), key=lambda v: -prev.depth[v])
    size = [1] * n
    for v in deepest_first:
        size[kept[v]] += size[v]
    kids: list[list[int]] = [[] for _ in range(n)]
    for v in range(n):
        if kept[v] >= 0:
            kids[kept[v]].append(v)
    for p in range(n):
        if strict and len(kids[p]) > lim[p]:
            ranked = sorted(kids[p], key=lambda c: (-size[c], c))
            for c in ranked[lim[p] :]:
                kept[c] = -1
            kids[p] = sorted(ranked[: lim[p]])

    # Anchor what still hangs from the root, cutting anything below the bound.
    depth = [0] * n
    anchored = [False] * n
    anchored[root] = True
    nchild = [0] * n
    reached = [root]
    for v in reached:
        below = depth[v] + 1
        if strict and below > bound:
            for c in kids[v]:
                kept[c] = -1
            kids[v] = []
        for c in kids[v]:
            depth[c] = below
            anchored[c] = True
            reached.append(c)
        nchild[v] = len(kids[v])

    height = [0] * n
    for v in deepest_first:
        p = kept[v]
        if p >= 0 and not anchored[v] and height[v] + 1 > height[p]:
            height[p] = height[v] + 1

    # Relays with a free slot, per depth, most spare first: taking a slot from
    # a roomy relay rarely costs its backup dependents their room.
    free: dict[int, list[tuple[int, int]]] = {}
    overflow = _Overflow(k)

    def open_relay(v: int) -> None:
        if lim[v] > 0 or v == root:
            overflow.add(v, depth[v])
        if nchild[v] < lim[v]:
            heapq.heappush(free.setdefault(depth[v], []), (nchild[v] - lim[v], v))

    def top(d: int) -> int:
        heap = free.get(d)
        while heap:
            spare, v = heap[0]
            now = nchild[v] - lim[v]
            if now == spare:
                return v
            heapq.heappop(heap)
            if now < 0:
                heapq.heappush(heap, (now, v))
        return -1

    def slot_for(r: int, h: int) -> int:
        deepest = bound - 1 - h
        b = prev.backup[r]
        if b >= 0 and anchored[b] and nchild[b] < lim[b] and depth[b] <= deepest:
            return b
        old = prev.depth[r]
        if 1 <= old <= deepest + 1:
            p = top(old - 1)
            if p >= 0:
                return p
        for d in range(deepest + 1):
            p = top(d)
            if p >= 0:
                return p
        return -1

    for v in reached:
        open_relay(v)

    todo = [(-height[v], -lim[v], rtt[v], v) for v in range(n) if not anchored[v] and kept[v] < 0]
    heapq.heapify(todo)
    while todo:
        r = heapq.heappop(todo)[3]
        h = height[r]
        p = slot_for(r, h)
        if p < 0 and h > 0:
            # Too tall to fit anywhere: place its root alone, its children separately.
            for c in kids[r]:
                kept[c] = -1
                heapq.heappush(todo, (-height[c], -lim[c], rtt[c], c))
            kids[r] = []
            height[r] = 0
            heapq.heappush(todo, (0, -lim[r], rtt[r], r))
            continue
        if p < 0:
            for d in sorted(free):
                p = top(d)
                if p >= 0:
                    break
            else:
                p = overflow.pick(nchild)
        kept[r] = p
        kids[p].append(r)
        nchild[p] += 1
        depth[r] = depth[p] + 1
        stack = [r]
        while stack:
            v = stack.pop()
            anchored[v] = True
            nchild[v] = len(kids[v])
            open_relay(v)
            for c in kids[v]:
                depth[c] = depth[v] + 1
                stack.append(c)
    return kept


def _settle_backups(
    shape: _Shape,
    lim: Sequence[int],
    bound: int,
    share: int,
    previous: Sequence[int],
    excluded: Collection[int] = (),
) -> list[int]:
    """Assign backups, then repeat with the result as the previous one until nothing moves.

    One pass can depend on the order it visits siblings that compete for the
    same relay's room.  Settling makes a replan of unchanged input change
    nothing.  The loop is capped, though it settles in one or two rounds.
    """
    backup = _assign_backups(shape, lim, bound, share, previous, excluded)
    for _ in range(_SETTLE_ROUNDS):
        again = _assign_backups(shape, lim, bound, share, backup, excluded)
        if again == backup:
            break
        backup = again
    return backup


def _assign_backups(
    shape: _Shape,
    lim: Sequence[int],
    bound: int,
    share: int,
    previous: Sequence[int],
    excluded: Collection[int] = (),
) -> list[int]:
    """A backup parent for every non-root member (-1 where none is valid).

    A previous backup that is still independent and has room is kept as it
    is.  Each remaining member searches per-depth heaps ordered by backup load,
    through a short series of ever-looser passes.  It keeps its previous backup
    if that is at least as good as what the search found.
    """
    n = len(lim)
    root, parent, depth, height = shape.root, shape.parent, shape.depth, shape.height
    tin, tout = shape.tin, shape.tout
    nchild = [len(kids) for kids in shape.children]
    usable = [lim[v] > 0 for v in range(n)]
    for v in excluded:
        usable[v] = False
    load = [0] * n
    load_cap = [share * lim[v] for v in range(n)]
    group: dict[tuple[int, int], int] = {}
    backup = [-1] * n

    def valid(v: int, b: int) -> bool:
        return usable[b] and b != v and b != parent[v] and not tin[v] <= tin[b] < tout[v]

    def flaws(v: int, b: int) -> tuple[bool, bool, bool, bool]:
        p = parent[v]
        return (
            p != root and tin[p] <= tin[b] < tout[p],  # shares the parent's fate
            nchild[b] + group.get((p, b), 0) >= lim[b],  # no room for this sibling group
            load[b] >= load_cap[b],  # already the backup of many
            depth[b] + 1 + height[v] > bound,  # a switch would break the depth bound
        )

    # Heaps hold (load / load cap, relay), so load spreads in proportion to capacity.
    spare_heaps: dict[int, list[tuple[float, int]]] = {}
    all_heaps: dict[int, list[tuple[float, int]]] = {}

    def assign(v: int, b: int, *, push: bool) -> None:
        backup[v] = b
        load[b] += 1
        key = (parent[v], b)
        group[key] = group.get(key, 0) + 1
        if push:
            entry = (load[b] / load_cap[b], b)
            heapq.heappush(all_heaps[depth[b]], entry)
            if nchild[b] < lim[b]:
                heapq.heappush(spare_heaps[depth[b]], entry)

    # A previous backup that is independent and has room stays, even if it is
    # now past its load cap or too deep for a switch: replanning unchanged
    # input then changes nothing, and churn doesn't ripple through backups.
    order = sorted((v for v in range(n) if v != root), key=lambda v: (depth[v], parent[v], v))
    rest: list[int] = []
    for v in order:
        b = previous[v]
        if b >= 0 and valid(v, b) and not any(flaws(v, b)[:2]):
            assign(v, b, push=False)
        else:
            rest.append(v)
    if not rest:
        return backup

    for b in range(n):
        if usable[b]:
            entry = (load[b] / load_cap[b], b)
            all_heaps.setdefault(depth[b], []).append(entry)
            if nchild[b] < lim[b]:
                spare_heaps.setdefault(depth[b], []).append(entry)
    for heap in (*spare_heaps.values(), *all_heaps.values()):
        heapq.heapify(heap)
    for d in all_heaps:
        spare_heaps.setdefault(d, [])
    deepest = max(depth)

    def scan(heap: list[tuple[float, int]], v: int, allowed: tuple[bool, ...]) -> int:
        rejected: list[tuple[float, int]] = []
        found = -1
        while heap and len(rejected) < _SCAN_LIMIT:
            entry = heap[0]
            b = entry[1]
            if entry[0] != load[b] / load_cap[b]:
                heapq.heappop(heap)  # stale: a fresher entry for b is in the heap
                continue
            if entry[0] >= 1.0 and not allowed[2]:
                break  # the rest of the heap is past its load cap too
            if valid(v, b) and all(
                ok or not bad for ok, bad in zip(allowed, flaws(v, b), strict=True)
            ):
                found = b
                break
            rejected.append(heapq.heappop(heap))
        for entry in rejected:
            heapq.heappush(heap, entry)
        return found

    # Which flaws each pass tolerates: (fate, room, load, depth).
    strict = (False, False, False, False)
    too_deep = (False, False, False, True)
    full = (False, True, False, False)
    full_deep = (False, True, False, True)
    anything_independent = (False, True, True, True)

    for v in rest:
        dp = depth[parent[v]]
        reach = bound - 1 - height[v]
        top = min(dp, reach)
        near = [*range(top, -1, -1), *range(dp + 1, reach + 1)]
        far = list(range(max(reach + 1, 0), deepest + 1))
        passes = (
            (spare_heaps, near, strict),
            (spare_heaps, far, too_deep),
            (all_heaps, near, full),
            (all_heaps, far, full_deep),
            (all_heaps, near + far, anything_independent),
        )
        found = -1
        for heaps, depths, allowed in passes:
            for d in depths:
                bucket = heaps.get(d)
                if bucket:
                    found = scan(bucket, v, allowed)
                    if found >= 0:
                        break
            if found >= 0:
                break
        if found < 0:
            # Exhaustive: only reached when no independent backup turned up.
            best: tuple[tuple[bool, ...], int, int, int] | None = None
            for b in range(n):
                if valid(v, b):
                    rank = (flaws(v, b), load[b], abs(depth[b] - dp), b)
                    if best is None or rank < best:
                        best = rank
            found = -1 if best is None else best[3]
        old = previous[v]
        if old >= 0 and valid(v, old) and (found < 0 or _sticky(flaws(v, old), flaws(v, found))):
            found = old
        if found >= 0:
            assign(v, found, push=True)
    return backup


def _sticky(old: tuple[bool, ...], new: tuple[bool, ...]) -> bool:
    """Keep the old backup unless the new one fixes fate, room or depth (load aside)."""
    return (old[0], old[1], old[3]) <= (new[0], new[1], new[3])


def _build(
    m: _Members, shape: _Shape, backup: Sequence[int], limits: TreeLimits, version: int
) -> Tree:
    keys = m.keys
    return Tree(
        keys[m.root],
        {keys[v]: keys[p] for v, p in enumerate(shape.parent) if v != m.root},
        backups={keys[v]: keys[b] for v, b in enumerate(backup) if b >= 0},
        capacities=dict(zip(keys, m.capacity, strict=True)),
        limits=limits,
        version=version,
    )


def plan_tree(
    root: PublicKey,
    candidates: Sequence[Candidate],
    limits: TreeLimits,
    previous: Tree | None = None,
) -> Tree:
    """Plan the room's tree rooted at the host ``root``.

    ``candidates`` lists the other members.  The root may be listed too, to
    declare its capacity.  Input order doesn't matter, and duplicate keys are
    refused.  With ``previous``, edges that are still valid are kept (see the
    module docstring), and the version is ``previous.version + 1``.
    """
    m = _members(root, candidates, limits)
    k = limits.fanout
    bound = depth_bound(len(m.keys), k)
    prev_backup = [-1] * len(m.keys)
    version = 0
    if previous is None:
        shape = _Shape(_fresh(m, k), m.root)
    else:
        version = previous.version + 1
        prev = _previous(m, previous)
        prev_backup = prev.backup
        repaired = _Shape(_repair(m, k, bound, prev, strict=True), m.root)
        shape = repaired
        if any(_excess(repaired, m.lim, k, bound)):
            # Over the limits: keep a repair only if a fresh plan does no better
            # on any of them.  The loose repair, which keeps an overloaded room
            # as it is, goes first.
            shape = _Shape(_fresh(m, k), m.root)
            target = _excess(shape, m.lim, k, bound)
            loose = _Shape(_repair(m, k, bound, prev, strict=False), m.root)
            for option in (loose, repaired):
                excess = _excess(option, m.lim, k, bound)
                if all(a <= b for a, b in zip(excess, target, strict=True)):
                    shape = option
                    break
    backup = _settle_backups(shape, m.lim, bound, limits.backup_share, prev_backup)
    return _build(m, shape, backup, limits, version)


def changed_positions(old: Tree | None, new: Tree) -> frozenset[PublicKey]:
    """Members of ``new`` whose :class:`Position` differs from the one in ``old``.

    These are the members the host has to notify.  New members always count.
    Members that are no longer in the room don't.
    """
    if old is None:
        return frozenset(new.members)
    changed: list[PublicKey] = []
    old_keys, new_keys = old._keys, new._keys
    old_shape, new_shape = old._shape, new._shape
    for i, key in enumerate(new_keys):
        j = old._index.get(key)
        if (
            j is None
            or old_shape.depth[j] != new_shape.depth[i]
            or old.parents.get(key) != new.parents.get(key)
            or old.backups.get(key) != new.backups.get(key)
            or len(old_shape.children[j]) != len(new_shape.children[i])
            or any(
                old_keys[a] != new_keys[b]
                for a, b in zip(old_shape.children[j], new_shape.children[i], strict=True)
            )
        ):
            changed.append(key)
    return frozenset(changed)


def adopt_switch(
    tree: Tree,
    child: PublicKey,
    new_parent: PublicKey,
    limits: TreeLimits | None = None,
    *,
    gone: Iterable[PublicKey] = (),
) -> Tree:
    """Accept that ``child`` (with its subtree) now hangs from ``new_parent``.

    A child that loses its parent switches to its backup by itself and then
    reports the switch.  The host records it here, whether or not
    ``new_parent`` was the designated backup, as long as the new edge keeps the
    tree a tree and ``new_parent`` is a relay.  Otherwise it raises
    :class:`SwitchRefused`.  The edge is accepted even if it overfills
    ``new_parent`` or deepens the subtree, since the child is already
    connected there.  :attr:`Tree.overloaded` then says so, and the next
    :func:`plan_tree` with this tree as ``previous`` rebalances.

    ``limits`` defaults to the tree's own limits.  Backups are then recomputed
    for those limits, and still-good ones are kept.  The child's
    former parent, and any member in ``gone``, isn't chosen as anyone's backup
    until the next plan.  A report of the current parent changes nothing and
    returns ``tree`` itself.
    """
    if child not in tree:
        raise SwitchRefused(f"{child!r} is not in the tree")
    if new_parent not in tree:
        raise SwitchRefused(f"{new_parent!r} is not in the tree")
    if child == tree.root:
        raise SwitchRefused("the root has no parent to switch")
    old_parent = tree.parents[child]
    if new_parent == old_parent:
        return tree
    if new_parent == child:
        raise SwitchRefused("a member can't be its own parent")
    shape = tree._shape
    index = tree._index
    c, p = index[child], index[new_parent]
    if shape.contains(c, p):
        raise SwitchRefused("the new parent is in the child's own subtree")
    if tree.capacities[new_parent] == 0:
        raise SwitchRefused("the new parent is leaf-only")
    parent = list(shape.parent)
    parent[c] = p
    new_shape = _Shape(parent, shape.root)
    keys = tree._keys
    limits = limits or tree.limits
    k = limits.fanout
    lim = [min(tree.capacities[key], k) for key in keys]
    previous = [index.get(tree.backups[key], -1) if key in tree.backups else -1 for key in keys]
    excluded = {index[old_parent], *(index[key] for key in gone if key in index)}
    backup = _settle_backups(
        new_shape, lim, depth_bound(len(keys), k), limits.backup_share, previous, excluded
    )
    return Tree(
        tree.root,
        {keys[v]: keys[u] for v, u in enumerate(parent) if v != shape.root},
        backups={keys[v]: keys[b] for v, b in enumerate(backup) if b >= 0},
        capacities=tree.capacities,
        limits=limits,
        version=tree.version + 1,
    )
