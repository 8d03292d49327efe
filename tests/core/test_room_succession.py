"""Host succession: signed leave, silence, ranks, forged claims, and partitions that heal."""

from __future__ import annotations

from mitalk_p2p.core import ops
from mitalk_p2p.core.control import Claim, LogEntry, encode_message
from mitalk_p2p.core.events import LeftRoom, MembersMerged, TermStarted
from mitalk_p2p.core.identity import Identity
from mitalk_p2p.core.replica import RoomReplica
from mitalk_p2p.core.roles import Role
from mitalk_p2p.core.room_state import RoomState
from mitalk_p2p.core.term import Term
from mitalk_p2p.sim.control_net import ControlNet

from .room_fixtures import CONFIG, digests, invite_for, join, make_room, person, state_of


def hosts(replicas: dict[str, RoomReplica], *names: str) -> set[str]:
    """Names of the peers that the given replicas consider the host."""
    found = set()
    for name in names:
        leader = replicas[name].leader
        found |= {n for n, r in replicas.items() if r.me == leader}
    return found


def epoch_rank(term: Term | None) -> tuple[int, int] | None:
    return None if term is None else (term.epoch, term.rank)


def rank_names(r: dict[str, RoomReplica], viewer: str) -> list[str]:
    state = r[viewer].state
    assert state is not None
    return [state.members[k].name for k in state.successors]


def test_signed_leave_hands_over_at_once() -> None:
    net, r = make_room("bob", "cat", "dan")
    r["ann"].act(ops.Promote(r["cat"].me), net.now)
    net.run_for(1.0)
    assert rank_names(r, "bob")[0] == "cat"
    left_at = net.now
    r["ann"].depart(net.now)
    net.run_for(0.0)
    for name in ("bob", "cat", "dan"):
        assert epoch_rank(r[name].term) == (2, 0)
        assert r[name].leader == r["cat"].me
    assert net.now == left_at  # rank 0 waits 0×Δ after a signed leave
    state = r["bob"].state
    assert state is not None and state.role_of(r["cat"].me) is Role.HOST
    assert r["ann"].me not in state.members
    assert len(digests(r, "bob", "cat", "dan")) == 1


def test_silent_host_is_replaced_after_the_timeout() -> None:
    net, r = make_room("bob", "cat")
    net.run_for(2.0)
    last_heartbeat = net.now - 1.0 if net.now % 1.0 else net.now
    net.crash(r["ann"].me)
    net.run_for(CONFIG.host_timeout + 0.5)
    assert epoch_rank(r["bob"].term) == (2, 0) and r["bob"].is_host
    assert r["cat"].leader == r["bob"].me
    claim_time = [e for e in r["cat"].events() if isinstance(e, TermStarted)]
    assert claim_time and claim_time[0].host == r["bob"].me
    assert last_heartbeat <= net.now
    state = r["cat"].state
    assert state is not None
    # The silent host stays in the roster as a listener, so it can rejoin the merge.
    assert state.role_of(r["ann"].me) is Role.LISTENER
    assert len(digests(r, "bob", "cat")) == 1


def test_rank_one_takes_over_when_rank_zero_is_gone_too() -> None:
    net, r = make_room("bob", "cat", "dan")
    net.run_for(1.0)
    assert rank_names(r, "dan")[:2] == ["bob", "cat"]
    net.crash(r["ann"].me)
    net.crash(r["bob"].me)
    net.run_for(CONFIG.host_timeout + CONFIG.succession_step + 0.5)
    assert r["cat"].is_host and epoch_rank(r["cat"].term) == (2, 1)
    assert r["dan"].leader == r["cat"].me
    assert len(digests(r, "cat", "dan")) == 1


def test_rank_one_does_not_claim_when_rank_zero_already_did() -> None:
    net, r = make_room("bob", "cat", "dan")
    net.run_for(1.0)
    net.crash(r["ann"].me)
    net.run_for(CONFIG.host_timeout + 3 * CONFIG.succession_step)
    assert r["cat"].statistics().claims_made == 0
    assert {epoch_rank(r[n].term) for n in ("bob", "cat", "dan")} == {(2, 0)}


def claim_as(identity: Identity, state: RoomState, entry: LogEntry) -> Claim:
    """A claim of term (2, rank 0) on ``state``, made by ``identity``."""
    return Claim.create(
        identity,
        room_id=state.room_id,
        new_term=Term(2, 0, entry.seq),
        prev_term=state.term,
        prev_seq=state.seq,
        prev_digest=state.digest(),
        reason=ops.LeaveReason.SILENT,
        successors_entry=entry,
    )


def test_claim_by_a_non_successor_is_rejected() -> None:
    net, r = make_room("bob", "cat")
    net.run_for(1.0)
    entry = r["bob"]._successors_entry
    assert entry is not None
    state = state_of(r["cat"])
    mallory = person("mallory")
    forged = claim_as(mallory, state, entry)
    r["cat"].receive(encode_message(forged), mallory.public_key, net.now)
    # cat holds rank 1 but claims rank 0's term.
    wrong_rank = claim_as(r["cat"].identity, state, entry)
    r["bob"].receive(encode_message(wrong_rank), r["cat"].me, net.now)
    assert r["cat"].statistics().rejected == {"forged": 1}
    assert r["bob"].statistics().rejected == {"forged": 1}
    assert epoch_rank(r["bob"].term) == (1, 0) and epoch_rank(r["cat"].term) == (1, 0)


def test_invites_from_the_previous_host_still_work_after_succession() -> None:
    net, r = make_room("bob", "cat")
    invite = invite_for(r["ann"].identity, max_uses=3)
    net.run_for(1.0)
    r["ann"].depart(net.now)
    net.run_for(0.5)
    assert r["bob"].is_host
    dan = join(net, r["bob"], person("dan"), invite)
    assert dan.joined and dan.leader == r["bob"].me


def test_split_keeps_a_moderator_on_both_sides_and_heals_to_one() -> None:
    net, r = make_room("bob", "cat", "dan", "eve")
    net.run_for(1.0)
    assert rank_names(r, "eve")[:2] == ["bob", "cat"]
    # ann and cat on one side; bob, dan and eve on the other.
    net.partition([r["ann"].me, r["cat"].me], [r["bob"].me, r["dan"].me, r["eve"].me])
    net.run_for(CONFIG.host_timeout + 2.0)
    assert hosts(r, "ann", "cat") == {"ann"}
    assert hosts(r, "bob", "dan", "eve") == {"bob"}
    # Both halves keep moderating while split.
    r["ann"].act(ops.SetInfo("left half", ""), net.now)
    fay = person("fay")
    net.partition(
        [r["ann"].me, r["cat"].me, fay.public_key], [r["bob"].me, r["dan"].me, r["eve"].me]
    )
    newcomer = r["fay"] = join(net, r["ann"], fay, invite_for(r["ann"].identity))
    assert newcomer.joined
    r["bob"].act(ops.InviteToStage(r["eve"].me), net.now)
    net.run_for(1.0)
    net.heal()
    net.run_for(5.0)
    everyone = tuple(r)
    assert hosts(r, *everyone) == {"bob"}
    assert {epoch_rank(r[n].term) for n in everyone} == {(2, 0)}
    assert len(digests(r, *everyone)) == 1
    state = r["bob"].state
    assert state is not None
    # fay joined the losing side and was merged in; ann stepped down to listener.
    assert newcomer.me in state.members
    assert state.role_of(r["ann"].me) is Role.LISTENER
    assert any(isinstance(e, MembersMerged) for e in r["bob"].events())


def test_tie_between_two_successors_goes_to_the_better_rank() -> None:
    net, r = make_room("bob", "cat", "dan")
    net.run_for(1.0)
    assert rank_names(r, "dan")[:2] == ["bob", "cat"]
    net.crash(r["ann"].me)
    net.partition([r["bob"].me], [r["cat"].me, r["dan"].me])
    net.run_for(CONFIG.host_timeout + 3.0)
    assert epoch_rank(r["bob"].term) == (2, 0) and epoch_rank(r["cat"].term) == (2, 1)
    net.heal()
    net.run_for(5.0)
    assert hosts(r, "bob", "cat", "dan") == {"bob"}
    assert {epoch_rank(r[n].term) for n in ("bob", "cat", "dan")} == {(2, 0)}
    assert len(digests(r, "bob", "cat", "dan")) == 1


def test_successor_list_is_signed_into_every_snapshot() -> None:
    net = ControlNet(r_room := invite_for(person("ann")).invite.room_id)
    host = net.add(RoomReplica.create_room(person("ann"), r_room, name="x", now=0.0, config=CONFIG))
    late = join(net, host, person("bob"))
    # bob learned the successor list from his join snapshot, not from an entry.
    assert late._successors_entry is not None
    net.run_for(1.0)
    net.crash(host.me)
    net.run_for(CONFIG.host_timeout + 1.0)
    assert late.is_host


def test_successors_holding_different_lists_claim_different_terms() -> None:
    net, r = make_room("bob", "cat")
    net.run_for(1.0)
    assert rank_names(r, "bob") == ["bob", "cat"]
    # bob misses the promotion that puts cat first in the signed successor list.
    net.partition([r["bob"].me])
    r["ann"].act(ops.Promote(r["cat"].me), net.now)
    net.pump()
    assert rank_names(r, "cat") == ["cat", "bob"]
    net.crash(r["ann"].me)
    net.partition([r["bob"].me], [r["cat"].me])
    net.run_for(CONFIG.host_timeout + 1.0)
    bob_term, cat_term = r["bob"].term, r["cat"].term
    assert bob_term is not None and cat_term is not None
    # Both were rank 0 of the list they held, yet their terms differ...
    assert epoch_rank(bob_term) == epoch_rank(cat_term) == (2, 0)
    assert bob_term != cat_term
    # ...and the claim from the fresher list wins once they meet.
    assert cat_term > bob_term
    net.heal()
    net.run_for(5.0)
    assert hosts(r, "bob", "cat") == {"cat"}
    assert len(digests(r, "bob", "cat")) == 1


def test_peer_kicked_by_the_winning_side_learns_it_after_the_heal() -> None:
    net, r = make_room("bob", "cat", "eve")
    net.run_for(1.0)
    assert rank_names(r, "eve") == ["bob", "cat", "eve"]
    net.crash(r["ann"].me)
    net.partition([r["bob"].me], [r["cat"].me, r["eve"].me])
    net.run_for(CONFIG.host_timeout + 2.0)
    assert r["bob"].is_host and r["cat"].is_host
    r["bob"].act(ops.Kick(r["cat"].me), net.now)
    net.heal()
    net.run_for(5.0)
    assert hosts(r, "bob", "eve") == {"bob"}
    assert not r["cat"].joined
    assert any(isinstance(e, LeftRoom) and e.reason == "kicked" for e in r["cat"].events())
    # What cat was told names only the moderator: no roster reaches a banned peer.
    cat_view = r["cat"].state
    assert cat_view is not None and set(cat_view.members) == {r["bob"].me}
    assert len(digests(r, "bob", "eve")) == 1
