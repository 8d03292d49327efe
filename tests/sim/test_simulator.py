"""The simulator drives real peers: tampering is caught, clocks may differ, uplinks queue."""

from __future__ import annotations

import functools

import pytest

from mitalk_p2p.audio.sources import SyntheticSpeech
from mitalk_p2p.core.crypto_memo import CryptoMemo, sharing_crypto_results
from mitalk_p2p.core.identity import Domain, Identity
from mitalk_p2p.core.sender_keys import (
    SeededKeySource,
    SimulatedKeysRefused,
    refuse_simulated_keys,
    system_key_source,
)
from mitalk_p2p.sim import trace as t
from mitalk_p2p.sim.network import LinkModel, Uplink
from mitalk_p2p.sim.simulator import PeerSpec, Simulator


def room(
    count: int,
    *,
    specs: dict[str, PeerSpec] | None = None,
    fanout: int = 4,
    seed: int = 3,
) -> Simulator:
    names = ["host"] + [f"p{i:03}" for i in range(count)]
    chosen = specs or {}
    sim = Simulator.create(
        [chosen.get(n, PeerSpec(name=n)) for n in names],
        seed=seed,
        link=LinkModel(latency_ms=5),
        fanout=fanout,
    )
    sim.create_room("host")
    for i, name in enumerate(names[1:]):
        sim.call_at(0.02 * (i + 1), functools.partial(_join_by_invite, sim, name))
    sim.run_until(0.02 * count + 2.0)
    return sim


def _join_by_invite(sim: Simulator, name: str) -> None:
    sim.join(name, sim.invite("host"), via="host")


def heard(sim: Simulator, listener: str, speaker: str = "host") -> list[t.FrameDelivered]:
    return [d for d in sim.trace.deliveries() if d.listener == listener and d.speaker == speaker]


def test_a_tampered_frame_is_refused_even_with_the_shared_memo() -> None:
    with sharing_crypto_results() as memo:
        sim = room(3)
        sim.tap("p002")
        sim.speak("host", SyntheticSpeech(1), 1.0, codec="synthetic")
        sim.run_for(1.5)
        _, _, genuine = sim.tapped("p002")[-1]
        forged = bytearray(genuine)
        forged[16] ^= 0x80  # a header bit: the frame now looks new, so only its signature fails
        before = sim["p000"].peer.statistics().media.dropped.get("bad-signature", 0)  # type: ignore[union-attr]
        sim.inject_datagram("p000", bytes(forged), source="p001", delay=0.01)
        sim.inject_datagram("p000", genuine, source="p001", delay=0.02)
        sim.run_for(0.1)
        stats = sim["p000"].peer.statistics().media  # type: ignore[union-attr]
        assert stats.dropped.get("bad-signature", 0) == before + 1
        assert stats.dropped.get("duplicate", 0) >= 1
        assert memo.hits > memo.misses


def test_the_memo_answers_exactly_what_the_primitive_answers() -> None:
    signer = Identity.from_seed(bytes(32), "x")
    signature = signer.sign(Domain.HEARTBEAT, b"payload")
    key = signer.public_key
    with sharing_crypto_results(CryptoMemo(max_entries=4)) as memo:
        for _ in range(3):
            assert key.verify(Domain.HEARTBEAT, b"payload", signature)
            assert not key.verify(Domain.HEARTBEAT, b"payloae", signature)
            assert not key.verify(Domain.INVITE, b"payload", signature)
        assert memo.misses == 3 and memo.hits == 6
        for i in range(10):  # overflowing the memo clears it, and answers stay right
            assert not key.verify(Domain.HEARTBEAT, bytes([i]), signature)
        assert key.verify(Domain.HEARTBEAT, b"payload", signature)


def test_a_listener_whose_key_is_far_behind_asks_for_it() -> None:
    sim = room(70, fanout=8)
    sim.speak("host", SyntheticSpeech(1), 1.0, codec="synthetic")
    sim.run_for(2.0)
    first = heard(sim, "p000")
    assert len(first) == 50
    assert len(heard(sim, "p069")) == 50


def test_peers_with_skewed_clocks_still_talk() -> None:
    specs = {
        "host": PeerSpec(name="host", clock_offset=45.0),
        "p001": PeerSpec(name="p001", clock_offset=-45.0),
    }
    sim = room(3, specs=specs)
    sim.speak("host", SyntheticSpeech(1), 1.0, codec="synthetic")
    sim.run_for(1.5)
    for name in ("p000", "p001", "p002"):
        assert len(heard(sim, name)) == 50


def test_an_overloaded_relay_delays_its_children() -> None:
    slow = {"p000": PeerSpec(name="p000", relay_capacity=6, uplink=Uplink(kbps=64, queue_ms=400))}
    sim = room(8, specs=slow, fanout=2)
    tree = sim["host"].peer.coordinator.tree  # type: ignore[union-attr]
    assert tree is not None
    slow_key = sim["p000"].identity.public_key
    below = [sim.name_of(k) for k in tree.children(slow_key)]
    sim.speak("host", SyntheticSpeech(1), 2.0, codec="synthetic")
    sim.run_for(2.5)
    child = below[0]
    assert child is not None
    late = sorted(d.latency for d in heard(sim, child))
    direct = sorted(d.latency for d in heard(sim, "p000"))
    assert late[len(late) // 2] > direct[len(direct) // 2] + 0.010
    assert sim.network.backlog(sim["p000"].index, sim.now - 1.0) >= 0.0


def test_the_runtime_refuses_seeded_keys() -> None:
    with pytest.raises(SimulatedKeysRefused, match="simulator only"):
        refuse_simulated_keys(SeededKeySource(b"x" * 32))
    assert refuse_simulated_keys(system_key_source) is system_key_source
