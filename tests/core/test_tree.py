"""The fanout-tree planner: invariants under random rooms and churn, stability, determinism.

Every planned tree is checked against the same rules (:func:`check_tree`):

* everyone is in, following parents from any member reaches the root;
* children stay within ``min(capacity, k)`` and depth within ``depth_bound``
  whenever :func:`feasible` says that is possible, and ``overloaded`` says
  exactly when it isn't;
* leaf-only members never relay, and nobody passes ``k`` while the relays
  together could carry everyone at ``k`` each;
* every backup is a relay outside the member's subtree and not its parent; a
  member lacks one only when no such relay exists; and a backup never shares the
  fate of the parent (so one relay crash is repaired by one switch per orphan).
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import textwrap
import time
from collections import Counter

import attrs
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from mitalk_p2p.core.errors import LocalProtocolError
from mitalk_p2p.core.identity import Identity, PublicKey
from mitalk_p2p.core.tree import (
    Candidate,
    Position,
    SwitchRefused,
    Tree,
    TreeLimits,
    adopt_switch,
    changed_positions,
    depth_bound,
    feasible,
    plan_tree,
)

PROPS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CHURN = settings(PROPS, max_examples=30)


def make_key(i: int, salt: bytes = b"") -> PublicKey:
    return PublicKey(hashlib.blake2b(salt + i.to_bytes(4, "big"), digest_size=32).digest())


ROOT = make_key(0, b"root")


@attrs.frozen
class Room:
    root: PublicKey
    candidates: tuple[Candidate, ...]
    limits: TreeLimits

    def without(self, key: PublicKey) -> Room:
        return attrs.evolve(self, candidates=tuple(c for c in self.candidates if c.key != key))

    def adding(self, candidate: Candidate) -> Room:
        return attrs.evolve(self, candidates=(*self.candidates, candidate))

    def plan(self, previous: Tree | None = None) -> Tree:
        return plan_tree(self.root, self.candidates, self.limits, previous)


def random_candidate(rnd: random.Random, key: PublicKey, leaf_share: float) -> Candidate:
    capacity = 0 if rnd.random() < leaf_share else rnd.randint(1, 10)
    return Candidate(key, capacity, round(rnd.uniform(1.0, 400.0), 1))


@st.composite
def rooms(draw: st.DrawFn, max_members: int = 300) -> Room:
    """Random rooms: 1..max_members members (root included), k in 2..8, a mix of leaf-only."""
    rnd = draw(st.randoms(use_true_random=False))
    n = draw(st.integers(1, max_members))
    k = draw(st.integers(2, 8))
    leaf_share = draw(st.sampled_from([0.0, 0.3, 0.6, 0.9, 1.0]))
    salt = draw(st.binary(min_size=1, max_size=4))
    candidates = [random_candidate(rnd, make_key(i, salt), leaf_share) for i in range(1, n)]
    root_policy = draw(st.sampled_from(["absent", "declared", "leaf-only"]))
    if root_policy == "declared":
        candidates.append(Candidate(ROOT, rnd.randint(1, 10)))
    elif root_policy == "leaf-only":
        candidates.append(Candidate(ROOT, 0))
    return Room(ROOT, tuple(candidates), TreeLimits(k))


def child_limits(room: Room) -> dict[PublicKey, int]:
    k = room.limits.fanout
    limits = {c.key: min(c.capacity, k) for c in room.candidates}
    limits[room.root] = max(1, min(limits.get(room.root, k), k))
    return limits


def valid_backup(tree: Tree, limits: dict[PublicKey, int], member: PublicKey, b: PublicKey) -> bool:
    return (
        b != member
        and b != tree.parents[member]
        and limits[b] > 0
        and b not in tree.subtree(member)
    )


def check_tree(tree: Tree, room: Room) -> None:
    limits = child_limits(room)
    k = room.limits.fanout
    members = set(limits)
    assert set(tree.members) == members
    assert tree.root == room.root
    assert tree.position(room.root) == Position(
        None, None, children=tree.children(room.root), depth=0
    )
    n = len(members)
    bound = depth_bound(n, k)

    # Connected and loop-free: every parent chain reaches the root within n steps.
    for member in members:
        hops, node = 0, member
        while node != room.root:
            node = tree.parents[node]
            hops += 1
            assert hops < n
        assert hops == tree.depth(member)

    is_feasible = feasible(room.root, room.candidates, room.limits)
    assert tree.overloaded == (not is_feasible)
    assert tree.within_limits(room.limits) == is_feasible
    for member in members:
        kids = tree.children(member)
        assert all(tree.parents[c] == member for c in kids)
        if limits[member] == 0:
            assert kids == (), "a leaf-only member relays"
        if is_feasible:
            assert len(kids) <= limits[member]
            assert tree.depth(member) <= bound
    relays = sum(1 for limit in limits.values() if limit > 0)
    if relays * k >= n - 1:
        assert all(len(tree.children(m)) <= k for m in members)

    for member in members - {room.root}:
        backup = tree.backups.get(member)
        if backup is None:
            assert not any(valid_backup(tree, limits, member, b) for b in members)
            continue
        assert valid_backup(tree, limits, member, backup)
        parent = tree.parents[member]
        if parent != room.root:
            # The root is always a relay outside the parent's subtree, so an
            # independent backup always exists.
            assert backup not in tree.subtree(parent)


def fresh_order_depths(tree: Tree, room: Room) -> list[int]:
    limits = child_limits(room)
    others = [c for c in room.candidates if c.key != room.root]
    ranked = sorted(others, key=lambda c: (-limits[c.key], c.rtt_ms, c.key.raw))
    return [tree.depth(c.key) for c in ranked]


# --------------------------------------------------------------------------
# Properties


@PROPS
@given(rooms())
def test_planned_trees_keep_every_rule(room: Room) -> None:
    tree = room.plan()
    check_tree(tree, room)
    assert tree.version == 0


@PROPS
@given(rooms())
def test_fresh_plan_puts_relays_and_low_rtt_near_the_root(room: Room) -> None:
    tree = room.plan()
    limits = child_limits(room)
    if all(len(tree.children(m)) <= limits[m] for m in tree.members):
        # Without overflow, filling is breadth-first in (limit desc, RTT, key) order.
        depths = fresh_order_depths(tree, room)
        assert depths == sorted(depths)


@PROPS
@given(rooms(max_members=150))
def test_replanning_unchanged_input_changes_nothing(room: Room) -> None:
    tree = room.plan()
    again = room.plan(previous=tree)
    assert changed_positions(tree, again) == frozenset()
    assert again.version == tree.version + 1


@PROPS
@given(rooms(max_members=150), st.randoms(use_true_random=False))
def test_input_order_does_not_matter(room: Room, rnd: random.Random) -> None:
    shuffled = list(room.candidates)
    rnd.shuffle(shuffled)
    a = room.plan()
    b = plan_tree(room.root, shuffled, room.limits)
    assert a == b
    assert list(a.parents.items()) == list(b.parents.items())
    assert list(a.backups.items()) == list(b.backups.items())


CHURN_STEPS = st.lists(
    st.sampled_from(["join", "join-leaf", "leave", "crash", "capacity"]), min_size=1, max_size=8
)


@CHURN
@given(rooms(max_members=120), CHURN_STEPS, st.randoms(use_true_random=False))
def test_churn_keeps_every_rule(room: Room, steps: list[str], rnd: random.Random) -> None:
    tree = room.plan()
    check_tree(tree, room)
    joined = 0
    for step in steps:
        others = sorted((c for c in room.candidates if c.key != room.root), key=lambda c: c.key.raw)
        if step.startswith("join"):
            joined += 1
            candidate = random_candidate(rnd, make_key(joined, b"joiner"), 0.3)
            if step == "join-leaf":
                candidate = attrs.evolve(candidate, capacity=0)
            room = room.adding(candidate)
        elif step == "leave" and others:
            room = room.without(rnd.choice(others).key)
        elif step == "capacity" and others:
            changed = rnd.choice(others)
            room = room.without(changed.key).adding(
                attrs.evolve(changed, capacity=rnd.randint(0, 10))
            )
        elif step == "crash":
            relays = [c.key for c in others if tree.children(c.key)]
            if not relays:
                continue
            crashed = rnd.choice(relays)
            tree = crash_and_switch(tree, crashed)
            room = room.without(crashed)
        previous = tree
        tree = room.plan(previous=previous)
        check_tree(tree, room)
        assert tree.version == previous.version + 1


def crash_and_switch(tree: Tree, crashed: PublicKey) -> Tree:
    """Every orphan of ``crashed`` switches to the backup it was told; the host adopts each."""
    lost = tree.subtree(crashed)
    orphans = tree.children(crashed)
    targets = {orphan: tree.position(orphan).backup for orphan in orphans}
    for target in targets.values():
        # Switching reconnects the orphan: the backup isn't below the crashed relay.
        assert target is not None
        assert target not in lost
    for orphan, target in targets.items():
        assert target is not None
        tree = adopt_switch(tree, orphan, target)
        assert tree.parents[orphan] == target
        assert crashed not in tree.backups.values()
    assert tree.children(crashed) == ()
    for member in tree.members:
        if member != crashed:
            assert crashed not in tree.path_to_root(member)
    return tree


@CHURN
@given(rooms(max_members=200), st.randoms(use_true_random=False))
def test_one_relay_crash_is_repaired_by_one_switch_per_orphan(
    room: Room, rnd: random.Random
) -> None:
    tree = room.plan()
    relays = [m for m in tree.members if m != room.root and tree.children(m)]
    if not relays:
        return
    crashed = rnd.choice(relays)
    switched = crash_and_switch(tree, crashed)
    rest = room.without(crashed)
    replanned = rest.plan(previous=switched)
    check_tree(replanned, rest)


# --------------------------------------------------------------------------
# Examples


@pytest.mark.parametrize(
    ("n", "k", "bound"),
    [
        (1, 2, 1),
        (1, 6, 1),
        (2, 6, 2),
        (6, 6, 2),
        (7, 6, 3),
        (36, 6, 3),
        (37, 6, 4),
        (1000, 6, 5),
        (1024, 2, 11),
        (1025, 2, 12),
        (8, 8, 2),
        (9, 8, 3),
    ],
)
def test_depth_bound(n: int, k: int, bound: int) -> None:
    assert depth_bound(n, k) == bound
    assert TreeLimits(k).depth_bound(n) == bound


def test_depth_bound_rejects_nonsense() -> None:
    with pytest.raises(LocalProtocolError):
        depth_bound(0, 6)
    with pytest.raises(LocalProtocolError):
        depth_bound(10, 1)
    with pytest.raises(LocalProtocolError):
        TreeLimits(1)


def test_root_alone() -> None:
    for candidates in ([], [Candidate(ROOT, 3)]):
        tree = plan_tree(ROOT, candidates, TreeLimits())
        assert tree.members == (ROOT,)
        assert tree.position(ROOT) == Position(None, None, children=(), depth=0)
        assert tree.max_depth == 0
        assert tree.subtree(ROOT) == frozenset({ROOT})
        assert not tree.overloaded
        assert changed_positions(None, tree) == frozenset({ROOT})


def test_tiny_rooms_have_no_backup_when_none_is_valid() -> None:
    a, b = make_key(1), make_key(2)
    tree = plan_tree(ROOT, [Candidate(a, 4)], TreeLimits())
    assert tree.position(a) == Position(ROOT, None, children=(), depth=1)

    # Two leaf-only members under the root: the only relay is their parent.
    tree = plan_tree(ROOT, [Candidate(a, 0), Candidate(b, 0)], TreeLimits())
    assert tree.backups == {}

    # A relay and a leaf: the leaf backs up to the relay, the relay has no option.
    tree = plan_tree(ROOT, [Candidate(a, 3), Candidate(b, 0)], TreeLimits())
    assert tree.parents == {a: ROOT, b: ROOT}
    assert tree.backups == {b: a}


def test_in_a_chain_only_the_root_child_lacks_a_backup() -> None:
    keys = [make_key(i) for i in range(1, 5)]
    candidates = [Candidate(ROOT, 1)] + [Candidate(key, 1) for key in keys]
    room = Room(ROOT, tuple(candidates), TreeLimits(2))
    tree = room.plan()
    check_tree(tree, room)
    assert tree.max_depth == 4 == depth_bound(5, 2)
    [top] = tree.children(ROOT)
    assert top not in tree.backups
    assert set(tree.backups) == set(keys) - {top}


def test_root_capacity_policy() -> None:
    a, b = make_key(1), make_key(2)
    absent = plan_tree(ROOT, [Candidate(a, 2)], TreeLimits(5))
    assert absent.capacities[ROOT] == 5
    declared = plan_tree(ROOT, [Candidate(a, 2), Candidate(ROOT, 3)], TreeLimits(5))
    assert declared.capacities[ROOT] == 3
    # A host that declares 0 still relays to one child: it can't hang below anyone.
    leaf_root = plan_tree(
        ROOT, [Candidate(a, 2), Candidate(b, 2), Candidate(ROOT, 0)], TreeLimits()
    )
    assert leaf_root.capacities[ROOT] == 1
    assert len(leaf_root.children(ROOT)) == 1
    assert not leaf_root.overloaded


def test_everyone_leaf_only_still_connects_and_reports_overload() -> None:
    k = 4
    candidates = [Candidate(make_key(i), 0) for i in range(1, 30)]
    room = Room(ROOT, tuple(candidates), TreeLimits(k))
    assert not feasible(ROOT, candidates, room.limits)
    tree = room.plan()
    check_tree(tree, room)
    assert tree.overloaded
    # Leaf-only members never relay, so the root carries everyone.
    assert len(tree.children(ROOT)) == 29
    assert tree.max_depth == 1


def test_short_capacity_overloads_relays_up_to_k_before_past_it() -> None:
    k = 4
    relays = [Candidate(make_key(i), 1) for i in range(1, 4)]
    leaves = [Candidate(make_key(i), 0) for i in range(4, 14)]
    room = Room(ROOT, (*relays, *leaves), TreeLimits(k))
    tree = room.plan()
    check_tree(tree, room)
    assert tree.overloaded
    # 4 relays (root included) at k=4 carry 16 >= 13 children: nobody passes k.
    assert max(len(tree.children(m)) for m in tree.members) <= k
    assert all(tree.children(c.key) == () for c in leaves)


def test_too_little_relay_capacity_for_the_depth_bound_keeps_capacity() -> None:
    # Capacity suffices to connect everyone, but only as a deep chain-like tree.
    candidates = [Candidate(make_key(i), 1) for i in range(1, 12)]
    room = Room(ROOT, (Candidate(ROOT, 1), *candidates), TreeLimits(3))
    tree = room.plan()
    check_tree(tree, room)
    assert tree.overloaded
    assert all(len(tree.children(m)) <= 1 for m in tree.members)
    assert tree.max_depth == 11 > depth_bound(12, 3)


def test_thousand_members_fit_the_depth_bound_quickly() -> None:
    rnd = random.Random(7)
    candidates = [random_candidate(rnd, make_key(i, b"big"), 0.4) for i in range(1, 1000)]
    room = Room(ROOT, tuple(candidates), TreeLimits(6))
    start = time.perf_counter()
    tree = room.plan()
    elapsed = time.perf_counter() - start
    check_tree(tree, room)
    assert len(tree) == 1000
    assert not tree.overloaded
    assert tree.max_depth <= depth_bound(1000, 6) == 5
    # Backup load is spread over many relays, each within its soft cap.
    load = Counter(tree.backups.values())
    assert len(tree.backups) == 999
    assert all(count <= 2 * tree.limit(relay) for relay, count in load.items())
    assert len(load) > 50
    start = time.perf_counter()
    again = room.plan(previous=tree)
    changed = changed_positions(tree, again)
    replan_elapsed = time.perf_counter() - start
    assert changed == frozenset()
    # Typically under 10 ms each; the margin keeps slow CI machines green.
    assert elapsed < 0.5
    assert replan_elapsed < 0.5


def stable_room(seed: int, k: int = 6) -> Room:
    rnd = random.Random(seed)
    candidates = [random_candidate(rnd, make_key(i, b"stable"), 0.4) for i in range(1, 200)]
    return Room(ROOT, tuple(candidates), TreeLimits(k))


@pytest.mark.parametrize("seed", range(6))
def test_one_join_changes_few_positions(seed: int) -> None:
    room = stable_room(seed)
    tree = room.plan()
    k = room.limits.fanout
    for capacity in (0, 4):
        newcomer = Candidate(make_key(seed, b"newcomer"), capacity, 30.0)
        grown = room.adding(newcomer)
        after = grown.plan(previous=tree)
        check_tree(after, grown)
        changed = changed_positions(tree, after)
        assert newcomer.key in changed
        assert tree.parents.items() <= after.parents.items()
        assert len(changed) <= 2 + 2 * k


@pytest.mark.parametrize("seed", range(6))
def test_one_leave_changes_few_positions(seed: int) -> None:
    room = stable_room(seed)
    tree = room.plan()
    k = room.limits.fanout
    rnd = random.Random(seed)
    leaves = [m for m in tree.members if m != ROOT and not tree.children(m)]
    relays = [m for m in tree.members if m != ROOT and tree.children(m)]
    for gone in (rnd.choice(leaves), rnd.choice(relays), max(relays, key=tree.depth)):
        shrunk = room.without(gone)
        after = shrunk.plan(previous=tree)
        check_tree(after, shrunk)
        changed = changed_positions(tree, after)
        below = tree.subtree(gone) - {gone}
        # The departed member's subtree may move (and change depth); beyond
        # that, only a handful: new parents, the old parent, a few backups.
        assert len(changed - below) <= 3 * k
        # Edges that didn't involve the departed member survive.
        survived = {c: p for c, p in tree.parents.items() if gone not in (c, p)}
        kept = sum(1 for c, p in survived.items() if after.parents.get(c) == p)
        assert kept == len(survived)


@pytest.mark.parametrize("seed", range(4))
def test_crash_then_switches_then_replan_settles_quietly(seed: int) -> None:
    room = stable_room(seed)
    tree = room.plan()
    relays = sorted(
        (m for m in tree.members if m != ROOT and tree.children(m)), key=lambda m: m.raw
    )
    crashed = relays[seed % len(relays)]
    switched = crash_and_switch(tree, crashed)
    assert not switched.overloaded  # backups had room and kept the depth bound
    rest = room.without(crashed)
    after = rest.plan(previous=switched)
    check_tree(after, rest)
    # The orphans stay where they switched to.
    for orphan in tree.children(crashed):
        assert after.parents[orphan] == switched.parents[orphan]
    assert len(changed_positions(switched, after)) <= 2 * room.limits.fanout


def test_determinism_does_not_depend_on_the_hash_seed() -> None:
    script = textwrap.dedent(
        """\
        import hashlib, random
        from mitalk_p2p.core.identity import PublicKey
        from mitalk_p2p.core.tree import Candidate, TreeLimits, plan_tree
        rnd = random.Random(3)
        keys = [PublicKey(hashlib.blake2b(bytes([i % 256, i // 256]), digest_size=32).digest())
                for i in range(400)]
        candidates = {Candidate(key, rnd.choice([0, 0, 2, 5, 9]), rnd.choice([20.0, 50.0]))
                      for key in keys[1:]}
        tree = plan_tree(keys[0], list(candidates), TreeLimits(4))
        gone = set(keys[1:41])
        rest = [c for c in candidates if c.key not in gone]  # in hash-dependent order
        later = plan_tree(keys[0], rest, TreeLimits(4), previous=tree)
        digest = hashlib.sha256()
        for t in (tree, later):
            for child, parent in t.parents.items():
                digest.update(child.raw + parent.raw)
            for child, backup in t.backups.items():
                digest.update(child.raw + backup.raw)
        print(digest.hexdigest())
        """
    )
    digests = set()
    for seed in ("0", "1", "12345"):
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        )
        digests.add(result.stdout.strip())
    assert len(digests) == 1


def test_identity_keys_work_as_members() -> None:
    people = [Identity.from_seed(bytes([i]) * 32, f"p{i}").public_key for i in range(1, 9)]
    candidates = [Candidate(key, i % 3) for i, key in enumerate(people[1:])]
    room = Room(people[0], tuple(candidates), TreeLimits(3))
    check_tree(room.plan(), room)


def test_root_change_replans_into_a_valid_tree() -> None:
    room = stable_room(1)
    tree = room.plan()
    heir = sorted(tree.children(ROOT), key=lambda m: m.raw)[0]
    heir_candidate = next(c for c in room.candidates if c.key == heir)
    successor = Room(
        heir,
        (*(c for c in room.candidates if c.key != heir), heir_candidate),
        room.limits,
    ).without(ROOT)
    after = successor.plan(previous=tree)
    check_tree(after, successor)


def test_changed_positions_lists_new_members_and_moves() -> None:
    room = stable_room(2)
    tree = room.plan()
    assert changed_positions(None, tree) == frozenset(tree.members)
    assert changed_positions(tree, tree) == frozenset()


# --------------------------------------------------------------------------
# adopt_switch and validation


def small_tree() -> tuple[Tree, Room]:
    candidates = [Candidate(make_key(i), 3 if i <= 4 else 0) for i in range(1, 16)]
    room = Room(ROOT, tuple(candidates), TreeLimits(3))
    return room.plan(), room


def test_adopt_switch_refuses_what_would_break_the_tree() -> None:
    tree, _ = small_tree()
    relay = next(m for m in tree.children(ROOT) if tree.children(m))
    below = tree.children(relay)[0]
    leaf = next(m for m in tree.members if tree.capacities[m] == 0)
    outsider = make_key(999)
    with pytest.raises(SwitchRefused):
        adopt_switch(tree, relay, below)  # a loop
    with pytest.raises(SwitchRefused):
        adopt_switch(tree, relay, relay)
    with pytest.raises(SwitchRefused):
        adopt_switch(tree, below, leaf)  # leaf-only can't relay
    with pytest.raises(SwitchRefused):
        adopt_switch(tree, ROOT, relay)
    with pytest.raises(SwitchRefused):
        adopt_switch(tree, outsider, relay)
    with pytest.raises(SwitchRefused):
        adopt_switch(tree, below, outsider)
    assert adopt_switch(tree, below, relay) is tree


def test_adopt_switch_accepts_an_overfull_parent_and_replan_rebalances() -> None:
    tree, room = small_tree()
    full = next(m for m in tree.members if m != ROOT and len(tree.children(m)) == tree.limit(m) > 0)
    mover = next(
        m
        for m in tree.members
        if m != ROOT and tree.parents[m] != full and full not in tree.subtree(m)
    )
    switched = adopt_switch(tree, mover, full, room.limits)
    assert switched.parents[mover] == full
    assert switched.overloaded
    assert switched.version == tree.version + 1
    rebalanced = room.plan(previous=switched)
    check_tree(rebalanced, room)


def test_tree_constructor_checks_structure() -> None:
    a, b = make_key(1), make_key(2)
    capacities = {ROOT: 2, a: 1, b: 0}
    with pytest.raises(LocalProtocolError):
        Tree(ROOT, {a: b, b: a}, backups={}, capacities=capacities)  # a loop
    with pytest.raises(LocalProtocolError):
        Tree(ROOT, {a: ROOT}, backups={}, capacities=capacities)  # b detached
    with pytest.raises(LocalProtocolError):
        Tree(ROOT, {a: ROOT, b: ROOT}, backups={a: b}, capacities=capacities)  # leaf backup
    with pytest.raises(LocalProtocolError):
        Tree(ROOT, {a: ROOT, b: a}, backups={a: b}, capacities=capacities)  # own subtree
    tree = Tree(ROOT, {a: ROOT, b: ROOT}, backups={b: a}, capacities=capacities)
    assert tree.position(b) == Position(ROOT, a, children=(), depth=1)
    with pytest.raises(LocalProtocolError):
        tree.position(make_key(3))
    with pytest.raises(TypeError):
        hash(tree)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Candidate(make_key(1), -1),
        lambda: Candidate(make_key(1), 2, float("nan")),
        lambda: Candidate(make_key(1), 2, float("inf")),
        lambda: Candidate(make_key(1), 2, -5.0),
    ],
)
def test_candidates_are_validated(make: object) -> None:
    assert callable(make)
    with pytest.raises(LocalProtocolError):
        make()


def test_duplicate_candidates_are_refused() -> None:
    a = make_key(1)
    with pytest.raises(LocalProtocolError):
        plan_tree(ROOT, [Candidate(a, 1), Candidate(a, 2)], TreeLimits())
