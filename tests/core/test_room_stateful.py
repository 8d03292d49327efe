"""A hypothesis state machine over the room: joins, moderation, crashes and partitions.

Invariants, checked after every step:
* at most one moderator per term, across every replica that ever existed;
* only members who accepted the stage (or moderate) hold the floor;
* a kicked member can't rejoin with its old invite;
* once the network heals and messages stop, all connected members agree on the digest.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mitalk_p2p.core import ops
from mitalk_p2p.core.identity import PublicKey
from mitalk_p2p.core.invite import SignedInvite
from mitalk_p2p.core.rejection import Rejected
from mitalk_p2p.core.replica import RoomReplica
from mitalk_p2p.core.roles import Role
from mitalk_p2p.core.term import Term
from mitalk_p2p.sim.control_net import ControlNet

from .room_fixtures import CONFIG, ROOM, invite_for, person

NAMES = ("ann", "bob", "cat", "dan", "eve", "fay")
names = st.sampled_from(NAMES)


class RoomMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.net = ControlNet(ROOM)
        host = RoomReplica.create_room(person("ann"), ROOM, name="Lab", now=0.0, config=CONFIG)
        self.replicas: dict[str, RoomReplica] = {"ann": self.net.add(host)}
        self.invites: dict[str, SignedInvite] = {}
        self.kicked: set[str] = set()
        self.gone: set[str] = set()  # left or crashed: never comes back in this run
        self.consented: set[PublicKey] = set()
        self.moderators_by_term: dict[Term, set[PublicKey]] = {}

    # --- helpers -------------------------------------------------------------

    def live(self) -> list[RoomReplica]:
        return [r for n, r in self.replicas.items() if n not in self.gone and self.net.is_up(r.me)]

    def members(self) -> list[RoomReplica]:
        return [r for r in self.live() if r.joined]

    def a_host_for(self, who: PublicKey) -> RoomReplica | None:
        for replica in self.members():
            if replica.is_host and self.net.reachable(replica.me, who):
                return replica
        return None

    def try_act(self, name: str, op: ops.Op) -> None:
        replica = self.replicas.get(name)
        if replica is None or name in self.gone or not replica.joined:
            return
        try:
            replica.act(op, self.net.now)
        except Rejected:
            return
        if isinstance(op, ops.AcceptStage):
            self.consented.add(replica.me)
        self.net.pump()

    # --- rules ---------------------------------------------------------------

    @rule(name=names)
    def join(self, name: str) -> None:
        if name in self.gone or (name in self.replicas and self.replicas[name].joined):
            return
        who = person(name)
        host = self.a_host_for(who.public_key)
        if host is None:
            return
        if name in self.kicked:
            # Its old invite, or a fresh one for a kicked former host that never had one.
            invite = self.invites.get(name) or invite_for(host.identity, now=self.net.now)
            replica = RoomReplica.joining(who, invite, CONFIG)
            self.net.join(replica, host.me)
            assert not replica.joined, "a kicked member rejoined with its old invite"
            return
        invite = invite_for(host.identity, now=self.net.now)
        self.invites[name] = invite
        replica = RoomReplica.joining(who, invite, CONFIG)
        self.replicas[name] = replica
        self.net.join(replica, host.me)

    @rule(name=names)
    def leave(self, name: str) -> None:
        replica = self.replicas.get(name)
        if replica is None or name in self.gone or not replica.joined:
            return
        replica.depart(self.net.now)
        self.net.pump()
        self.gone.add(name)

    @rule(name=names)
    def raise_hand(self, name: str) -> None:
        self.try_act(name, ops.RaiseHand())

    @rule(moderator=names, name=names)
    def invite_to_stage(self, moderator: str, name: str) -> None:
        if name in self.replicas:
            self.try_act(moderator, ops.InviteToStage(self.replicas[name].me))

    @rule(name=names, accept=st.booleans())
    def answer_stage(self, name: str, accept: bool) -> None:
        self.try_act(name, ops.AcceptStage() if accept else ops.DeclineStage())

    @rule(moderator=names, name=names)
    def kick(self, moderator: str, name: str) -> None:
        target = self.replicas.get(name)
        mod = self.replicas.get(moderator)
        if target is None or mod is None or not mod.is_host:
            return
        before = target.me in (mod.state.members if mod.state else {})
        self.try_act(moderator, ops.Kick(target.me))
        if before and mod.state is not None and target.me in mod.state.banned:
            self.kicked.add(name)

    @rule(moderator=names, name=names)
    def promote(self, moderator: str, name: str) -> None:
        if name in self.replicas:
            self.try_act(moderator, ops.Promote(self.replicas[name].me))

    @precondition(lambda self: len(self.members()) >= 3)
    @rule()
    def host_crash(self) -> None:
        for name, replica in self.replicas.items():
            if replica in self.members() and replica.is_host:
                self.net.crash(replica.me)
                self.gone.add(name)
                return

    @rule(split=st.sets(names, min_size=1, max_size=4))
    def partition(self, split: set[str]) -> None:
        side = [person(n).public_key for n in split]
        self.net.partition(side)

    @rule()
    def heal(self) -> None:
        self.net.heal()

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 6.0]))
    def tick(self, seconds: float) -> None:
        self.net.run_for(seconds)

    @rule()
    def settle(self) -> None:
        self.check_convergence()

    # --- invariants --------------------------------------------------------------

    @invariant()
    def one_moderator_per_term(self) -> None:
        for replica in self.replicas.values():
            if replica.state is not None and replica.leader is not None:
                hosts = self.moderators_by_term.setdefault(replica.state.term, set())
                hosts.add(replica.leader)
                assert len(hosts) == 1, f"term {replica.state.term} has {len(hosts)} moderators"

    @invariant()
    def only_consenting_members_hold_the_floor(self) -> None:
        for replica in self.members():
            assert replica.state is not None
            for member in replica.state.members.values():
                if member.role is Role.SPEAKER:
                    assert member.key in self.consented, f"{member.name} is a speaker unasked"
                if member.audible:
                    assert member.role.holds_floor

    def check_convergence(self) -> None:
        self.net.heal()
        # Enough time for a silent host to be replaced and for every branch to merge.
        for _ in range(4):
            self.net.run_for(CONFIG.host_timeout + 8 * CONFIG.succession_step)
        members = self.members()
        digests = {r.state.digest() for r in members if r.state is not None}
        assert len(digests) <= 1, f"{len(digests)} different room states after healing"
        leaders = {r.leader for r in members}
        assert len(leaders) <= 1

    def teardown(self) -> None:
        self.check_convergence()


# Derandomized: the suite explores the same 60 runs every time.  Wider random searches
# are run by hand; the one known non-converging case (a member kicked while cut off
# alone, then the host crashes before it hears of the kick) is in README, "Host succession".
RoomMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, derandomize=True
)
TestRoomMachine = RoomMachine.TestCase
