"""The sans-I/O registry: what it stores, what it refuses (and counts), and when it forgets."""

from __future__ import annotations

import attrs
import pytest

from bootstrap.announcement import create_withdrawal
from bootstrap.registry import (
    Outcome,
    Refusal,
    Registry,
    RegistryConfig,
    RegistryError,
    Stored,
    Withdrawn,
)
from mitalk_p2p.core.identity import Identity
from mitalk_p2p.core.term import Term
from tests.bootstrap import HOST, MODERATOR, NOW, ROOM, STRANGER, make_announcement, room_id

SECOND_TERM = Term.first().successor(rank=0, list_seq=5)


def refused(registry: Registry, code: Refusal) -> int:
    return registry.statistics().refused.get(code.value, 0)


def test_an_announced_room_is_found_by_id_and_by_any_case_of_part_of_its_name() -> None:
    registry = Registry()
    ann = make_announcement()
    assert registry.announce(ann, NOW) is Outcome.ADDED
    assert registry.lookup_id(ROOM, NOW) == ann
    assert registry.lookup_name("jazz", NOW) == [ann]
    assert registry.lookup_name("NIGHT J", NOW) == [ann]
    assert registry.lookup_name("blues", NOW) == []
    assert registry.lookup_id(room_id(99), NOW) is None
    stats = registry.statistics()
    assert (stats.rooms, stats.announcements_accepted, stats.lookups) == (1, 1, 5)


def test_a_forged_announcement_is_refused_and_nothing_is_stored() -> None:
    registry = Registry()
    ann = make_announcement()
    for forged in (
        attrs.evolve(ann, signature=bytes(64)),
        attrs.evolve(ann, addresses=("203.0.113.9:4000",)),
        attrs.evolve(ann, signer=STRANGER.public_key),
    ):
        with pytest.raises(RegistryError) as caught:
            registry.announce(forged, NOW)
        assert caught.value.code is Refusal.BAD_SIGNATURE
    assert len(registry) == 0
    assert refused(registry, Refusal.BAD_SIGNATURE) == 3


@pytest.mark.parametrize(
    ("ann_now", "lifetime", "code"),
    [
        (NOW - 600, 600, Refusal.EXPIRED),
        (NOW - 700, 600, Refusal.EXPIRED),
        (NOW + 61, 600, Refusal.NOT_YET_VALID),
        (NOW, 3601, Refusal.BAD_LIFETIME),
    ],
)
def test_announcements_outside_their_time_are_refused(ann_now: int, lifetime: int,
                                                      code: Refusal) -> None:
    registry = Registry()
    with pytest.raises(RegistryError) as caught:
        registry.announce(make_announcement(now=ann_now, lifetime=lifetime), NOW)
    assert caught.value.code is code
    assert refused(registry, code) == 1


def test_a_clock_a_little_fast_is_tolerated() -> None:
    registry = Registry()
    assert registry.announce(make_announcement(now=NOW + 60), NOW) is Outcome.ADDED


def test_a_lower_term_is_refused_and_a_higher_one_replaces() -> None:
    registry = Registry()
    first = make_announcement(term=Term.first())
    successor = Identity.from_seed(bytes([9]) * 32, "successor")
    second = make_announcement(signer=successor, term=SECOND_TERM,
                               addresses=("198.51.100.7:4000",))
    assert registry.announce(first, NOW) is Outcome.ADDED
    assert registry.announce(second, NOW) is Outcome.REPLACED
    with pytest.raises(RegistryError) as caught:
        registry.announce(make_announcement(term=Term.first(), now=NOW + 5), NOW + 5)
    assert caught.value.code is Refusal.STALE_TERM
    assert registry.lookup_id(ROOM, NOW + 5) == second
    assert refused(registry, Refusal.STALE_TERM) == 1


def test_the_same_term_renews_only_with_a_later_expiry() -> None:
    registry = Registry()
    current = make_announcement(now=NOW)
    registry.announce(current, NOW)
    assert registry.announce(current, NOW) is Outcome.KEPT
    older = make_announcement(now=NOW - 10, listener_count=1)
    assert registry.announce(older, NOW) is Outcome.KEPT
    assert registry.lookup_id(ROOM, NOW) == current
    renewed = make_announcement(now=NOW + 30, listener_count=40)
    assert registry.announce(renewed, NOW + 30) is Outcome.REPLACED
    assert registry.lookup_id(ROOM, NOW + 30) == renewed
    assert registry.statistics().announcements_kept == 2


def test_the_same_term_from_another_host_is_a_conflict() -> None:
    registry = Registry()
    registry.announce(make_announcement(), NOW)
    with pytest.raises(RegistryError) as caught:
        registry.announce(make_announcement(signer=STRANGER, now=NOW + 1), NOW + 1)
    assert caught.value.code is Refusal.TERM_CONFLICT


def test_a_moderator_may_announce_for_the_host_and_renew_its_own_announcement() -> None:
    registry = Registry()
    by_moderator = make_announcement(signer=MODERATOR, host=HOST)
    assert registry.announce(by_moderator, NOW) is Outcome.ADDED
    renewed = make_announcement(signer=MODERATOR, host=HOST, now=NOW + 1)
    assert registry.announce(renewed, NOW + 1) is Outcome.REPLACED
    by_host = make_announcement(now=NOW + 2)  # the host itself always may
    assert registry.announce(by_host, NOW + 2) is Outcome.REPLACED


def test_nobody_else_may_renew_a_room_at_its_term_even_for_its_host() -> None:
    registry = Registry()
    registry.announce(make_announcement(), NOW)
    for signer in (MODERATOR, STRANGER):  # the node cannot tell a moderator from a stranger
        hijack = make_announcement(signer=signer, host=HOST, now=NOW + 1,
                                   addresses=("203.0.113.66:4000",))
        with pytest.raises(RegistryError) as caught:
            registry.announce(hijack, NOW + 1)
        assert caught.value.code is Refusal.NOT_AUTHORIZED
    assert registry.lookup_id(ROOM, NOW + 1) == make_announcement()
    assert refused(registry, Refusal.NOT_AUTHORIZED) == 2


def test_a_higher_term_from_another_key_must_be_signed_by_its_own_host() -> None:
    registry = Registry()
    registry.announce(make_announcement(), NOW)
    successor = Identity.from_seed(bytes([9]) * 32, "successor")
    for forged in (
        make_announcement(signer=STRANGER, host=HOST, term=SECOND_TERM),  # for the old host
        make_announcement(signer=STRANGER, host=successor, term=SECOND_TERM),  # for another
    ):
        with pytest.raises(RegistryError) as caught:
            registry.announce(forged, NOW)
        assert caught.value.code is Refusal.NOT_HOST_SIGNED
    # The host itself (or its announcement's signer) may move on to a higher term,
    # and a successor announcing for itself takes over.
    assert registry.announce(make_announcement(term=SECOND_TERM), NOW) is Outcome.REPLACED
    third = SECOND_TERM.successor(rank=0, list_seq=9)
    taken = make_announcement(signer=successor, term=third)
    assert registry.announce(taken, NOW) is Outcome.REPLACED
    assert registry.lookup_id(ROOM, NOW) == taken


def test_changes_are_queued_only_when_asked_for() -> None:
    quiet = Registry()
    quiet.announce(make_announcement(), NOW)
    assert quiet.take_changes() == []
    registry = Registry(record_changes=True)
    ann = make_announcement()
    registry.announce(ann, NOW)
    registry.announce(ann, NOW)  # kept: no change
    withdrawal = create_withdrawal(HOST, room_id=ROOM, term=Term.first(), now=NOW)
    registry.withdraw(withdrawal, NOW)
    assert registry.take_changes() == [Stored(ann), Withdrawn(withdrawal)]
    assert registry.take_changes() == []


def test_a_restored_withdrawal_still_refuses_replays() -> None:
    registry = Registry()
    withdrawal = create_withdrawal(HOST, room_id=ROOM, term=Term.first(), now=NOW + 10)
    assert registry.restore_withdrawal(withdrawal, NOW + 20)
    with pytest.raises(RegistryError) as caught:
        registry.announce(make_announcement(), NOW + 20)
    assert caught.value.code is Refusal.WITHDRAWN
    assert not registry.restore_withdrawal(withdrawal, NOW + 10 + 3600 + 61)  # too old
    forged = attrs.evolve(withdrawal, withdrawn_at=NOW + 11)
    with pytest.raises(RegistryError) as caught:
        registry.restore_withdrawal(forged, NOW + 20)
    assert caught.value.code is Refusal.BAD_SIGNATURE


def test_a_full_registry_refuses_new_rooms_until_one_expires() -> None:
    registry = Registry(RegistryConfig(max_rooms=2))
    registry.announce(make_announcement(room=room_id(1), lifetime=100), NOW)
    registry.announce(make_announcement(room=room_id(2), lifetime=600), NOW)
    with pytest.raises(RegistryError) as caught:
        registry.announce(make_announcement(room=room_id(3)), NOW)
    assert caught.value.code is Refusal.REGISTRY_FULL
    # A room already present may still renew while the registry is full.
    assert registry.announce(make_announcement(room=room_id(2), now=NOW + 1), NOW + 1) \
        is Outcome.REPLACED
    later = NOW + 100
    assert registry.announce(make_announcement(room=room_id(3), now=later), later) \
        is Outcome.ADDED
    assert registry.lookup_id(room_id(1), later) is None
    assert registry.statistics().expired == 1


def test_too_many_addresses_for_this_node_are_refused() -> None:
    registry = Registry(RegistryConfig(max_addresses=2))
    three = tuple(f"192.0.2.1:{port}" for port in (1, 2, 3))
    with pytest.raises(RegistryError) as caught:
        registry.announce(make_announcement(addresses=three), NOW)
    assert caught.value.code is Refusal.TOO_MANY_ADDRESSES
    assert refused(registry, Refusal.TOO_MANY_ADDRESSES) == 1


def test_expired_rooms_vanish_from_lookups_and_are_swept() -> None:
    registry = Registry()
    registry.announce(make_announcement(lifetime=60), NOW)
    assert registry.lookup_name("jazz", NOW + 59) != []
    assert registry.lookup_id(ROOM, NOW + 60) is None
    assert registry.lookup_name("jazz", NOW + 60) == []
    assert len(registry) == 1
    assert registry.expire(NOW + 60) == 1
    assert len(registry) == 0
    assert registry.statistics().expired == 1


def test_name_lookups_are_bounded_and_busiest_first() -> None:
    registry = Registry(RegistryConfig(max_results=5))
    for n in range(12):
        registry.announce(make_announcement(room=room_id(n), name=f"Jazz {n}", listener_count=n),
                          NOW)
    found = registry.lookup_name("jazz", NOW)
    assert [a.listener_count for a in found] == [11, 10, 9, 8, 7]
    assert len(registry.lookup_name("", NOW, limit=3)) == 3
    assert len(registry.lookup_name("", NOW, limit=50)) == 5


def test_the_host_withdraws_and_a_replay_cannot_bring_the_room_back() -> None:
    registry = Registry()
    ann = make_announcement()
    registry.announce(ann, NOW)
    withdrawal = create_withdrawal(HOST, room_id=ROOM, term=Term.first(), now=NOW + 10)
    assert registry.withdraw(withdrawal, NOW + 10)
    assert registry.lookup_id(ROOM, NOW + 10) is None
    with pytest.raises(RegistryError) as caught:
        registry.announce(ann, NOW + 20)
    assert caught.value.code is Refusal.WITHDRAWN
    # A fresh announcement, signed after the withdrawal, is welcome.
    fresh = make_announcement(now=NOW + 30)
    assert registry.announce(fresh, NOW + 30) is Outcome.ADDED
    # ...and replaying the old withdrawal cannot remove it.
    with pytest.raises(RegistryError) as caught:
        registry.withdraw(withdrawal, NOW + 40)
    assert caught.value.code is Refusal.STALE_WITHDRAWAL
    assert registry.lookup_id(ROOM, NOW + 40) == fresh
    assert registry.statistics().withdrawals == 1


def test_only_the_host_or_signer_may_withdraw_and_only_with_a_valid_signature() -> None:
    registry = Registry()
    registry.announce(make_announcement(signer=MODERATOR, host=HOST), NOW)
    stranger = create_withdrawal(STRANGER, room_id=ROOM, term=Term.first(), now=NOW)
    with pytest.raises(RegistryError) as caught:
        registry.withdraw(stranger, NOW)
    assert caught.value.code is Refusal.NOT_AUTHORIZED
    forged = attrs.evolve(create_withdrawal(HOST, room_id=ROOM, term=Term.first(), now=NOW),
                          withdrawn_at=NOW + 1)
    with pytest.raises(RegistryError) as caught:
        registry.withdraw(forged, NOW)
    assert caught.value.code is Refusal.BAD_SIGNATURE
    future = create_withdrawal(HOST, room_id=ROOM, term=Term.first(), now=NOW + 120)
    with pytest.raises(RegistryError) as caught:
        registry.withdraw(future, NOW)
    assert caught.value.code is Refusal.NOT_YET_VALID
    assert len(registry) == 1
    assert registry.withdraw(create_withdrawal(MODERATOR, room_id=ROOM, term=Term.first(),
                                               now=NOW), NOW)


def test_a_withdrawal_from_an_older_term_is_refused() -> None:
    registry = Registry()
    registry.announce(make_announcement(term=SECOND_TERM), NOW)
    old = create_withdrawal(HOST, room_id=ROOM, term=Term.first(), now=NOW)
    with pytest.raises(RegistryError) as caught:
        registry.withdraw(old, NOW)
    assert caught.value.code is Refusal.STALE_TERM


def test_withdrawing_an_unknown_room_is_harmless() -> None:
    registry = Registry()
    withdrawal = create_withdrawal(HOST, room_id=ROOM, term=Term.first(), now=NOW)
    assert not registry.withdraw(withdrawal, NOW)
    assert registry.announce(make_announcement(now=NOW - 5), NOW) is Outcome.ADDED


def test_withdrawal_memory_is_forgotten_once_no_replay_could_still_be_valid() -> None:
    registry = Registry(RegistryConfig(max_lifetime=600))
    ann = make_announcement(lifetime=600)
    registry.announce(ann, NOW)
    registry.withdraw(create_withdrawal(HOST, room_id=ROOM, term=Term.first(), now=NOW), NOW)
    registry.expire(NOW + 600 + 60)
    assert registry.statistics().withdrawals_remembered == 1  # a replay could still be valid
    registry.expire(NOW + 600 + 61)
    assert registry.statistics().withdrawals_remembered == 0
