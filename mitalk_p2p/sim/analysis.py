"""Metrics and expectation verdicts, computed from a finished simulation's trace.

Who "should have heard" a frame is decided here, once, for every metric: a
listener is owed a frame when, at the moment the speaker sent it, the listener
had been a member for at least :data:`SETTLE` seconds, would still be one
:data:`GRACE` seconds later, and sat on the speaker's side of any partition.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence

import attrs

from ..core.errors import WireError
from ..core.identity import SIGNATURE_SIZE
from ..core.media_frame import HEADER_SIZE, open_frame, parse_header
from ..core.sender_keys import MAX_RATCHET_AHEAD, ratchet_secret
from . import trace as t
from .results import ExpectationResult, ScenarioResult, TreeSnapshot, percentile
from .scenario import Expectation, Scenario
from .simulator import Simulator

SETTLE = 1.0
"""Seconds after joining before a listener is owed frames (keys and a tree position)."""
GRACE = 1.0
"""Seconds a frame may take to arrive before the run ends or the listener goes."""
KEY_PROBE_FRAMES = 40
"""How many tapped frames after a rotation are tried against the removed member's keys."""

Interval = tuple[float, float]


@attrs.define(eq=False)
class _Pair:
    """What one listener got from one speaker: send times, latencies and seqs, by arrival."""

    sent: array[float] = attrs.Factory(lambda: array("d"))
    latency: array[float] = attrs.Factory(lambda: array("d"))
    seq: array[int] = attrs.Factory(lambda: array("I"))


class Analysis:
    def __init__(self, sim: Simulator, end: float) -> None:
        self.sim, self.end = sim, end
        self.trace = sim.trace
        self.names = self.trace.names
        self.sends: dict[int, array[float]] = defaultdict(lambda: array("d"))
        self.send_seqs: dict[int, array[int]] = defaultdict(lambda: array("I"))
        speakers, seqs_sent, times = self.trace.send_columns()
        for speaker, seq_sent, time in zip(speakers, seqs_sent, times, strict=True):
            self.sends[speaker].append(time)
            self.send_seqs[speaker].append(seq_sent)
        self.pairs: dict[tuple[int, int], _Pair] = {}
        listeners, d_speakers, seqs, arrivals, latencies = self.trace.delivery_columns()
        pairs = self.pairs
        for listener, speaker, seq, arrival, latency in zip(
            listeners, d_speakers, seqs, arrivals, latencies, strict=True
        ):
            pair = pairs.get((listener, speaker))
            if pair is None:
                pair = pairs[(listener, speaker)] = _Pair()
            pair.sent.append(arrival - latency)
            pair.latency.append(latency)
            pair.seq.append(seq)
        self.membership = self._membership()

    # --- who is owed what ---------------------------------------------------------------

    def _membership(self) -> dict[int, list[Interval]]:
        index = self.trace.index_of
        starts: dict[int, float] = {}
        spans: dict[int, list[Interval]] = defaultdict(list)

        def close(peer: int, time: float) -> None:
            start = starts.pop(peer, None)
            if start is not None:
                spans[peer].append((start, time))

        for record in self.trace.records:
            if isinstance(record, t.JoinedRoom):
                starts.setdefault(index(record.peer), record.time)
            elif isinstance(record, t.LeftRoom) or (
                isinstance(record, t.ActionTaken) and record.action in ("crash", "leave")
            ):
                close(index(record.peer), record.time)
        for peer in list(starts):
            close(peer, self.end)
        return spans

    def owed_windows(self, listener: int, speaker: int) -> list[Interval]:
        """Send-time windows in which ``listener`` should hear ``speaker``."""
        windows = []
        speaker_spans = self.membership.get(speaker, [])
        for start, stop in self.membership.get(listener, []):
            low, high = start + SETTLE, min(stop, self.end) - GRACE
            for s_start, s_stop in speaker_spans:
                a, b = max(low, s_start), min(high, s_stop)
                if a < b:
                    windows.extend(self._same_side(listener, speaker, a, b))
        return windows

    def _same_side(self, a: int, b: int, start: float, stop: float) -> list[Interval]:
        log = self.sim.partition_log
        if not log:
            return [(start, stop)]
        out: list[Interval] = []
        edges: list[tuple[float, dict[int, int]]] = [(0.0, {}), *log]
        for i, (since, groups) in enumerate(edges):
            until = edges[i + 1][0] if i + 1 < len(edges) else math.inf
            lo, hi = max(start, since), min(stop, until)
            if lo < hi and groups.get(a, 0) == groups.get(b, 0):
                if not groups:
                    out.append((lo, hi))
                else:
                    # A frame sent just before a split or heal may go either way.
                    lo2, hi2 = lo + (GRACE if since else 0.0), hi - GRACE
                    if lo2 < hi2:
                        out.append((lo2, hi2))
        return out

    def listener_indices(self, names: Iterable[str] = ()) -> list[int]:
        chosen = list(names)
        if chosen:
            return [self.trace.index_of(n) for n in chosen]
        return sorted(self.membership)

    # --- metrics -------------------------------------------------------------------------

    def delivery(
        self,
        speaker: str | None = None,
        listeners: Iterable[str] = (),
        start: float | None = None,
        stop: float | None = None,
    ) -> dict[str, float]:
        speakers = [self.trace.index_of(speaker)] if speaker else sorted(self.sends)
        owed: dict[int, int] = defaultdict(int)
        got: dict[int, int] = defaultdict(int)
        for listener in self.listener_indices(listeners):
            for spk in speakers:
                if spk == listener:
                    continue
                sends = self.sends.get(spk)
                if not sends:
                    continue
                pair = self.pairs.get((listener, spk))
                received = sorted(set(pair.sent)) if pair is not None else []
                for a, b in self.owed_windows(listener, spk):
                    a = max(a, start) if start is not None else a
                    b = min(b, stop) if stop is not None else b
                    if a >= b:
                        continue
                    owed[listener] += bisect_right(sends, b) - bisect_left(sends, a)
                    got[listener] += bisect_right(received, b) - bisect_left(received, a)
        return {self.names[i]: got[i] / owed[i] for i in sorted(owed) if owed[i]}

    def latencies(
        self,
        speaker: str | None = None,
        listeners: Iterable[str] = (),
        start: float | None = None,
        stop: float | None = None,
    ) -> list[float]:
        """Sorted latencies in milliseconds."""
        chosen = set(self.listener_indices(listeners)) if listeners else None
        speaker_index = self.trace.index_of(speaker) if speaker else None
        values: list[float] = []
        for (listener, spk), pair in self.pairs.items():
            if chosen is not None and listener not in chosen:
                continue
            if speaker_index is not None and spk != speaker_index:
                continue
            if start is None and stop is None:
                values.extend(pair.latency)
                continue
            low = start if start is not None else -math.inf
            high = stop if stop is not None else math.inf
            values.extend(
                lat
                for sent, lat in zip(pair.sent, pair.latency, strict=True)
                if low <= sent <= high
            )
        values.sort()
        return [v * 1000.0 for v in values]

    def outages(
        self,
        speaker: str | None = None,
        listeners: Iterable[str] = (),
        start: float | None = None,
        stop: float | None = None,
    ) -> dict[str, float]:
        """Per listener, its longest outage in seconds.

        An outage is a run of owed frames the listener never got; it lasts from
        the arrival of the last frame heard before the run to the arrival of the
        first one heard after it (what the listener's ear notices), less any
        pause in the speech, which sends nothing and so loses nothing.  A run
        still open at the end of a window lasts until the last frame sent in it.
        """
        speakers = [self.trace.index_of(speaker)] if speaker else sorted(self.sends)
        worst: dict[int, float] = {}
        for listener in self.listener_indices(listeners):
            for spk in speakers:
                sends = self.sends.get(spk)
                if spk == listener or not sends:
                    continue
                pair = self.pairs.get((listener, spk))
                heard: dict[int, float] = {}
                if pair is not None:
                    for seq, sent, latency in zip(pair.seq, pair.sent, pair.latency, strict=True):
                        heard.setdefault(seq, sent + latency)
                seqs = self.send_seqs[spk]
                for a, b in self.owed_windows(listener, spk):
                    a = max(a, start) if start is not None else a
                    b = min(b, stop) if stop is not None else b
                    low, high = bisect_left(sends, a), bisect_right(sends, b)
                    if low >= high:
                        continue
                    longest = _longest_outage(
                        seqs[low:high], sends[low:high], heard, self.sim.media_config.frame_seconds
                    )
                    worst[listener] = max(worst.get(listener, 0.0), longest)
        return {self.names[i]: worst[i] for i in sorted(worst)}

    def tree_at(self, time: float) -> t.TreePlanned | None:
        latest = None
        for record in self.trace.records:
            if record.time > time:
                break
            if isinstance(record, t.TreePlanned):
                latest = record
        return latest

    def repairs(self) -> list[tuple[str, float, float, tuple[str, ...], TreeSnapshot]]:
        """For each relay lost while someone spoke: (relay, time, repair seconds, orphans)."""
        out = []
        for record in self.trace.of_type(t.ActionTaken):
            if record.action not in ("crash", "leave") or record.detail == "host":
                continue
            tree = self.tree_at(record.time)
            if tree is None:
                continue
            orphans = _subtree(tree.parents, record.peer) - {record.peer}
            if not orphans:
                continue
            lost = record.time
            if not any(
                bisect_right(s, lost + 2.0) > bisect_right(s, lost) for s in self.sends.values()
            ):
                continue
            worst = 0.0
            for name in sorted(orphans):
                listener = self.trace.index_of(name)
                if not self._still_member(listener, lost + GRACE):
                    continue
                worst = max(worst, self._first_arrival_after(listener, lost) - lost)
            before = TreeSnapshot(
                tree.time,
                f"before {record.action} of {record.peer}",
                tree.host,
                tree.parents,
                (record.peer, *sorted(orphans)),
            )
            out.append((record.peer, lost, worst, tuple(sorted(orphans)), before))
        return out

    def _still_member(self, listener: int, time: float) -> bool:
        return any(a <= time <= b for a, b in self.membership.get(listener, []))

    def _first_arrival_after(self, listener: int, time: float) -> float:
        best = math.inf
        for (who, _spk), pair in self.pairs.items():
            if who != listener:
                continue
            for sent, latency in zip(pair.sent, pair.latency, strict=True):
                if sent > time:
                    best = min(best, sent + latency)
        return best

    def takeovers(self) -> list[tuple[str, float, float]]:
        """For each host lost: (old host, time, seconds until every member follows another)."""
        out = []
        observed = self.trace.of_type(t.TermObserved)
        for record in self.trace.of_type(t.ActionTaken):
            if record.action not in ("crash", "leave") or record.detail != "host":
                continue
            lost = record.time
            worst = 0.0
            for listener in sorted(self.membership):
                name = self.names[listener]
                if name == record.peer or not self._still_member(listener, self.end):
                    continue
                if not self._still_member(listener, lost):
                    continue
                moved = [
                    o.time
                    for o in observed
                    if o.observer == name and o.time >= lost and o.host != record.peer
                ]
                worst = max(worst, (min(moved) if moved else math.inf) - lost)
            out.append((record.peer, lost, worst))
        return out

    def hosts_per_term(self) -> dict[str, set[str]]:
        terms: dict[str, set[str]] = defaultdict(set)
        for record in self.trace.of_type(t.TermObserved):
            terms[record.term].add(record.host)
        return terms

    def duplicate_deliveries(self) -> int:
        return sum(len(p.seq) - len(set(p.seq)) for p in self.pairs.values())

    # --- expectations ----------------------------------------------------------------------

    def judge(self, e: Expectation) -> ExpectationResult:
        check = getattr(self, f"_check_{e.check}")
        ok, detail = check(e)
        return ExpectationResult(e.name, ok, detail)

    def _check_delivery(self, e: Expectation) -> tuple[bool, str]:
        ratios = self.delivery(e.speaker, e.listeners, e.start, e.end)
        if not ratios:
            return False, "no listener was owed any frame"
        worst = min(ratios, key=lambda n: (ratios[n], n))
        mean = sum(ratios.values()) / len(ratios)
        assert e.min is not None
        ok = ratios[worst] >= e.min
        return ok, f"min {ratios[worst]:.4f} ({worst}), mean {mean:.4f} over {len(ratios)}"

    def _check_latency(self, e: Expectation) -> tuple[bool, str]:
        values = self.latencies(e.speaker, e.listeners, e.start, e.end)
        value = percentile(values, e.percentile / 100)
        if value is None:
            return False, "no frame was delivered"
        assert e.max_ms is not None
        return value <= e.max_ms, f"p{e.percentile:g} {value:.1f} ms over {len(values)} frames"

    def _check_outage(self, e: Expectation) -> tuple[bool, str]:
        outages = self.outages(e.speaker, e.listeners, e.start, e.end)
        if not outages:
            return False, "no listener was owed any frame"
        worst = max(outages, key=lambda n: (outages[n], n))
        assert e.max_ms is not None
        longest = outages[worst] * 1000
        return longest <= e.max_ms, (
            f"longest {longest:.0f} ms ({worst}) over {len(outages)} listener(s)"
        )

    def _check_tree_repair(self, e: Expectation) -> tuple[bool, str]:
        repairs = self.repairs()
        if not repairs:
            return False, "no relay was lost while someone spoke"
        relay, _when, worst, orphans, _ = max(repairs, key=lambda r: r[2])
        assert e.max_ms is not None
        shown = "never" if math.isinf(worst) else f"{worst * 1000:.0f} ms"
        return worst * 1000 <= e.max_ms, (
            f"{len(repairs)} repair(s); slowest: {relay}'s {len(orphans)} orphans heard "
            f"audio again after {shown}"
        )

    def _check_host_takeover(self, e: Expectation) -> tuple[bool, str]:
        takeovers = self.takeovers()
        if not takeovers:
            return False, "no host was lost"
        host, _when, worst = max(takeovers, key=lambda r: r[2])
        assert e.max_ms is not None
        shown = "never" if math.isinf(worst) else f"{worst * 1000:.0f} ms"
        return (
            worst * 1000 <= e.max_ms,
            f"after {host} went, every member followed a new host in {shown}",
        )

    def _check_one_moderator_per_term(self, _e: Expectation) -> tuple[bool, str]:
        terms = self.hosts_per_term()
        clashes = {term: hosts for term, hosts in terms.items() if len(hosts) != 1}
        if clashes:
            shown = "; ".join(f"{term}: {sorted(h)}" for term, h in sorted(clashes.items()))
            return False, f"terms with more than one host: {shown}"
        return True, f"{len(terms)} term(s), one host each"

    def _check_hosts(self, e: Expectation) -> tuple[bool, str]:
        hosts = sorted(p.name for p in self.sim.hosts())
        return len(hosts) == e.count, f"hosting at the end: {', '.join(hosts) or 'nobody'}"

    def _check_role(self, e: Expectation) -> tuple[bool, str]:
        host = self.sim.host
        state = host.peer.state if host is not None and host.peer is not None else None
        assert e.peer is not None and e.role is not None
        if state is None:
            return False, "nobody hosts at the end"
        role = state.role_of(self.sim[e.peer].identity.public_key)
        shown = role.name.lower() if role is not None else "not a member"
        return shown == e.role, f"{host.name if host else '?'} has {e.peer} as {shown}"

    def _check_heard(self, e: Expectation) -> tuple[bool, str]:
        assert e.speaker is not None and e.start is not None and e.end is not None
        speaker = self.trace.index_of(e.speaker)
        silent = []
        checked = 0
        for listener in self.listener_indices(e.listeners):
            if listener == speaker:
                continue
            if not any(a <= e.start and e.end <= b for a, b in self.membership.get(listener, [])):
                continue
            checked += 1
            pair = self.pairs.get((listener, speaker))
            arrivals = (
                []
                if pair is None
                else [s + lat for s, lat in zip(pair.sent, pair.latency, strict=True)]
            )
            if not any(e.start <= a <= e.end for a in arrivals):
                silent.append(self.names[listener])
        if not checked:
            return False, "no listener was present for the whole window"
        if silent:
            return False, f"{len(silent)} of {checked} heard nothing, e.g. {', '.join(silent[:5])}"
        return True, f"all {checked} listeners heard {e.speaker}"

    def _check_no_frame_played_twice(self, _e: Expectation) -> tuple[bool, str]:
        twice = self.duplicate_deliveries()
        total = sum(len(p.seq) for p in self.pairs.values())
        return twice == 0, f"{twice} repeated of {total} deliveries"

    def _check_kicked_decrypts_nothing(self, e: Expectation) -> tuple[bool, str]:
        assert e.peer is not None
        gone = [r.time for r in self.trace.of_type(t.LeftRoom) if r.peer == e.peer]
        if not gone:
            return False, f"{e.peer} was never removed"
        when = gone[0]
        tapped = self.sim.tapped(e.peer)
        rotated: dict[str, float] = {}
        for record in self.trace.of_type(t.KeyChanged):
            if record.reason == "rotation" and record.time >= when:
                rotated.setdefault(record.speaker, record.time)
        early = [f for f in tapped if f[0] < rotated.get(self.names[f[1]], math.inf)]
        late = [f for f in tapped if f[0] >= rotated.get(self.names[f[1]], math.inf)]
        early, late = early[-KEY_PROBE_FRAMES:], late[:KEY_PROBE_FRAMES]
        if not late:
            return False, f"no frame sealed after a rotation reached {e.peer}"

        def opened(frames: list[tuple[float, int, bytes]]) -> int:
            return sum(
                _opens_with_any(data, self.sim.keys_ever_held(e.peer or "", speaker), self.sim)
                for _time, speaker, data in frames
            )

        opened_late = opened(late)
        return opened_late == 0, (
            f"{e.peer} opened {opened_late} of {len(late)} frames sealed after the rotation "
            f"and {opened(early)} of {len(early)} sealed before it, with every key it held, "
            f"each ratcheted up to {MAX_RATCHET_AHEAD} steps"
        )

    # --- the result --------------------------------------------------------------------------

    def result(self, scenario: Scenario, seed: int, *, wall_s: float) -> ScenarioResult:
        repairs = self.repairs()
        snapshots: list[TreeSnapshot] = []
        for relay, when, worst, orphans, before in repairs[:4]:
            if before is not None:
                snapshots.append(before)
            after = self.tree_at(when + (worst if not math.isinf(worst) else 1.0) + 0.5)
            if after is not None and after.time > when:
                snapshots.append(
                    TreeSnapshot(
                        after.time,
                        f"after repair ({relay} gone)",
                        after.host,
                        after.parents,
                        orphans,
                    )
                )
        counters = dict(self.sim.network.counters.as_dict())
        counters.update(self.sim.counters)
        playout = self.sim.playout
        concealed = (
            playout.concealed_samples / playout.played_samples
            if self.sim.decode_audio and playout.played_samples
            else None
        )
        return ScenarioResult(
            scenario=scenario.name,
            description=scenario.description,
            seed=seed,
            peers=len(scenario.peers),
            virtual_s=self.sim.now,
            wall_s=wall_s,
            trace_digest=self.trace.digest,
            delivery_ratio=self.delivery(),
            latencies_ms=tuple(self.latencies()),
            tree_repair_ms=tuple(r[2] * 1000 for r in repairs),
            host_takeover_ms=tuple(r[2] * 1000 for r in self.takeovers()),
            expectations=tuple(self.judge(e) for e in scenario.expectations),
            trees=tuple(snapshots),
            counters=counters,
            concealed_ratio=concealed,
        )


def _longest_outage(
    seqs: Sequence[int], sent: Sequence[float], heard: dict[int, float], frame: float
) -> float:
    """The longest run of frames (in sending order) missing from ``heard`` (seq -> arrival).

    A run lasts from the arrival of the frame heard before it to the arrival of
    the frame heard after it, less any pause in sending (beyond one ``frame``)
    between the two: the speaker was silent then, so nothing was lost.
    """
    longest = last_missed = paused = 0.0
    last: float | None = None
    missing_since: float | None = None
    previous: float | None = None
    for seq, sent_at in zip(seqs, sent, strict=True):
        pause = max(0.0, sent_at - previous - frame) if previous is not None else 0.0
        previous = sent_at
        arrival = heard.get(seq)
        if arrival is None:
            if missing_since is None:
                missing_since = last if last is not None else sent_at
                paused = pause if last is not None else 0.0
            else:
                paused += pause
            last_missed = sent_at
            continue
        if missing_since is not None:
            longest = max(longest, arrival - missing_since - paused - pause)
            missing_since = None
        last = arrival if last is None else max(last, arrival)
    if missing_since is not None:
        longest = max(longest, last_missed - missing_since - paused)
    return longest


def _subtree(parents: tuple[tuple[str, str], ...], top: str) -> set[str]:
    children: dict[str, list[str]] = defaultdict(list)
    for child, parent in parents:
        children[parent].append(child)
    seen, stack = {top}, [top]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def _opens_with_any(datagram: bytes, secrets: list[bytes], sim: Simulator) -> bool:
    """Does any held secret, or any of its next ratchet steps, open this frame?"""
    try:
        header = parse_header(datagram)
    except WireError:
        return False
    if len(datagram) < HEADER_SIZE + SIGNATURE_SIZE:
        return False
    for secret in secrets:
        for _ in range(MAX_RATCHET_AHEAD + 1):
            try:
                open_frame(header, datagram, room_id=sim.room_id, sender_key=secret)
            except WireError:
                secret = ratchet_secret(secret)
                continue
            return True
    return False
