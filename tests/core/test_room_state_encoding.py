"""The cached member rows and key order never let the encoding drift from the state."""

from __future__ import annotations

import pytest

from mitalk_p2p.core.errors import WireError
from mitalk_p2p.core.identity import Identity
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.ops import Admit, InviteToStage, Kick, RaiseHand
from mitalk_p2p.core.roles import Role
from mitalk_p2p.core.room_state import ZERO_NONCE, RoomState


def _fresh_encoding(state: RoomState) -> bytes:
    """The encoding of an identical state that has never cached anything."""
    return RoomState.decode(state.encode()).encode()


def test_encoding_follows_every_kind_of_change() -> None:
    host = Identity.generate("x").public_key
    others = [Identity.generate("x").public_key for _ in range(5)]
    state = RoomState.create(RoomId(bytes(16)), "room", "topic", host, "host")
    encodings = {state.encode()}
    seq = 0
    for key in others:
        seq += 1
        state.apply(host, Admit(key, f"p{seq}", Role.LISTENER, ZERO_NONCE), seq)
        encodings.add(state.encode())
    seq += 1
    state.apply(others[0], RaiseHand(), seq)
    encodings.add(state.encode())
    seq += 1
    state.apply(host, InviteToStage(others[1]), seq)
    encodings.add(state.encode())
    seq += 1
    state.apply(host, Kick(others[2]), seq)
    encodings.add(state.encode())
    # Fields changed outside apply() invalidate the row too.
    state.members[others[3]].last_counter = 7
    encodings.add(state.encode())
    state.members[others[3]].name = "renamed"
    encodings.add(state.encode())

    assert len(encodings) == 11  # every step changed the bytes
    assert state.encode() == _fresh_encoding(state)
    assert RoomState.decode(state.encode()) == state


def test_non_canonical_member_flags_are_refused() -> None:
    host = Identity.generate("x").public_key
    state = RoomState.create(RoomId(bytes(16)), "room", "", host, "host")
    state.members[host].muted = True
    data = bytearray(state.encode())
    # The muted flag is the second of three flag bytes before the final u64 counter.
    flag_at = data.index(b"host") + len("host") + 1 + 8 + 8 + 1
    assert data[flag_at] == 1
    data[flag_at] = 2
    with pytest.raises(WireError, match="neither 0 nor 1"):
        RoomState.decode(bytes(data))


def test_key_order_follows_joins_and_removals_one_at_a_time() -> None:
    host = Identity.generate("h").public_key
    state = RoomState.create(RoomId(bytes(16)), "room", "", host, "host")
    keys = [Identity.generate("x").public_key for _ in range(60)]
    seq = 0
    for key in keys:
        seq += 1
        state.apply(host, Admit(key, f"p{seq}", Role.LISTENER, ZERO_NONCE), seq)
        assert state.encode() == _fresh_encoding(state)
    for key in keys[::3]:
        seq += 1
        state.apply(host, Kick(key), seq)
        assert state.encode() == _fresh_encoding(state)
