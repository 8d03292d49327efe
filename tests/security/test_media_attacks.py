"""Attacks on the media plane: relays that withhold, corrupt, forge or replay frames, counters
and generations from nowhere, a kicked listener that keeps listening, a listener that speaks.

Rooms run in simulated time (:class:`~mitalk_p2p.sim.peer_net.PeerNet`): whole peers, a
virtual clock, and misbehaving peers made by passing their datagrams through a function
(``net.tamper``).  Each test asserts what listeners *played*, not only what they counted.
One test at the end attacks a real listener on 127.0.0.1.
"""

from __future__ import annotations

import functools
import random
import tracemalloc
from collections.abc import Callable, Sequence

import attrs
import pytest
import trio

from mitalk_p2p.core import media as media_module
from mitalk_p2p.core import sender_keys as sender_keys_module
from mitalk_p2p.core.delivery import LONG_GAP, MAX_GAP, MIN_EXPECTED, DeliveryMonitor
from mitalk_p2p.core.errors import WireError
from mitalk_p2p.core.identity import Identity, PublicKey
from mitalk_p2p.core.incoming import MAX_PENDING, SEQ_SLACK
from mitalk_p2p.core.jitter import PlayFrame
from mitalk_p2p.core.media import MediaConfig
from mitalk_p2p.core.media_events import (
    AudioOut,
    FrameReceived,
    ParentChanged,
    SendDatagram,
    SenderKeyChanged,
)
from mitalk_p2p.core.media_frame import (
    FRAME_TYPE,
    HEADER_SIZE,
    FrameHeader,
    KeyGeneration,
    frame_signature_valid,
    open_frame,
    parse_header,
    room_tag,
    seal_frame,
)
from mitalk_p2p.core.media_messages import (
    PROBE_TYPE,
    KeyRequest,
    Neighbor,
    ParentSwitched,
    Probe,
    ProbeRole,
    SwitchReason,
    TreePosition,
    decode_media_message,
    encode_media_message,
    encode_probe,
)
from mitalk_p2p.core.ops import Kick, MoveToAudience, Mute
from mitalk_p2p.core.peer import Peer, PeerEvent
from mitalk_p2p.core.relay_scores import RelayScores
from mitalk_p2p.core.replica import SendTo
from mitalk_p2p.core.sender_keys import SenderKey
from mitalk_p2p.core.tree_coordinator import UPSTREAM_GRACE
from mitalk_p2p.core.tree_links import TreeLinks
from mitalk_p2p.core.witness import MAX_WITNESSED, WITNESS_TYPE, wrap
from mitalk_p2p.sim.peer_net import LinkModel, Tamper

from ..core.media_fixtures import FRAME, PAYLOAD, MediaRoom, host_tree, media_room, subtree
from ..core.room_fixtures import ROOM

CONFIG = MediaConfig(report_frames=True)
REPAIR_DEADLINE = CONFIG.lossy_window + CONFIG.probe_interval
"""How long after a relay starts withholding frames its children may take to leave it."""
SPARSE_DEADLINE = 3 * CONFIG.lossy_window + CONFIG.probe_interval
"""The same for a relay that passes on a frame every second or so: three gaps in a row."""
EXCUSED_DEADLINE = 2.5 * CONFIG.withhold_seconds + CONFIG.probe_interval
"""The same for a relay that passes on nothing and tells its children that it lags itself."""


# --- watching a room --------------------------------------------------------------------


@attrs.define
class Watch:
    """Every event each peer of a room reported from now on, with its virtual time."""

    room: MediaRoom
    log: list[tuple[PublicKey, PeerEvent, float]] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self.room.net.on_event = self._record

    def _record(self, key: PublicKey, event: PeerEvent, now: float) -> None:
        self.log.append((key, event, now))

    def of(self, key: PublicKey) -> list[tuple[PeerEvent, float]]:
        return [(event, now) for k, event, now in self.log if k == key]

    def received(self, key: PublicKey, speaker: PublicKey) -> list[FrameReceived]:
        return [e for e, _ in self.of(key) if isinstance(e, FrameReceived) and e.speaker == speaker]

    def played(self, key: PublicKey, speaker: PublicKey | None = None) -> list[PlayFrame]:
        """Frames ``key`` decoded and played (concealment and FEC slots left out)."""
        return [
            e.playout
            for e, _ in self.of(key)
            if isinstance(e, AudioOut)
            and isinstance(e.playout, PlayFrame)
            and (speaker is None or e.speaker == speaker)
        ]

    def switches(self, key: PublicKey) -> list[tuple[ParentChanged, float]]:
        return [(e, t) for e, t in self.of(key) if isinstance(e, ParentChanged)]


def everyone(room: MediaRoom) -> list[Peer]:
    return [room.host, *room.listeners]


def dropped(peer: Peer, reason: str) -> int:
    return peer.statistics().media.dropped.get(reason, 0)


def index_of(room: MediaRoom, key: PublicKey) -> int:
    state = room.host.state
    assert state is not None
    return state.members[key].joined_seq


def relay_with_children(room: MediaRoom, least: int = 2, *, deep: bool = False) -> PublicKey:
    """A child of the host relaying to ``least`` members or more (who relay too if ``deep``)."""
    tree = host_tree(room)
    return next(
        k
        for k in tree.children(room.host.me)
        if len(tree.children(k)) >= least
        and (not deep or all(tree.children(c) for c in tree.children(k)))
    )


def assert_only_genuine_audio_played(watch: Watch, room: MediaRoom) -> None:
    """Nobody played a payload the speaker did not send, or any frame twice."""
    for peer in everyone(room):
        played = watch.played(peer.me)
        assert all(p.payload == PAYLOAD for p in played), peer
        by_speaker: dict[PublicKey, list[int]] = {}
        for event, _ in watch.of(peer.me):
            if isinstance(event, AudioOut) and isinstance(event.playout, PlayFrame):
                by_speaker.setdefault(event.speaker, []).append(event.playout.seq)
        for seqs in by_speaker.values():
            assert len(seqs) == len(set(seqs)), peer


def speak_together(room: MediaRoom, names: Sequence[str], seconds: float) -> None:
    """Each of ``names`` sends one frame every 20 ms for ``seconds`` while the network runs."""
    begin = room.net.now
    for i in range(round(seconds / FRAME)):
        room.net.run_until(begin + i * FRAME)
        for name in names:
            peer = room[name]
            room.net.act(peer.me, functools.partial(_send, now=room.net.now))


def _send(peer: Peer, *, now: float) -> bool:
    return peer.send_frame(PAYLOAD, now, now)


# --- misbehaving relays ------------------------------------------------------------------


def on_frames(change: Callable[[SendDatagram], Sequence[SendDatagram]]) -> Tamper:
    """Apply ``change`` to the frames a peer sends; its probes (and the witness samples it
    sends as a backup parent) go out untouched."""

    def tamper(datagram: SendDatagram) -> Sequence[SendDatagram]:
        if datagram.data[:1] == bytes([FRAME_TYPE]):
            return change(datagram)
        return (datagram,)

    return tamper


def withhold(keep_every: int | None, speaker: int | None = None) -> Tamper:
    """Pass on one frame in ``keep_every``, or none at all (of ``speaker``'s only, if given)."""

    def change(datagram: SendDatagram) -> Sequence[SendDatagram]:
        header = parse_header(datagram.data)
        if speaker is not None and header.speaker != speaker:
            return (datagram,)
        return (datagram,) if keep_every and header.seq % keep_every == 0 else ()

    return on_frames(change)


@attrs.frozen
class Sample:
    sender: PublicKey
    to: PublicKey
    at: float


def record_witness_samples(room: MediaRoom) -> list[Sample]:
    """Every witness sample any peer sends from now on (other tampering still applies)."""
    samples: list[Sample] = []
    by_address = {peer.media.address: key for key, peer in room.net.peers.items()}

    def recording(key: PublicKey, datagram: SendDatagram) -> Sequence[SendDatagram]:
        if datagram.data[:1] == bytes([WITNESS_TYPE]):
            samples.append(Sample(key, by_address[datagram.address], room.net.now))
        return (datagram,)

    for key in room.net.peers:
        room.net.tamper[key] = functools.partial(recording, key)
    return samples


def flip(offset: int) -> Tamper:
    """Flip one bit at ``offset`` (negative: from the end) of every frame."""

    def change(datagram: SendDatagram) -> Sequence[SendDatagram]:
        data = bytearray(datagram.data)
        data[offset] ^= 0x08
        return (SendDatagram(datagram.address, bytes(data)),)

    return on_frames(change)


def truncate() -> Tamper:
    return on_frames(lambda d: (SendDatagram(d.address, d.data[:-1]),))


def forge(forger: Identity, stolen: SenderKey) -> Tamper:
    """Replace each frame by one with the same header, other audio, signed by ``forger``."""

    def change(datagram: SendDatagram) -> Sequence[SendDatagram]:
        header = parse_header(datagram.data)
        fake = seal_frame(
            header, b"lies" * 10, room_id=ROOM, sender_key=stolen.secret, speaker=forger
        )
        return (SendDatagram(datagram.address, fake),)

    return on_frames(change)


# --- 1. a relay that withholds frames ----------------------------------------------------


@pytest.mark.parametrize("passes_on", [10, None], ids=["one-frame-in-ten", "nothing"])
def test_children_leave_a_relay_that_withholds_frames_within_the_repair_deadline(
    passes_on: int | None,
) -> None:
    room = media_room(12, fanout=3, config=CONFIG)
    tree = host_tree(room)
    relay = relay_with_children(room, 3)
    victims = tree.children(relay)
    below = subtree(room, relay)
    watch = Watch(room)
    samples = record_witness_samples(room)
    room.speak("host", 1.0)
    started = room.net.now
    # It keeps answering every probe.  Passing on nothing, it leaves no gap in the counters:
    # only the samples from the children's backups show that the host is talking.
    room.net.tamper[relay] = withhold(passes_on)
    room.speak("host", 3.0)
    room.net.run_for(0.5)

    last = room.host.media.next_seq - 1
    for victim in victims:
        [(change, when)] = watch.switches(victim)
        backup = tree.position(victim).backup
        assert change.reason == "lossy"
        assert change.parent == backup
        assert when - started <= REPAIR_DEADLINE, when - started
        peer = room.net.peers[victim]
        assert peer.media.parent != relay
        if passes_on is None:
            # The evidence: samples its backup sent it, and nothing else.
            assert any(s.sender == backup and s.to == victim and s.at < when for s in samples)
            assert peer.statistics().media.witness_frames_received > 0
        # Now its parent, the old backup takes it as a child and samples nothing for it.
        assert backup is not None
        new_parent = room.net.peers[backup].media
        assert victim in new_parent.children and victim not in new_parent._links.witness
    # Their own children saw the same lag, were told that their parent was on it, and stayed.
    lossy = {key for key, change, _ in _changes(watch) if change.reason == "lossy"}
    assert lossy == set(victims)
    for key in below:
        # Every frame sent once the children left reached the whole subtree, and was played.
        resumed = started + REPAIR_DEADLINE + 0.1
        heard = [e.seq for e in watch.received(key, room.host.me) if e.arrived >= resumed]
        assert heard == list(range(heard[0], last + 1)), room.net.name(key)
        played = {p.seq for p in watch.played(key, room.host.me)}
        assert set(heard) <= played
    assert_only_genuine_audio_played(watch, room)

    coordinator = room.host.coordinator
    assert coordinator is not None
    assert coordinator.relay_score(relay) < coordinator.scores.demote_below
    scores = room.host.statistics().relay_scores
    assert scores is not None
    assert scores.demoted == (relay,)
    assert scores.accusations_accepted == len(victims)
    assert host_tree(room).children(relay) == ()
    # Samples went only from a member's backup to that member, while the plan held.
    plan = {k: tree.position(k).backup for k in tree.members}
    early = [s for s in samples if s.at < started]
    assert early and all(plan[s.to] == s.sender for s in early)


@pytest.mark.parametrize("passes_on", [20, None], ids=["one-frame-in-twenty", "nothing"])
def test_a_relay_that_silences_one_speaker_is_left_though_others_get_through(
    passes_on: int | None,
) -> None:
    room = media_room(12, fanout=3, config=CONFIG)
    tree = host_tree(room)
    relay = relay_with_children(room, 3)
    outside = next(k for k in tree.children(room.host.me) if k != relay)
    guest = room.net.name(outside)
    room.to_stage(guest)
    watch = Watch(room)
    speak_together(room, ["host", guest], 1.0)
    started = room.net.now
    room.net.tamper[relay] = withhold(passes_on, speaker=index_of(room, outside))
    speak_together(room, ["host", guest], 2.5)
    room.net.run_for(0.5)

    for victim in tree.children(relay):
        [(change, when)] = watch.switches(victim)
        assert change.reason == "lossy" and when - started <= REPAIR_DEADLINE, when - started
    for key in subtree(room, relay):
        late = [e.seq for e in watch.received(key, outside) if e.arrived >= started + 1.5]
        assert late == list(range(late[0], late[0] + len(late))) and len(late) >= 40
    assert_only_genuine_audio_played(watch, room)
    assert room.host.coordinator is not None
    assert room.host.coordinator.relay_score(relay) < 0.5


def test_a_relay_that_claims_to_be_starved_itself_buys_only_a_bounded_delay() -> None:
    """It passes on nothing, and every answer to its children says that the lag is being
    dealt with above it.  They allow it more time, and then leave anyway."""
    room = media_room(12, fanout=3, config=CONFIG)
    tree = host_tree(room)
    relay = relay_with_children(room, 3)
    victims = tree.children(relay)
    watch = Watch(room)
    room.speak("host", 1.0)

    def lie(datagram: SendDatagram) -> Sequence[SendDatagram]:
        if datagram.data[:1] == bytes([FRAME_TYPE]):
            return ()
        if datagram.data[:1] == bytes([PROBE_TYPE]):
            probe = Probe.decode(datagram.data)
            if probe.role is ProbeRole.PARENT:
                return (SendDatagram(datagram.address, attrs.evolve(probe, lagging=True).encode()),)
        return (datagram,)

    started = room.net.now
    room.net.tamper[relay] = lie
    room.speak("host", 3.5)
    for victim in victims:
        [(change, when)] = watch.switches(victim)
        assert change.reason == "lossy" and change.parent == tree.position(victim).backup
        assert REPAIR_DEADLINE < when - started <= EXCUSED_DEADLINE, when - started
    assert room.host.coordinator is not None
    assert room.host.coordinator.relay_score(relay) < 0.5


def test_a_relay_that_passes_on_a_frame_now_and_then_is_left() -> None:
    """One frame in 40 (1.25 a second): too few for the loss in one window to mean anything,
    and often enough to keep the witness samples from running far ahead.  Each gap is as long
    as a repair upstream, but a repair makes one, and this makes one after another."""
    room = media_room(12, fanout=3, config=CONFIG)
    tree = host_tree(room)
    relay = relay_with_children(room, 3)
    victims = tree.children(relay)
    watch = Watch(room)
    room.speak("host", 1.0)
    started = room.net.now
    room.net.tamper[relay] = withhold(40)
    room.speak("host", 4.0)
    room.net.run_for(0.3)
    for victim in victims:
        [(change, when)] = watch.switches(victim)
        assert change.reason == "lossy" and change.parent == tree.position(victim).backup
        assert when - started <= SPARSE_DEADLINE, when - started
        heard = [e.seq for e in watch.received(victim, room.host.me) if e.arrived > when + 0.1]
        assert heard == list(range(heard[0], room.host.media.next_seq))
    assert {key for key, change, _ in _changes(watch) if change.reason == "lossy"} == set(victims)
    assert room.host.coordinator is not None
    assert room.host.coordinator.relay_score(relay) < 0.5


@pytest.mark.parametrize("cause", ["relay-crash", "lossy-network"])
def test_honest_relays_are_not_blamed_for_a_repair_upstream_or_a_lossy_network(
    cause: str,
) -> None:
    if cause == "relay-crash":
        room = media_room(40, fanout=2, config=CONFIG)
        watch = Watch(room)
        room.speak("host", 1.0)
        tree = host_tree(room)
        crashed = next(k for k in tree.children(room.host.me) if len(subtree(room, k)) >= 6)
        room.net.crash(crashed)
        room.speak("host", 4.0)
        # Orphans moved; their own children saw one long gap and stayed.
        assert any(e.reason == "silent" for _, e, _ in _changes(watch))
    else:
        link = LinkModel(latency=0.040, jitter=0.030, loss=0.20)
        room = media_room(30, fanout=2, link=link, seed=3, config=CONFIG)
        assert host_tree(room).max_depth >= 5
        watch = Watch(room)
        room.speak("host", 12.0)
    assert [e for _, e, _ in _changes(watch) if e.reason == "lossy"] == []
    scores = room.host.statistics().relay_scores
    assert scores is not None and scores.scores == {} and scores.demoted == ()
    # The witness samples were flowing all along: the defence was on, and stayed quiet.
    stats = [p.statistics().media for p in everyone(room)]
    assert sum(m.witness_frames_received > 0 for m in stats) >= len(stats) // 2
    # About one frame in 32 of the speaker's stream per member, a little more while a parent
    # lags or just after a backup changed: a few percent of the audio.
    nominal = room.host.media.next_seq * len(stats) / CONFIG.witness_stride
    assert sum(m.witness_frames_sent for m in stats) < 2 * nominal


def test_a_long_outage_upstream_is_not_taken_for_a_dropping_relay() -> None:
    room = media_room(20, fanout=3, config=CONFIG)
    relay = relay_with_children(room, 3, deep=True)
    below = subtree(room, relay)
    backup = host_tree(room).position(relay).backup
    watch = Watch(room)
    room.speak("host", 1.0)
    # The host passes nothing to the relay for 1.5 s (it still answers its probes), then
    # everything again.  The relay's backup shows it the host talking: it leaves the host.
    # Below it, everyone sees the same lag, but the relay says it is on it, and they stay.
    started = room.net.now
    cut = room.net.peers[relay].media.address
    room.net.tamper[room.host.me] = on_frames(lambda d: () if d.address == cut else (d,))
    room.speak("host", 1.5)
    del room.net.tamper[room.host.me]
    resumed = room.net.now
    room.speak("host", 2.0)
    room.net.run_for(0.3)
    [(change, when)] = [(c, t) for c, t in watch.switches(relay) if c.reason != "assigned"]
    assert change.reason == "lossy" and change.parent == backup
    assert when - started <= REPAIR_DEADLINE
    assert [k for k, e, _ in _changes(watch) if e.reason == "lossy"] == [relay]
    for key in below | {relay}:
        heard = [e.seq for e in watch.received(key, room.host.me) if e.arrived > resumed + 0.05]
        assert heard == list(range(heard[0], room.host.media.next_seq))
    scores = room.host.statistics().relay_scores
    assert scores is not None and scores.accusations_accepted == 0  # the root has no score


def test_withheld_frames_are_not_held_against_a_relay_that_just_moved() -> None:
    room = media_room(20, fanout=3, config=CONFIG)
    room.net.run_for(UPSTREAM_GRACE)
    tree = host_tree(room)
    relay = relay_with_children(room, 3, deep=True)
    first, second, *_ = tree.children(relay)
    backup = tree.position(relay).backup
    assert backup is not None

    def report(sender: PublicKey, old: PublicKey, new: PublicKey, why: SwitchReason) -> None:
        message = encode_media_message(ParentSwitched(1, old, new, why))
        room.net.act(room.host.me, lambda p: p.receive_link(message, sender, room.net.now))

    # The relay itself just moved: the gaps its children saw are the repair's.
    report(relay, room.host.me, backup, SwitchReason.SILENT)
    room.net.run_for(0.1)
    assert host_tree(room).parent(relay) == backup
    first_backup = host_tree(room).position(first).backup
    assert first_backup is not None
    report(first, relay, first_backup, SwitchReason.LOSSY)
    coordinator = room.host.coordinator
    assert coordinator is not None
    assert coordinator.relay_score(relay) == 1.0
    # Once the relay has sat still for a while, the same complaint counts.
    room.net.run_for(UPSTREAM_GRACE)
    second_backup = host_tree(room).position(second).backup
    assert second_backup is not None and host_tree(room).parent(second) == relay
    report(second, relay, second_backup, SwitchReason.LOSSY)
    assert coordinator.relay_score(relay) < 1.0
    scores = room.host.statistics().relay_scores
    assert scores is not None
    assert scores.accusations_refused == {"upstream-moved": 1}
    assert scores.accusations_accepted == 1


def _changes(watch: Watch) -> list[tuple[PublicKey, ParentChanged, float]]:
    return [(k, e, t) for k, e, t in watch.log if isinstance(e, ParentChanged)]


def test_the_delivery_record_tells_withholding_from_reordering_and_a_repair() -> None:
    threshold = CONFIG.lossy_threshold

    def monitor_after(arrivals: list[tuple[int, int, float]]) -> DeliveryMonitor:
        monitor = DeliveryMonitor(CONFIG.lossy_window)
        for speaker, seq, when in arrivals:
            monitor.note(speaker, seq, when)
        return monitor

    frames = [(0, seq, seq * FRAME) for seq in range(200)]
    swapped = [frames[i ^ 1] for i in range(200)]  # every pair arrives the wrong way round
    due, loss = monitor_after(swapped).loss(4.0)
    assert due >= MIN_EXPECTED and loss == 0.0
    # One long gap (a repair upstream), then the fewest frames that make a verdict.
    gap = [*frames[:5], *frames[150 : 150 + MIN_EXPECTED - MAX_GAP]]
    assert not monitor_after(gap).lossy(frames[159][2], threshold)
    sparse = frames[::6]  # five frames in six withheld
    assert monitor_after(sparse).lossy(4.0, threshold)
    # The same loss on a path whose probes lose as much is the network's, not the relay's.
    assert not monitor_after(sparse).lossy(4.0, threshold, expected=1 / 6)
    # One speaker withheld, another passed in full: judged apart.
    both = sorted([*sparse, *((1, seq, when) for _, seq, when in frames)], key=lambda f: f[2])
    assert monitor_after(both).lossy(4.0, threshold)
    # State stays bounded however long it runs: one entry per speaker, a few buckets each.
    long_run = monitor_after([(seq % 3, seq, seq * FRAME) for seq in range(50_000)])
    assert long_run.speakers == 3
    assert all(len(k.counts) <= long_run.buckets for k in long_run._speakers.values())


def test_the_witness_record_tells_withholding_from_a_longer_path_a_repair_and_a_pause() -> None:
    speaker = 0

    def run(parent: Sequence[int], delay: float, samples: Sequence[int]) -> list[int]:
        """The parent passes on ``parent`` ``delay`` late; the excess lag at each sample."""
        monitor = DeliveryMonitor(CONFIG.lossy_window)
        events = [(seq * FRAME + delay, 0, seq) for seq in parent]
        events += [(seq * FRAME, 1, seq) for seq in samples]
        lags = []
        for when, witness, seq in sorted(events):
            if not witness:
                monitor.note(speaker, seq, when)
            elif monitor.witness_sample(speaker, seq, when):
                lags.append(monitor.note_witness(speaker, seq, when))
            else:
                lags.append(0)  # the parent had it already: no news, and nothing to check
        return lags

    sampled = list(range(0, 1000, 32))
    # A parent whose path is five frames longer than the backup's lags that much all along:
    # once measured (a lag too small to mention), that standing lag is taken off.
    longer = run(range(1000), 5 * FRAME, sampled)
    assert longer[1] == 5 and max(longer[2:]) <= 1
    # A parent that stops passing on anything: the lag grows with the speaker's counter.
    withheld = run(range(300), 0.0, sampled)
    assert withheld[-1] > 600 and next(lag for lag in withheld if lag > 0) < 32
    # One long gap (a repair above the parent), then a clean stream: never near a verdict.
    repaired = run([*range(300), *range(345, 1000)], 5 * FRAME, range(0, 1000, 4))
    assert 40 <= max(repaired) < CONFIG.withhold_seconds / FRAME
    # A pause in speech moves no counter, so it shows no lag however long it is.
    frames = [*range(300), *range(300, 600)]
    monitor = DeliveryMonitor(CONFIG.lossy_window)
    for seq in frames:
        monitor.note(speaker, seq, seq * FRAME + (60.0 if seq >= 300 else 0.0))
    assert not monitor.witness_sample(speaker, 320, 66.0)  # already passed on: not checked
    assert monitor.lag(66.0, fresh=2.0) == 0
    # A relay that delays every frame to build a standing lag gets at most ``max_floor`` off.
    late = run(range(1000), 60 * FRAME, sampled)
    assert min(late[3:]) == 60 - DeliveryMonitor().max_floor


def test_long_gaps_one_after_another_are_withholding_but_one_is_a_repair() -> None:
    def monitor_after(gaps: int, gap: int) -> DeliveryMonitor:
        monitor, seq = DeliveryMonitor(CONFIG.lossy_window), 0
        for _ in range(gaps + 1):
            monitor.note(0, seq, seq * FRAME)
            seq += gap + 1
        return monitor

    gap = 39  # one frame in forty passed on
    now = 3 * (gap + 1) * FRAME
    assert monitor_after(3, gap).lossy(now, CONFIG.lossy_threshold)
    assert not monitor_after(1, gap).lossy(now, CONFIG.lossy_threshold)
    # Gaps that a lossy path explains are no verdict: the loss already explains them.
    assert not monitor_after(3, gap).lossy(now, CONFIG.lossy_threshold, expected=0.4)
    assert gap * 0.4 < LONG_GAP <= gap
    # Long ago is forgotten.
    assert not monitor_after(3, gap).lossy(now + 3 * CONFIG.lossy_window, CONFIG.lossy_threshold)


def _links(me: PublicKey) -> TreeLinks:
    return TreeLinks(me, room_tag(ROOM))


def _witness_request(sender: PublicKey, *, lagging: bool = False) -> Probe:
    return Probe(room_tag(ROOM), sender, 1, ProbeRole.WITNESS, 1, 0, 0, lagging=lagging)


def test_a_backup_samples_only_for_members_that_ask_and_for_few_of_them() -> None:
    keys = [Identity.from_seed(bytes([i + 1]) * 32, f"m{i}").public_key for i in range(40)]
    me, parent, child, *others = keys
    links = _links(me)
    position = TreePosition(1, Neighbor(parent, "parent"), None, (Neighbor(child, "child"),))
    links.apply_position(position, 0.0)
    table = links.witness
    # Tree neighbours get every frame anyway; a request is never answered.
    assert links.on_probe(_witness_request(parent), "parent", 0.0) == []
    assert links.on_probe(_witness_request(child), "child", 0.0) == []
    assert len(table) == 0 and table.stride_now == 0
    for key in others:
        assert links.on_probe(_witness_request(key), f"at-{key.short}", 0.0) == []
    assert len(table) == MAX_WITNESSED
    assert table.refused == len(others) - MAX_WITNESSED  # counted in statistics().media.dropped
    assert table.stride_now == CONFIG.witness_stride

    def sampled(seq: int, now: float) -> list[PublicKey]:
        """Whom a frame of speaker 0 goes to as a sample (the media session's test, then)."""
        if not table.stride_now or seq < table.next_sample.get(0, 0):
            return []
        return [key for key, _ in table.sample(0, seq, now)]

    # The first frame to arrive in each run of 32 counters, even when counter 32 is lost.
    assert len(sampled(0, 0.1)) == MAX_WITNESSED
    assert sampled(5, 0.1) == [] and sampled(31, 0.1) == []
    assert len(sampled(33, 0.1)) == MAX_WITNESSED
    # A member whose parent lags gets one frame in four for a moment; the others do not.
    first = others[0]
    links.on_probe(_witness_request(first, lagging=True), f"at-{first.short}", 1.0)
    assert table.stride_now == CONFIG.witness_dense_stride
    assert sampled(40, 1.1) == [first]
    assert sampled(42, 1.1) == [] and sampled(44, 1.1) == [first]
    assert len(sampled(64, 1.1)) == MAX_WITNESSED
    links.tick(1.5)
    assert table.stride_now == CONFIG.witness_stride
    assert sampled(68, 1.5) == [] and sampled(90, 1.5) == []
    assert len(sampled(100, 1.5)) == MAX_WITNESSED
    # A member whose backup changed says so; that is believed only from its own address.
    second = others[1]
    end = Probe(room_tag(ROOM), second, 1, ProbeRole.WITNESS_END, 3, 0, 0)
    links.on_probe(end, "elsewhere", 1.6)
    assert second in table
    links.on_probe(end, f"at-{second.short}", 1.6)
    assert second not in table
    # A member that becomes a child is no longer sampled for; requests run out.
    links.on_probe(Probe(room_tag(ROOM), first, 1, ProbeRole.CHILD, 2, 0, 0), "new", 2.0)
    assert first in links.children and first not in table
    links.tick(table.lease + 1.0)
    assert len(table) == 0 and table.stride_now == 0


def test_samples_are_asked_only_of_a_backup_that_is_neither_parent_nor_child() -> None:
    me, parent, child, backup = (
        Identity.from_seed(bytes([i + 1]) * 32, f"m{i}").public_key for i in range(4)
    )
    links = _links(me)
    tag = room_tag(ROOM)

    def requests(until: float) -> list[tuple[float, SendDatagram]]:
        """Run the timer, the parent answering and the child probing; the witness requests."""
        out = []
        while links.next_tick <= until:
            at = links.next_tick
            links.on_probe(Probe(tag, child, 1, ProbeRole.CHILD, round(at * 10), 0, 0), "c", at)
            for item in links.tick(at):
                if not isinstance(item, SendDatagram):
                    continue
                probe = Probe.decode(item.data)
                if probe.role is ProbeRole.WITNESS:
                    out.append((at, item))
                elif probe.role is ProbeRole.CHILD:
                    answer = Probe(tag, parent, 1, ProbeRole.PARENT, 1, probe.probe_id, 0)
                    links.on_probe(answer, "parent", at)
        return out

    now = 0.0
    children = (Neighbor(child, "c"),)
    for version, same in enumerate((parent, child), 1):
        position = TreePosition(version, Neighbor(parent, "parent"), Neighbor(same, "b"), children)
        links.apply_position(position, now)
        assert requests(now + 3.0) == []
        assert not links.witness_from("b") and not links.witness_from("parent")
        now = links.next_tick
    position = TreePosition(3, Neighbor(parent, "parent"), Neighbor(backup, "b"), children)
    links.apply_position(position, now)
    asked = requests(now + 6.1)
    # One request at once, then one every three seconds, each good for 7.5.
    assert [round(at - now, 1) for at, _ in asked] == [0.0, 3.0, 6.0]
    assert all(item.address == "b" for _, item in asked)
    assert links.parent is not None and links.parent.key == parent
    assert links.witness_from("b") and not links.witness_from("parent")
    # A new backup: the old one is told to stop, the new one asked at once.
    now = links.next_tick
    position = TreePosition(4, Neighbor(parent, "parent"), Neighbor(child, "b2"), children)
    [end] = links.apply_position(position, now)
    assert isinstance(end, SendDatagram) and end.address == "b"
    assert Probe.decode(end.data).role is ProbeRole.WITNESS_END
    other = Identity.from_seed(bytes([9]) * 32, "m9").public_key
    position = TreePosition(5, Neighbor(parent, "parent"), Neighbor(other, "b3"), children)
    assert links.apply_position(position, now) == []  # "b2" (a child) was never asked
    assert [item.address for _, item in requests(now + 0.1)] == ["b3"]
    assert links.witness_from("b3") and not links.witness_from("b")


def test_a_relay_tells_its_children_when_the_lag_they_see_is_not_its_doing() -> None:
    me, parent, child, backup = (
        Identity.from_seed(bytes([i + 1]) * 32, f"m{i}").public_key for i in range(4)
    )
    links = _links(me)
    tag = room_tag(ROOM)
    position = TreePosition(1, Neighbor(parent, "p"), Neighbor(backup, "b"), ())
    links.apply_position(position, 0.0)

    def answer_to_child(now: float) -> bool:
        out = links.on_probe(Probe(tag, child, 1, ProbeRole.CHILD, 1, 0, 0), "c", now)
        [answer] = [item for item in out if isinstance(item, SendDatagram)]
        return Probe.decode(answer.data).lagging

    def from_parent(lagging: bool, now: float, probe_id: int) -> None:
        answer = Probe(tag, parent, 1, ProbeRole.PARENT, probe_id, 0, 0, lagging=lagging)
        links.on_probe(answer, "p", now)

    assert not answer_to_child(0.1)
    # Its parent says that it lags behind its own samples: so does this relay, below it.
    from_parent(True, 0.2, probe_id=2)
    assert answer_to_child(0.3)
    from_parent(False, 0.35, probe_id=1)  # an older answer, overtaken on the way: no news
    assert answer_to_child(0.35)
    from_parent(False, 0.4, probe_id=3)
    assert not answer_to_child(0.5)
    # Its own parent lags behind the samples from its backup.
    links.note_delivery("p", 0, 100, 0.6)
    links.note_witness(0, 100 + links.lagging_frames, 0.7)
    assert links.lagging and answer_to_child(0.8)
    # Just moved to its backup: the new parent is still catching up, for a moment.
    links.parent_left(1.0)
    assert links.parent is not None and links.parent.key == backup and not links.lagging
    assert answer_to_child(1.1) and not answer_to_child(1.0 + links.settle + 0.1)


def test_a_witness_sample_is_evidence_only_never_played_or_passed_on(work: Work) -> None:
    room = media_room(12, fanout=3, config=CONFIG)
    tree = host_tree(room)
    key = next(k for k in tree.members if tree.position(k).backup and tree.children(k))
    peer = room.net.peers[key]
    parent_key, backup_key = tree.parent(key), tree.position(key).backup
    assert parent_key is not None and backup_key is not None
    parent = room.net.peers[parent_key].media.address
    backup = room.net.peers[backup_key].media.address
    frames = room.capture("host", 40)
    now = room.net.now
    for frame in frames[:10]:
        peer.receive_datagram(frame, parent, now)
    peer.outbound()
    peer.events()
    before = peer.statistics().media
    work.signatures = 0
    peer.receive_datagram(wrap(frames[5]), backup, now)  # the parent passed it on: no news
    assert work.signatures == 0
    peer.receive_datagram(wrap(frames[30]), backup, now)  # news: checked, and the lag noted
    assert work.signatures == 1
    peer.receive_datagram(wrap(frames[30]), backup, now)  # a replay of it: no news again
    assert work.signatures == 1
    # Nothing was played or passed on.  The parent now lags: the backup is asked for more
    # samples, the parent probed at once (its answer says if it lags behind its own), and
    # the children told, so that they do not blame this peer for the lag they see.
    sent = [d for d in peer.outbound() if isinstance(d, SendDatagram)]
    assert all(d.data[:1] == bytes([PROBE_TYPE]) for d in sent)
    probes = [(Probe.decode(d.data), d.address) for d in sent]
    assert [(p.role, to) for p, to in probes[:2]] == [
        (ProbeRole.WITNESS, backup),
        (ProbeRole.CHILD, parent),
    ]
    children = {room.net.peers[child].media.address for child in tree.children(key)}
    assert {to for _, to in probes[2:]} == children
    assert all(p.lagging for p, _ in probes if p.role is not ProbeRole.CHILD)
    assert [e for e in peer.events() if isinstance(e, (FrameReceived, AudioOut))] == []
    after = peer.statistics().media
    assert (after.frames_accepted, after.frames_forwarded) == (
        before.frames_accepted,
        before.frames_forwarded,
    )
    assert after.witness_frames_received == before.witness_frames_received + 3
    assert after.dropped_total == before.dropped_total
    # It was not marked seen either: the parent's copy is taken, passed on and played.
    peer.receive_datagram(frames[30], parent, now)
    assert peer.statistics().media.frames_accepted == before.frames_accepted + 1
    assert [e.seq for e in peer.events() if isinstance(e, FrameReceived)] == [30]
    # From anyone but the backup a sample is refused unread; a forged one at its signature.
    peer.receive_datagram(wrap(frames[31]), parent, now)
    assert dropped(peer, "witness-unasked") == 1
    forged = bytearray(wrap(frames[35]))
    forged[-1] ^= 1
    peer.receive_datagram(bytes(forged), backup, now)
    assert dropped(peer, "bad-signature") == 1
    peer.receive_datagram(wrap(frames[36][:20]), backup, now)
    assert dropped(peer, "malformed") == 1
    assert peer.statistics().media.witness_frames_received == after.witness_frames_received


def test_a_member_cannot_lower_the_score_of_a_relay_it_is_not_under() -> None:
    room = media_room(12, fanout=3, config=CONFIG)
    room.net.run_for(UPSTREAM_GRACE)
    tree = host_tree(room)
    relay = relay_with_children(room, 3)
    liar = next(k for k in tree.members if k != room.host.me and tree.parent(k) != relay)
    children_before = tree.children(relay)
    for reason in (SwitchReason.CORRUPT, SwitchReason.LOSSY):
        report = ParentSwitched(1, relay, room.host.me, reason)
        room.host.receive_link(encode_media_message(report), liar, room.net.now)
    room.net.run_for(0.5)
    coordinator = room.host.coordinator
    assert coordinator is not None
    assert coordinator.relay_score(relay) == 1.0
    assert host_tree(room).children(relay) == children_before
    scores = room.host.statistics().relay_scores
    assert scores is not None
    assert scores.accusations_refused == {"not-your-parent": 2}
    assert scores.accusations_accepted == 0


def test_one_members_word_demotes_a_relay_only_for_a_while_and_only_so_often() -> None:
    a, b, c, d, liar, other = (
        Identity.from_seed(bytes([i]) * 32, f"m{i}").public_key for i in range(6)
    )
    scores = RelayScores(recovery_per_second=0.01, accusations_per_window=2)
    assert scores.accuse(liar, a, SwitchReason.CORRUPT, 0.0)
    assert scores.demoted(a, 0.0) and a not in scores.statistics(0.0).convicted
    assert not scores.demoted(a, 50.0) and scores.score(a, 100.0) == 1.0
    assert scores.accuse(liar, b, SwitchReason.LOSSY, 1.0)
    assert not scores.accuse(liar, c, SwitchReason.CORRUPT, 2.0)  # over its budget
    assert scores.score(c, 2.0) == 1.0
    assert scores.accuse(liar, c, SwitchReason.CORRUPT, 61.0)  # a new window
    # Two different members saying so convicts a relay for as long as it stays.
    assert scores.accuse(other, d, SwitchReason.CORRUPT, 70.0)
    assert scores.accuse(liar, d, SwitchReason.CORRUPT, 122.0)
    assert scores.demoted(d, 10_000.0) and scores.statistics().convicted == (d,)
    assert not scores.accuse(liar, a, SwitchReason.SILENT, 200.0)  # silence accuses nobody
    assert scores.statistics().accusations_refused == {"too-many": 1}
    scores.forget_all_but({a, b, c})
    assert not scores.demoted(d, 10_000.0)


# --- 2. a relay that flips bits or forges frames -------------------------------------------


@pytest.mark.parametrize("how", ["flip-ciphertext", "flip-signature", "truncate", "forge"])
def test_a_corrupting_relay_is_stopped_at_the_first_honest_listener_and_demoted(
    how: str,
) -> None:
    room = media_room(30, fanout=3, config=CONFIG)
    tree = host_tree(room)
    relay = relay_with_children(room, 3, deep=True)
    victims = tree.children(relay)
    grandchildren = [k for v in victims for k in tree.children(v)]
    assert grandchildren
    watch = Watch(room)
    room.speak("host", 0.5)
    relay_peer = room.net.peers[relay]
    stolen = relay_peer.media.held_keys(room.host.me)
    assert stolen is not None
    tampers = {
        "flip-ciphertext": flip(HEADER_SIZE + 3),
        "flip-signature": flip(-1),
        "truncate": truncate(),
        "forge": forge(relay_peer.identity, stolen.held()[-1]),
    }
    started = room.net.now
    room.net.tamper[relay] = tampers[how]
    room.speak("host", 2.0)
    room.net.run_for(0.5)

    threshold = CONFIG.corrupt_threshold
    for victim in victims:
        peer = room.net.peers[victim]
        [(change, when)] = watch.switches(victim)
        assert change.reason == "corrupt" and peer.media.parent != relay
        # It left after the threshold of bad frames; the relay kept sending to it until it
        # noticed its child gone (a probe timeout), and those were dropped too.
        after_leaving = (
            CONFIG.probe_interval * CONFIG.probe_misses + CONFIG.probe_interval
        ) / FRAME
        assert threshold <= dropped(peer, "bad-signature") <= threshold + after_leaving
        assert when - started <= (threshold + 1) * FRAME + 0.05
        heard = [e.seq for e in watch.received(victim, room.host.me) if e.arrived > when + 0.1]
        assert heard == list(range(heard[0], room.host.media.next_seq))
    for key in grandchildren:
        # The victims passed on nothing bad: their own children never saw a bad frame.
        assert dropped(room.net.peers[key], "bad-signature") == 0
    assert_only_genuine_audio_played(watch, room)
    scores = room.host.statistics().relay_scores
    assert scores is not None and scores.convicted == (relay,)
    assert host_tree(room).children(relay) == ()


# --- 3. replays ---------------------------------------------------------------------------


def test_replayed_frames_of_this_and_older_generations_are_never_played() -> None:
    room = media_room(8, fanout=3, config=CONFIG)
    relay = relay_with_children(room, 2)
    relay_peer = room.net.peers[relay]
    victims = host_tree(room).children(relay)
    seen: list[bytes] = []

    def replay(datagram: SendDatagram) -> Sequence[SendDatagram]:
        # Every frame twice at once, and every frame ever seen again, now and then.
        seen.append(datagram.data)
        extra = [SendDatagram(datagram.address, old) for old in seen[-200::37]]
        return [datagram, datagram, *extra]

    room.net.tamper[relay] = on_frames(replay)
    watch = Watch(room)
    room.speak("host", 1.0)
    # A kick rotates the host's sender key: what came before is an older generation.
    outsider = next(p for p in room.listeners if p.me != relay and p.me not in victims)
    room.net.act(room.host.me, lambda p: p.act(Kick(outsider.me), room.net.now))
    room.net.run_for(1.5)
    generation = room.host.media.sending_generation
    assert generation is not None and generation.epoch == 1
    room.speak("host", 1.0)
    for old in seen[:50]:
        for victim in victims:
            room.net.inject_datagram(old, relay_peer.media.address, victim, 0.001)
    room.net.run_for(0.5)

    sent = room.host.media.next_seq
    for victim in victims:
        peer = room.net.peers[victim]
        seqs = [e.seq for e in watch.received(victim, room.host.me)]
        assert sorted(seqs) == list(range(sent)), room.net.name(victim)
        assert peer.statistics().media.frames_accepted == sent
        assert dropped(peer, "duplicate") > sent
    assert_only_genuine_audio_played(watch, room)


def test_frames_older_than_the_replay_window_or_the_keys_held_are_refused() -> None:
    room = media_room(2, config=CONFIG)
    target = room["p000"]
    parent = room.net.peers[room.host.me].media.address
    frames = room.capture("host", 2100)
    watch = Watch(room)
    room.net.inject_datagram(frames[-1], parent, target.me, 0.001)
    for frame in frames[:5]:  # never delivered, but more than the window behind
        room.net.inject_datagram(frame, parent, target.me, 0.002)
    room.net.run_for(0.2)
    assert dropped(target, "too-old") == 5
    assert [e.seq for e in watch.received(target.me, room.host.me)] == [2099]

    # Nine joins ratchet the host's key nine steps, and the listener hears each step: it
    # keeps only the newest keys and replay windows, so generation 0's are gone.
    early = frames[2095:2098]
    for frame in early:
        room.net.inject_datagram(frame, parent, target.me, 0.001)
    for i in range(9):
        room.add(f"late{i}")
        room.net.run_for(0.3)
        for frame in room.capture("host", 1):
            room.net.inject_datagram(frame, parent, target.me, 0.001)
    room.net.run_for(0.3)
    keys = target.media.held_keys(room.host.me)
    assert keys is not None
    old = parse_header(early[0]).generation
    assert keys.held()[0].generation > old and not keys.reachable(old)
    played_before = len(watch.played(target.me, room.host.me))
    for frame in [*early, *frames[2090:2095]]:  # replays, and frames never delivered
        room.net.inject_datagram(frame, parent, target.me, 0.001)
    room.net.run_for(0.3)
    assert dropped(target, "stale-generation") == 8
    assert len(watch.played(target.me, room.host.me)) == played_before
    seqs = [p.seq for p in watch.played(target.me, room.host.me)]
    assert len(seqs) == len(set(seqs))


# --- 4. absurd counters and generations --------------------------------------------------


@attrs.define
class Work:
    """Counts of the expensive steps a frame can cost."""

    signatures: int = 0
    decryptions: int = 0
    ratchets: int = 0


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Work:
    counted = Work()
    verify, decrypt, ratchet = frame_signature_valid, open_frame, sender_keys_module.ratchet_secret

    def counting_verify(*args: object, **kwargs: object) -> bool:
        counted.signatures += 1
        return verify(*args, **kwargs)  # type: ignore[arg-type]

    def counting_decrypt(*args: object, **kwargs: object) -> bytes:
        counted.decryptions += 1
        return decrypt(*args, **kwargs)  # type: ignore[arg-type]

    def counting_ratchet(secret: bytes) -> bytes:
        counted.ratchets += 1
        return ratchet(secret)

    monkeypatch.setattr(media_module, "frame_signature_valid", counting_verify)
    monkeypatch.setattr(media_module, "open_frame", counting_decrypt)
    monkeypatch.setattr(sender_keys_module, "ratchet_secret", counting_ratchet)
    return counted


def _stream_state(peer: Peer, speaker: PublicKey) -> tuple[object, ...]:
    stream = peer.media._streams[speaker]
    windows = {g: (w.highest, w._seen) for g, w in stream._windows.items()}
    return (windows, stream.highest_seq, stream.keyring.held(), len(stream.pending))


def test_absurd_counters_and_generations_cost_no_crypto_and_keep_no_state(work: Work) -> None:
    room = media_room(2, config=CONFIG)
    listener = room["p000"]
    host = room.host
    parent = host.media.address
    for frame in room.capture("host", 5):
        listener.receive_datagram(frame, parent, room.net.now)
    assert listener.statistics().media.frames_accepted == 5
    listener.outbound()
    keys = listener.media.held_keys(host.me)
    assert keys is not None
    held = keys.held()[-1]
    index = index_of(room, host.me)
    highest = 4

    def signed(generation: KeyGeneration, seq: int) -> bytes:
        # Signed by the real speaker: even its own key cannot push these through.
        header = FrameHeader(room_tag(ROOM), index, generation, seq, 0)
        return seal_frame(
            header, PAYLOAD, room_id=ROOM, sender_key=held.secret, speaker=host.identity
        )

    epoch, step = held.generation
    absurd = {
        "counter-jump": [
            signed(held.generation, 0xFFFF_FFFF),
            signed(held.generation, highest + 2 * SEQ_SLACK),
        ],
        "generation-jump": [
            signed(KeyGeneration(0xFFFF, 0), 6),
            signed(KeyGeneration(epoch + 17, 0), 7),
            signed(KeyGeneration(epoch, 0xFFFF), 8),
            signed(KeyGeneration(epoch, step + 4097), 9),
        ],
    }
    before = _stream_state(listener, host.me)
    tracemalloc.start()
    try:
        for _ in range(2):  # warm up: the drop counters exist
            for frames in absurd.values():
                for frame in frames:
                    listener.receive_datagram(frame, parent, room.net.now)
        work.signatures = work.decryptions = work.ratchets = 0
        baseline = tracemalloc.take_snapshot()
        rounds = 500
        for _ in range(rounds):
            for frames in absurd.values():
                for frame in frames:
                    listener.receive_datagram(frame, parent, room.net.now)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert (work.signatures, work.decryptions, work.ratchets) == (0, 0, 0)
    assert _stream_state(listener, host.me) == before
    grown = sum(stat.size_diff for stat in after.compare_to(baseline, "filename"))
    assert grown < 16_384, grown
    stats = listener.statistics().media
    assert stats.dropped["counter-jump"] == 2 * (rounds + 2)
    assert stats.dropped["generation-jump"] == 4 * (rounds + 2)
    assert stats.frames_accepted == 5 and listener.outbound() == []


def test_a_forged_old_generation_costs_one_signature_check_and_no_hashing(work: Work) -> None:
    room = media_room(2, config=CONFIG)
    listener = room["p000"]
    parent = room.host.media.address
    for frame in room.capture("host", 3):
        listener.receive_datagram(frame, parent, room.net.now)
    for i in range(6):  # joins ratchet the host's key forward
        room.add(f"late{i}")
        room.net.run_for(0.3)
    for frame in room.capture("host", 3):
        listener.receive_datagram(frame, parent, room.net.now)
    keys = listener.media.held_keys(room.host.me)
    assert keys is not None
    assert [k.generation.step for k in keys.held()][-1] >= 6
    work.signatures = work.ratchets = work.decryptions = 0
    forger = room["late0"].identity
    index = index_of(room, room.host.me)
    for step in range(1, 6):  # between two held keys: reachable only by ratcheting
        header = FrameHeader(room_tag(ROOM), index, KeyGeneration(0, step), 100 + step, 0)
        fake = seal_frame(header, PAYLOAD, room_id=ROOM, sender_key=bytes(32), speaker=forger)
        listener.receive_datagram(fake, parent, room.net.now)
    assert (work.signatures, work.ratchets, work.decryptions) == (5, 0, 0)
    assert dropped(listener, "bad-signature") == 5


def test_frames_waiting_for_a_key_are_bounded_and_so_are_key_requests() -> None:
    room = media_room(2, config=CONFIG)
    listener = room["p000"]
    host = room.host
    parent = host.media.address
    for frame in room.capture("host", 2):
        listener.receive_datagram(frame, parent, room.net.now)
    listener.outbound()
    keys = listener.media.held_keys(host.me)
    assert keys is not None
    epoch = keys.held()[-1].generation.epoch
    index = index_of(room, host.me)
    unknown = KeyGeneration(epoch + 1, 0)
    requests = 0
    for seq in range(10, 1010):
        header = FrameHeader(room_tag(ROOM), index, unknown, seq, 0)
        frame = seal_frame(
            header, PAYLOAD, room_id=ROOM, sender_key=bytes(32), speaker=host.identity
        )
        listener.receive_datagram(frame, parent, room.net.now + seq * 0.0001)
        for item in listener.outbound():
            if isinstance(item, SendTo) and isinstance(decode_media_message(item.data), KeyRequest):
                requests += 1
    assert len(listener.media._streams[host.me].pending) == MAX_PENDING
    assert requests == 1  # at most one per key_request_interval
    assert listener.statistics().media.frames_decrypted == 2


# --- 5. a kicked listener that keeps receiving --------------------------------------------


def _opens(keys: Sequence[SenderKey], datagram: bytes, ratchets: int) -> bool:
    """Whether any of ``keys``, or any of their next ``ratchets`` steps, opens the frame."""
    header = parse_header(datagram)
    for held in keys:
        key = held
        for _ in range(ratchets + 1):
            try:
                open_frame(header, datagram, room_id=ROOM, sender_key=key.secret)
            except WireError:
                key = key.ratcheted()
            else:
                return True
    return False


def test_a_kicked_listener_fed_by_a_colluding_relay_decrypts_nothing_after_the_rotation() -> None:
    room = media_room(8, fanout=3, config=CONFIG)
    tree = host_tree(room)
    colluder = relay_with_children(room, 2)
    kicked = next(p for p in room.listeners if p.me != colluder and tree.parent(p.me) != colluder)
    room.speak("host", 0.5)
    stolen = kicked.media.held_keys(room.host.me)
    assert stolen is not None
    stolen_keys = list(stolen.held())
    copies: list[tuple[float, bytes]] = []

    def leak(datagram: SendDatagram) -> Sequence[SendDatagram]:
        copies.append((room.net.now, datagram.data))
        return [datagram, SendDatagram(kicked.media.address, datagram.data)]

    room.net.tamper[colluder] = on_frames(leak)
    watch = Watch(room)
    room.net.act(room.host.me, lambda p: p.act(Kick(kicked.me), room.net.now))
    kicked_at = room.net.now
    bytes_before = room.net.bytes_received[kicked.me]
    room.speak("host", 3.0)
    room.net.run_for(0.3)

    rotations = [
        t
        for e, t in watch.of(room.host.me)
        if isinstance(e, SenderKeyChanged) and e.reason == "rotation"
    ]
    assert len(rotations) == 1
    after = [data for when, data in copies if when > rotations[0]]
    # The kicked peer kept being sent the room's frames...
    assert len(after) > 100
    assert room.net.bytes_received[kicked.me] - bytes_before >= sum(map(len, after))
    # ...and played nothing once it was out, and can open none of them.
    out_at = kicked_at + 0.05
    late = [e for e, t in watch.of(kicked.me) if isinstance(e, FrameReceived) and t > out_at]
    assert late == []
    assert [e for e, t in watch.of(kicked.me) if isinstance(e, AudioOut) and t > out_at + 1] == []
    for data in after[::10]:
        assert not _opens(stolen_keys, data, ratchets=50)
    assert kicked.statistics().media.dropped_total >= len(after)
    assert_only_genuine_audio_played(watch, room)
    assert kicked_at < rotations[0] <= kicked_at + CONFIG.rotation_timeout + 0.1


# --- 6. a listener that speaks without the floor ------------------------------------------


def test_a_listener_pretending_to_hold_the_floor_is_played_by_nobody() -> None:
    room = media_room(12, fanout=3, config=CONFIG)
    tree = host_tree(room)
    pretender_key = relay_with_children(room, 2)
    pretender = room.net.peers[pretender_key]
    neighbours = {*tree.children(pretender_key), room.host.me}
    room.speak("host", 0.3)
    stolen = pretender.media.held_keys(room.host.me)
    assert stolen is not None
    key = stolen.held()[-1]
    own_index = index_of(room, pretender_key)
    host_index = index_of(room, room.host.me)
    fakes = []
    for seq in range(50):
        as_self = FrameHeader(room_tag(ROOM), own_index, KeyGeneration(0, 0), seq, 0)
        as_host = FrameHeader(room_tag(ROOM), host_index, key.generation, 1000 + seq, 0)
        for header, secret in ((as_self, bytes(32)), (as_host, key.secret)):
            fakes.append(
                seal_frame(
                    header, PAYLOAD, room_id=ROOM, sender_key=secret, speaker=pretender.identity
                )
            )
    # The local API refuses outright; on the wire, the frames go to every tree neighbour.
    assert not pretender.media.can_send and not pretender.send_frame(PAYLOAD, 0.0, 0.0)
    watch = Watch(room)
    for fake in fakes:
        for neighbour in neighbours:
            room.net.inject_datagram(fake, pretender.media.address, neighbour, 0.001)
    room.speak("host", 0.5)
    room.net.run_for(0.3)

    for peer in everyone(room):
        assert watch.received(peer.me, pretender_key) == []
        assert watch.played(peer.me, pretender_key) == []
        if peer.me in neighbours:
            assert dropped(peer, "not-on-floor") == 50
            # The host knows its own frames when it sees them (and never plays them).
            posing = "own-frame" if peer is room.host else "bad-signature"
            assert dropped(peer, posing) == 50
        elif peer.me != pretender_key:  # dropped at the first honest peer, never relayed
            assert dropped(peer, "not-on-floor") == dropped(peer, "bad-signature") == 0
    assert_only_genuine_audio_played(watch, room)


@pytest.mark.parametrize("how", ["moved-to-audience", "muted"])
def test_a_speaker_taken_off_the_floor_is_not_played_with_its_old_key(how: str) -> None:
    room = media_room(6, fanout=2, config=CONFIG)
    speaker = room["p002"]
    room.to_stage("p002")
    room.speak("p002", 0.4)
    room.net.run_for(0.2)
    assert speaker.media.can_send
    op = MoveToAudience(speaker.me) if how == "moved-to-audience" else Mute(speaker.me, True)
    room.net.act(room.host.me, lambda p: p.act(op, room.net.now))
    room.net.run_for(0.5)
    assert not speaker.media.can_send
    listener_keys = room["p000"].media.held_keys(speaker.me)
    assert listener_keys is not None
    old = listener_keys.held()[-1]
    index = index_of(room, speaker.me)
    watch = Watch(room)
    first = speaker.media.next_seq
    targets = [k for k in (speaker.media.parent, *speaker.media.children) if k is not None]
    for seq in range(first, first + 30):
        header = FrameHeader(room_tag(ROOM), index, old.generation, seq, 0)
        frame = seal_frame(
            header, PAYLOAD, room_id=ROOM, sender_key=old.secret, speaker=speaker.identity
        )
        for target in targets:
            room.net.inject_datagram(frame, speaker.media.address, target, 0.001)
    room.net.run_for(0.3)
    for peer in everyone(room):
        assert watch.received(peer.me, speaker.me) == []
        assert watch.played(peer.me, speaker.me) == []
    assert sum(dropped(room.net.peers[t], "not-on-floor") for t in targets) == 30 * len(targets)


# --- 7. every rejection counted, nothing raised -------------------------------------------


def _mutations(rng: random.Random, genuine: list[bytes], probe: bytes) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(3000):
        base = bytearray(rng.choice(genuine))
        kind = rng.randrange(8)
        if kind == 0:
            base[rng.randrange(len(base))] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del base[rng.randrange(len(base)) :]
        elif kind == 2:
            base.extend(rng.randbytes(rng.randrange(1, 64)))
        elif kind == 3:
            start = rng.randrange(1, HEADER_SIZE)
            base[start : start + 4] = rng.randbytes(4)
        elif kind == 4:
            base = bytearray(rng.randbytes(rng.randrange(0, 1600)))
        elif kind == 5:
            base = bytearray([FRAME_TYPE]) + bytearray(rng.randbytes(rng.randrange(0, 200)))
        elif kind == 6:
            probe_copy = bytearray(probe)
            probe_copy[rng.randrange(len(probe_copy))] ^= 1 << rng.randrange(8)
            base = probe_copy
        out.append(bytes(base))  # kind 7: an exact replay
    return out


def test_every_hostile_datagram_is_counted_once_and_none_raises() -> None:
    room = media_room(3, config=CONFIG)
    listener = room["p000"]
    parent = room.host.media.address
    genuine = room.capture("host", 20)
    for frame in genuine:
        listener.receive_datagram(frame, parent, room.net.now)
    listener.outbound()
    probe = encode_probe(
        room_tag(ROOM), room.host.me, 1, ProbeRole.PARENT, 7, 3, 100, rooted=True, path=b""
    )
    rng = random.Random(8)
    for data in _mutations(rng, genuine, probe):
        before = listener.statistics().media
        listener.receive_datagram(data, parent, room.net.now)
        after = listener.statistics().media
        accounted = (after.frames_accepted - before.frames_accepted) + (
            after.dropped_total - before.dropped_total
        )
        if data[:1] == bytes([PROBE_TYPE]):
            assert accounted in (0, 1)  # a probe that parses is handled, not counted
        else:
            assert accounted == 1, data[:HEADER_SIZE].hex()
    assert listener.statistics().media.frames_accepted == 20


# --- 8. a real listener under attack --------------------------------------------------------


async def test_a_real_listener_keeps_playing_through_an_attack_on_its_media_port() -> None:
    from mitalk_p2p.audio.io import PacedSource
    from mitalk_p2p.audio.sources import SyntheticSpeech
    from mitalk_p2p.runtime.addresses import parse_address
    from mitalk_p2p.runtime.peer_runtime import HostRoom, JoinRoom, PeerConfig, open_peer

    bound = 10.0
    host_config = PeerConfig(
        Identity.generate("Host"),
        HostRoom("Under attack"),
        audio_input=PacedSource(SyntheticSpeech(1), 0.020),
    )
    async with open_peer(host_config) as host:
        config = PeerConfig(Identity.generate("Listener"), JoinRoom(host.invite()))
        async with open_peer(config) as listener:
            media = listener.core.media

            def heard() -> int:
                return listener.statistics().peer.media.frames_accepted

            with trio.fail_after(bound):
                await listener.wait_for(lambda: heard() >= 10)
            state = listener.state
            assert state is not None
            keys = media.held_keys(host.me)
            assert keys is not None
            key = keys.held()[-1]
            index = state.members[host.me].joined_seq
            tag = room_tag(state.room_id)
            seq = media._streams[host.me].highest_seq + 200

            def frame(generation: KeyGeneration, n: int, signer: Identity) -> bytes:
                header = FrameHeader(tag, index, generation, n, 0)
                return seal_frame(
                    header, PAYLOAD, room_id=state.room_id, sender_key=key.secret, speaker=signer
                )

            genuine = frame(key.generation, seq, host.identity)
            flipped = bytearray(frame(key.generation, seq + 3, host.identity))
            flipped[HEADER_SIZE + 2] ^= 1
            attack = [
                genuine,
                genuine,  # replayed
                bytes(flipped),
                frame(key.generation, 0xFFFF_FFFF, host.identity),
                frame(KeyGeneration(0xFFFF, 0), seq + 1, host.identity),
                frame(key.generation, seq + 2, listener.identity),  # a listener posing as host
                b"\x11" + b"\x00" * 30,
                b"\xff" * 100,
            ]
            before = listener.statistics().peer.media
            ip, port = parse_address(listener.media_address)
            with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
                await sock.bind(("127.0.0.1", 0))
                for datagram in attack:
                    await sock.sendto(datagram, (ip, port))

                def refused() -> int:
                    return listener.statistics().peer.media.dropped_total - before.dropped_total

                with trio.fail_after(bound):
                    await listener.wait_for(lambda: refused() >= len(attack) - 1)
            after = listener.statistics().peer.media
            drops = {
                reason: after.dropped.get(reason, 0) - before.dropped.get(reason, 0)
                for reason in after.dropped
            }
            assert drops["duplicate"] >= 1
            assert drops["bad-signature"] >= 2
            assert drops["counter-jump"] >= 1 and drops["generation-jump"] >= 1
            count = heard()
            with trio.fail_after(bound):
                await listener.wait_for(lambda: heard() >= count + 10)
