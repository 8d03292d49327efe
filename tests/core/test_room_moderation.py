"""Roles and moderation: every action, who may take it, and what it changes."""

from __future__ import annotations

import pytest

from mitalk_p2p.core import ops
from mitalk_p2p.core.events import LeftRoom, RoomChanged
from mitalk_p2p.core.rejection import Rejected, RejectReason
from mitalk_p2p.core.roles import Role

from .room_fixtures import digests, make_room, state_of


def test_host_is_the_moderator_of_a_new_room() -> None:
    _, r = make_room()
    state = r["ann"].state
    assert state is not None
    assert state.host == r["ann"].me
    assert state.role_of(r["ann"].me) is Role.HOST
    assert r["ann"].is_host


def test_hand_queue_is_ordered_by_raise_time_and_shown_to_moderators() -> None:
    net, r = make_room("bob", "cat", "dan")
    for name in ("dan", "bob", "cat"):
        r[name].act(ops.RaiseHand(), net.now)
        net.pump()
    for viewer in ("ann", "bob", "cat", "dan"):
        state = r[viewer].state
        assert state is not None
        assert [m.name for m in state.hand_queue()] == ["dan", "bob", "cat"]
    r["bob"].act(ops.LowerHand(), net.now)
    net.pump()
    assert [m.name for m in state_of(r["ann"]).hand_queue()] == ["dan", "cat"]


def test_stage_needs_the_listeners_consent_and_lowers_the_hand() -> None:
    net, r = make_room("bob", "cat")
    r["bob"].act(ops.RaiseHand(), net.now)
    net.pump()
    r["ann"].act(ops.InviteToStage(r["bob"].me), net.now)
    net.pump()
    member = state_of(r["bob"]).members[r["bob"].me]
    assert member.role is Role.LISTENER and member.stage_invited
    r["bob"].act(ops.AcceptStage(), net.now)
    net.pump()
    member = state_of(r["cat"]).members[r["bob"].me]
    assert member.role is Role.SPEAKER
    assert not member.hand_raised and not member.stage_invited
    assert len(digests(r)) == 1


def test_declining_the_stage_keeps_the_listener_in_the_audience() -> None:
    net, r = make_room("bob")
    r["bob"].act(ops.RaiseHand(), net.now)
    r["ann"].act(ops.InviteToStage(r["bob"].me), net.now)
    net.pump()
    r["bob"].act(ops.DeclineStage(), net.now)
    net.pump()
    member = state_of(r["ann"]).members[r["bob"].me]
    assert member.role is Role.LISTENER
    assert not member.stage_invited and not member.hand_raised
    with pytest.raises(Rejected) as info:
        r["bob"].act(ops.AcceptStage(), net.now)
    assert info.value.reason is RejectReason.INVALID


def _on_stage(net: object, r: dict, name: str) -> None:  # type: ignore[type-arg]
    r["ann"].act(ops.InviteToStage(r[name].me), net.now)  # type: ignore[attr-defined]
    net.pump()  # type: ignore[attr-defined]
    r[name].act(ops.AcceptStage(), net.now)  # type: ignore[attr-defined]
    net.pump()  # type: ignore[attr-defined]


def test_moderator_moves_a_speaker_back_and_a_speaker_can_step_down() -> None:
    net, r = make_room("bob", "cat")
    _on_stage(net, r, "bob")
    _on_stage(net, r, "cat")
    r["ann"].act(ops.MoveToAudience(r["bob"].me), net.now)
    r["cat"].act(ops.StepDown(), net.now)
    net.pump()
    state = r["bob"].state
    assert state is not None
    assert state.role_of(r["bob"].me) is Role.LISTENER
    assert state.role_of(r["cat"].me) is Role.LISTENER
    assert [m.name for m in state.speakers()] == ["ann"]


def test_mute_by_moderator_and_self_mute() -> None:
    net, r = make_room("bob", "cat")
    _on_stage(net, r, "bob")
    r["ann"].act(ops.Mute(r["bob"].me, True), net.now)
    net.pump()
    bob = state_of(r["cat"]).members[r["bob"].me]
    assert bob.muted and not bob.audible
    r["ann"].act(ops.Mute(r["bob"].me, False), net.now)
    r["bob"].act(ops.SelfMute(True), net.now)
    net.pump()
    bob = state_of(r["cat"]).members[r["bob"].me]
    assert not bob.muted and bob.self_muted and not bob.audible
    with pytest.raises(Rejected) as info:
        r["bob"].act(ops.Mute(r["ann"].me, True), net.now)
    assert info.value.reason is RejectReason.UNAUTHORIZED
    with pytest.raises(Rejected):
        r["cat"].act(ops.SelfMute(True), net.now)  # listeners have no microphone to mute


def test_kick_removes_and_bans() -> None:
    net, r = make_room("bob", "cat")
    r["ann"].act(ops.Kick(r["cat"].me), net.now)
    net.pump()
    state = r["bob"].state
    assert state is not None
    assert r["cat"].me not in state.members and r["cat"].me in state.banned
    assert any(isinstance(e, LeftRoom) and e.reason == "kicked" for e in r["cat"].events())


def test_promote_and_demote_co_moderators() -> None:
    net, r = make_room("bob", "cat")
    r["ann"].act(ops.Promote(r["bob"].me), net.now)
    net.pump()
    assert state_of(r["cat"]).role_of(r["bob"].me) is Role.MODERATOR
    # A co-moderator moderates listeners and speakers...
    r["bob"].act(ops.InviteToStage(r["cat"].me), net.now)
    net.pump()
    assert state_of(r["cat"]).members[r["cat"].me].stage_invited
    # ...but can't promote, kick the host, or mute the host.
    for op in (ops.Promote(r["cat"].me), ops.Kick(r["ann"].me), ops.Mute(r["ann"].me, True)):
        with pytest.raises(Rejected) as info:
            r["bob"].act(op, net.now)
        assert info.value.reason is RejectReason.UNAUTHORIZED
    r["ann"].act(ops.Demote(r["bob"].me), net.now)
    net.pump()
    assert state_of(r["cat"]).role_of(r["bob"].me) is Role.SPEAKER


def test_room_name_and_topic() -> None:
    net, r = make_room("bob")
    r["ann"].act(ops.SetInfo("Friday demo", "What shipped this week"), net.now)
    net.pump()
    state = r["bob"].state
    assert state is not None
    assert (state.name, state.topic) == ("Friday demo", "What shipped this week")
    with pytest.raises(Rejected):
        r["bob"].act(ops.SetInfo("mine now", ""), net.now)


@pytest.mark.parametrize(
    "op_for",
    [
        lambda r: ops.InviteToStage(r["cat"].me),
        lambda r: ops.Kick(r["cat"].me),
        lambda r: ops.Promote(r["cat"].me),
        lambda r: ops.RevokeInvite(bytes(16)),
        lambda r: ops.SetSuccessors(()),
    ],
)
def test_listeners_have_no_moderation_authority(op_for: object) -> None:
    net, r = make_room("bob", "cat")
    op = op_for(r)  # type: ignore[operator]
    with pytest.raises(Rejected) as info:
        r["bob"].act(op, net.now)
    assert info.value.reason is RejectReason.UNAUTHORIZED


def test_only_listeners_raise_hands_and_only_once() -> None:
    net, r = make_room("bob")
    with pytest.raises(Rejected):
        r["ann"].act(ops.RaiseHand(), net.now)
    r["bob"].act(ops.RaiseHand(), net.now)
    net.pump()
    with pytest.raises(Rejected):
        r["bob"].act(ops.RaiseHand(), net.now)


def test_every_change_is_reported_as_an_event_on_every_replica() -> None:
    net, r = make_room("bob", "cat")
    r["bob"].act(ops.RaiseHand(), net.now)
    net.pump()
    for name in ("ann", "bob", "cat"):
        changes = [e for e in r[name].events() if isinstance(e, RoomChanged)]
        assert [type(e.op) for e in changes] == [ops.RaiseHand]
        assert changes[0].author == r["bob"].me


def test_successor_list_is_co_moderators_then_speakers_then_listeners() -> None:
    net, r = make_room("bob", "cat", "dan")
    _on_stage(net, r, "dan")
    r["ann"].act(ops.Promote(r["cat"].me), net.now)
    net.pump()
    state = r["bob"].state
    assert state is not None
    names = [state.members[k].name for k in state.successors]
    assert names == ["cat", "dan", "bob"]
    assert len(digests(r)) == 1
