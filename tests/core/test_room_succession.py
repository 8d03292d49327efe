"""Host succession: signed leave, silence, pre-votes, ranks, forged claims, and healed splits."""

from __future__ import annotations

import attrs

from mitalk_p2p.core import ops
from mitalk_p2p.core.control import (
    Claim,
    Kind,
    LogEntry,
    PreVoteAnswer,
    PreVoteRequest,
    decode_message,
    encode_message,
)
from mitalk_p2p.core.events import LeftRoom, MembersMerged, TermStarted
from mitalk_p2p.core.identity import Identity, PublicKey
from mitalk_p2p.core.replica import RoomConfig, RoomReplica, SendTo
from mitalk_p2p.core.roles import Role
from mitalk_p2p.core.room_state import RoomState
from mitalk_p2p.core.term import Term
from mitalk_p2p.sim.control_net import ControlNet

from .room_fixtures import CONFIG, ROOM, digests, invite_for, join, make_room, person, state_of


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
    net, r = make_room("bob", "cat", "dan", "eve")
    net.run_for(1.0)
    assert rank_names(r, "dan") == ["bob", "cat", "dan", "eve"]
    net.crash(r["ann"].me)
    # Each successor has a member beside it to grant its pre-vote.
    net.partition([r["bob"].me, r["eve"].me], [r["cat"].me, r["dan"].me])
    net.run_for(CONFIG.host_timeout + 3.0)
    assert epoch_rank(r["bob"].term) == (2, 0) and epoch_rank(r["cat"].term) == (2, 1)
    net.heal()
    net.run_for(5.0)
    everyone = ("bob", "cat", "dan", "eve")
    assert hosts(r, *everyone) == {"bob"}
    assert {epoch_rank(r[n].term) for n in everyone} == {(2, 0)}
    assert len(digests(r, *everyone)) == 1


def test_successor_list_is_signed_into_every_snapshot() -> None:
    net = ControlNet(r_room := invite_for(person("ann")).invite.room_id)
    host = net.add(RoomReplica.create_room(person("ann"), r_room, name="x", now=0.0, config=CONFIG))
    late = join(net, host, person("bob"))
    # bob learned the successor list from his join snapshot, not from an entry.
    assert late._successors_entry is not None
    net.run_for(1.0)
    # A signed leave hands over without a pre-vote, so even a room of two carries on.
    host.depart(net.now)
    net.run_for(0.0)
    assert late.is_host and epoch_rank(late.term) == (2, 0)


def test_successors_holding_different_lists_claim_different_terms() -> None:
    net, r = make_room("bob", "cat", "dan", "eve")
    net.run_for(1.0)
    assert rank_names(r, "bob") == ["bob", "cat", "dan", "eve"]
    # bob and dan miss the promotion that puts cat first in the signed successor list.
    net.partition([r["bob"].me, r["dan"].me])
    r["ann"].act(ops.Promote(r["cat"].me), net.now)
    net.pump()
    assert rank_names(r, "cat") == ["cat", "bob", "dan", "eve"]
    assert rank_names(r, "dan") == ["bob", "cat", "dan", "eve"]
    net.crash(r["ann"].me)
    net.partition([r["bob"].me, r["dan"].me], [r["cat"].me, r["eve"].me])
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
    everyone = ("bob", "cat", "dan", "eve")
    assert hosts(r, *everyone) == {"cat"}
    assert len(digests(r, *everyone)) == 1


def test_peer_kicked_by_the_winning_side_learns_it_after_the_heal() -> None:
    net, r = make_room("bob", "cat", "dan", "eve")
    net.run_for(1.0)
    assert rank_names(r, "eve") == ["bob", "cat", "dan", "eve"]
    net.crash(r["ann"].me)
    net.partition([r["bob"].me, r["dan"].me], [r["cat"].me, r["eve"].me])
    net.run_for(CONFIG.host_timeout + 2.0)
    assert r["bob"].is_host and r["cat"].is_host
    r["bob"].act(ops.Kick(r["cat"].me), net.now)
    net.heal()
    net.run_for(5.0)
    assert hosts(r, "bob", "dan", "eve") == {"bob"}
    assert not r["cat"].joined
    assert any(isinstance(e, LeftRoom) and e.reason == "kicked" for e in r["cat"].events())
    # What cat was told names only the moderator: no roster reaches a banned peer.
    cat_view = r["cat"].state
    assert cat_view is not None and set(cat_view.members) == {r["bob"].me}
    assert len(digests(r, "bob", "dan", "eve")) == 1


# --- pre-vote: an isolated successor never takes the room ----------------------------------


def make_room_with(config: RoomConfig, *names: str) -> tuple[ControlNet, dict[str, RoomReplica]]:
    """Like ``make_room``, with every replica on ``config``."""
    net = ControlNet(ROOM)
    host = net.add(RoomReplica.create_room(person("ann"), ROOM, name="x", now=0.0, config=config))
    r = {"ann": host}
    for name in names:
        r[name] = RoomReplica.joining(person(name), invite_for(host.identity), config)
        net.join(r[name], host.me)
    net.pump()
    return net, r


def pre_vote_request(
    asker: RoomReplica, *, rank: int = 0, attempt: int = 1, signer: Identity | None = None
) -> PreVoteRequest:
    """The pre-vote ``asker`` would send for rank ``rank`` of the list it holds."""
    state, entry = state_of(asker), asker._successors_entry
    assert entry is not None
    return PreVoteRequest.create(
        signer or asker.identity,
        room_id=ROOM,
        term=state.term.successor(rank, entry.seq),
        prev_term=state.term,
        attempt=attempt,
        successors_entry=entry,
    )


def answers_in(replica: RoomReplica) -> list[PreVoteAnswer]:
    """The pre-vote answers ``replica`` queued; drains its outbox."""
    found = []
    for item in replica.outbound():
        _kind, message = decode_message(item.data)
        if isinstance(message, PreVoteAnswer):
            found.append(message)
    return found


def test_an_isolated_successor_never_claims_and_comes_back_to_its_host() -> None:
    net, r = make_room("bob", "cat", "dan")
    net.run_for(1.0)
    assert rank_names(r, "cat")[0] == "bob"
    net.partition([r["bob"].me])  # bob's cable is pulled; the others still hear ann
    net.run_for(120.0)
    bob = r["bob"].statistics()
    assert bob.claims_made == 0 and epoch_rank(r["bob"].term) == (1, 0)
    # It kept asking, with backoff: rounds at 4, 5, 7, 11, 19 s, then every 8 s.
    assert 10 <= bob.pre_votes_requested <= 20
    net.heal()
    net.run_for(2.0)
    everyone = ("ann", "bob", "cat", "dan")
    assert hosts(r, *everyone) == {"ann"}
    assert {epoch_rank(r[n].term) for n in everyone} == {(1, 0)}
    assert r["bob"].me in state_of(r["ann"]).members
    assert len(digests(r, *everyone)) == 1
    for name in everyone:
        stats = r[name].statistics()
        assert stats.claims_accepted == 0 and stats.pre_votes_granted == 0
        assert not any(isinstance(e, TermStarted) for e in r[name].events())
    # Back in touch, bob hears ann and stops asking.
    asked = r["bob"].statistics().pre_votes_requested
    net.run_for(30.0)
    assert r["bob"].statistics().pre_votes_requested == asked


def test_a_crashed_host_is_taken_over_at_the_timeout_by_the_first_granted_successor() -> None:
    net, r = make_room("bob", "cat")
    net.run_for(1.0)  # ann's last heartbeat goes out at t=1
    net.crash(r["ann"].me)
    net.run_until(1.0 + CONFIG.host_timeout - 0.01)
    assert not r["bob"].is_host and r["bob"].statistics().pre_votes_requested == 0
    net.run_until(1.0 + CONFIG.host_timeout)
    # cat, silent just as long, grants at once, and bob claims on that grant.
    assert r["bob"].is_host and epoch_rank(r["bob"].term) == (2, 0)
    assert r["cat"].statistics().pre_votes_granted == 1
    assert r["bob"].statistics().pre_vote_grants_received == 1
    assert r["cat"].leader == r["bob"].me


def test_a_lost_pre_vote_is_asked_again_within_a_bounded_extra() -> None:
    net, r = make_room("bob", "cat")
    net.run_for(1.0)
    net.crash(r["ann"].me)
    deadline = 1.0 + CONFIG.host_timeout
    net.partition([r["cat"].me])  # bob's first request is lost
    net.run_until(deadline + 0.5)
    assert not r["bob"].is_host and r["bob"].statistics().pre_votes_requested == 1
    net.heal()
    # cat's own turn comes at the same moment; each asks the other, and only the
    # better rank is granted, so there is one claim, not two.
    net.run_until(deadline + CONFIG.pre_vote_retry)
    assert r["bob"].is_host and r["bob"].statistics().pre_votes_requested == 2
    assert r["cat"].leader == r["bob"].me
    assert r["cat"].statistics().claims_made == 0
    assert r["bob"].statistics().pre_votes_refused == 1


def test_a_voter_holds_a_request_until_its_own_silence_reaches_the_timeout() -> None:
    # A slow retry, so the claim at t=6 can only come from the held grant.
    config = attrs.evolve(CONFIG, pre_vote_retry=3.0)
    net, r = make_room_with(config, "bob", "cat")
    net.run_for(1.0)
    net.partition([r["bob"].me])  # bob misses ann's heartbeat at t=2; cat hears it
    net.run_for(1.0)
    net.heal()
    net.crash(r["ann"].me)
    net.run_until(1.0 + config.host_timeout)  # bob's silence is up; cat's is 3 s old
    assert r["bob"].statistics().pre_votes_requested == 1
    assert not r["bob"].is_host and r["cat"].next_deadline() == 2.0 + config.host_timeout
    net.run_until(2.0 + config.host_timeout - 0.01)
    assert r["cat"].statistics().pre_votes_granted == 0
    net.run_until(2.0 + config.host_timeout)
    assert r["bob"].is_host and r["bob"].statistics().pre_votes_requested == 1


def test_a_grant_is_refused_while_the_voter_still_hears_the_host() -> None:
    net, r = make_room("bob", "cat")
    net.run_for(1.5)
    bob, cat = r["bob"], r["cat"]
    # bob, cut off from ann alone, asks cat; cat heard ann at t=1.
    cat.receive(encode_message(pre_vote_request(bob)), bob.me, net.now)
    assert answers_in(cat) == []
    net.partition([bob.me])
    net.run_for(30.0)
    stats = cat.statistics()
    assert stats.pre_votes_granted == 0 and stats.pre_votes_refused == 1
    assert stats.rejected == {}
    # The host itself answers with a heartbeat, which ends the asker's silence.
    ann = r["ann"]
    ann.outbound()
    ann.receive(encode_message(pre_vote_request(bob, attempt=2)), bob.me, net.now)
    [reply] = ann.outbound()
    assert isinstance(reply, SendTo) and reply.peer == bob.me
    assert decode_message(reply.data)[0] == Kind.HEARTBEAT
    assert epoch_rank(bob.term) == (1, 0) and not bob.is_host


def test_forged_and_garbled_pre_votes_are_dropped_and_counted() -> None:
    net, r = make_room("bob", "cat", "dan")
    net.run_for(1.0)
    bob, cat, dan = r["bob"], r["cat"], r["dan"]
    net.crash(r["ann"].me)
    net.partition([bob.me])
    net.run_for(CONFIG.host_timeout + 0.5)  # bob is asking, cat and dan hear nobody either
    assert bob.statistics().pre_votes_requested == 1 and not bob.is_host
    mallory = person("mallory")
    genuine = encode_message(pre_vote_request(bob))
    tampered = genuine[:-1] + bytes([genuine[-1] ^ 1])
    wrong_rank = pre_vote_request(cat, rank=0)  # cat holds rank 1
    for data, sender in [
        (genuine, dan.me),  # relayed: not sent by its candidate
        (tampered, bob.me),  # signature broken
        (genuine[:40], bob.me),  # cut short
        (encode_message(wrong_rank), cat.me),  # claims a rank it doesn't hold
        # A stranger whom no signed successor list names.
        (encode_message(pre_vote_request(bob, signer=mallory)), mallory.public_key),
    ]:
        cat.receive(data, sender, net.now)
    assert answers_in(cat) == []
    assert cat.statistics().rejected == {"forged": 4, "malformed": 1}
    assert cat.statistics().pre_votes_granted == 0
    # Grants that bob must not believe.
    round_attempt = bob.statistics().pre_votes_requested
    term = pre_vote_request(bob).term

    def grant(voter: Identity, *, candidate: PublicKey = bob.me) -> bytes:
        answer = PreVoteAnswer.create(
            voter,
            room_id=ROOM,
            candidate=candidate,
            term=term,
            attempt=round_attempt,
            granted=True,
            voter_term=Term.first(),
        )
        return encode_message(answer)

    good = grant(cat.identity)
    for data, sender in [
        (grant(mallory), mallory.public_key),  # not a member
        (grant(cat.identity), dan.me),  # cat's grant, sent by dan
        (good[:-1] + bytes([good[-1] ^ 1]), cat.me),  # signature broken
        (grant(cat.identity, candidate=dan.me), cat.me),  # for someone else
        (bytes([good[0], good[1]]) + b"\x00" * 7, cat.me),  # garbage
    ]:
        bob.receive(data, sender, net.now)
    assert bob.statistics().rejected == {
        "not_member": 1,
        "forged": 2,
        "invalid": 1,
        "malformed": 1,
    }
    assert not bob.is_host and bob.statistics().claims_made == 0
    # The genuine grant still works afterwards.
    bob.receive(good, cat.me, net.now)
    assert bob.is_host and epoch_rank(bob.term) == (2, 0)


def test_a_lone_listener_never_claims_for_a_silent_host() -> None:
    # Host and one listener: nobody can grant, so nobody takes over (nobody to moderate).
    net, r = make_room("bob")
    net.run_for(1.0)
    net.crash(r["ann"].me)
    net.run_for(60.0)
    stats = r["bob"].statistics()
    assert stats.pre_votes_requested > 0 and stats.claims_made == 0
    assert not r["bob"].is_host and r["bob"].leader == r["ann"].me
    assert epoch_rank(r["bob"].term) == (1, 0)


def test_a_member_that_missed_a_succession_catches_up_through_the_pre_vote() -> None:
    net, r = make_room("bob", "cat", "dan", "eve")
    net.run_for(1.0)
    ann, bob, cat, dan, eve = (r[n] for n in ("ann", "bob", "cat", "dan", "eve"))
    eve_rank = state_of(eve).successors.index(eve.me)
    net.partition([eve.me])
    net.crash(ann.me)
    net.run_for(CONFIG.host_timeout + 1.0)
    assert bob.is_host and epoch_rank(bob.term) == (2, 0)
    assert epoch_rank(eve.term) == (1, 0)
    net.crash(bob.me)
    net.crash(dan.me)
    # eve, a term behind, asks cat: cat answers with the claim eve missed, not a grant.
    cat.receive(encode_message(pre_vote_request(eve, rank=eve_rank)), eve.me, net.now)
    [item] = cat.outbound()
    assert isinstance(item, SendTo) and item.peer == eve.me
    assert decode_message(item.data)[0] == Kind.CLAIM
    assert cat.statistics().pre_votes_refused == 1
    # cat asks eve: eve says it is behind, and cat sends it the claim.
    cat_rank = state_of(cat).successors.index(cat.me)
    eve.receive(encode_message(pre_vote_request(cat, rank=cat_rank)), cat.me, net.now)
    [refusal] = answers_in(eve)
    assert not refusal.granted and refusal.voter_term == Term.first()
    cat.receive(encode_message(refusal), eve.me, net.now)
    [item] = cat.outbound()
    assert isinstance(item, SendTo) and decode_message(item.data)[0] == Kind.CLAIM
    eve.receive(item.data, cat.me, net.now)
    assert eve.term == cat.term and eve.leader == bob.me
    # Now on the same term, eve grants cat once it has heard no host for the timeout.
    net.heal()
    net.run_for(CONFIG.host_timeout + (cat_rank + 1) * CONFIG.succession_step)
    assert cat.is_host and epoch_rank(cat.term) == (3, cat_rank)
    assert eve.leader == cat.me and eve.statistics().pre_votes_granted == 1
    assert len(digests(r, "cat", "eve")) == 1
