"""Faults (issue 8, section 2): crashes, a split room, lossy links, skewed clocks and churn.

Every case runs whole peers in the deterministic simulator on virtual time,
mostly from the scenario files in ``scenarios/faults/``, and asserts the
outcome the issue names:

* a relay crash at depth 1, 2 or 3 leaves no descendant without audio for
  more than a second;
* a crashed host is replaced within the election deadline, one moderator per
  term;
* a split room with both halves talking heals into one moderator and one
  tree, and nobody plays a frame twice;
* 20 % loss, bursty loss and reordering leave the audio going, and the
  concealed share is reported;
* an invite is judged by the host's clock, with ±60 s of skew: a clock 90 s
  off admits invites inside that window and refuses the others clearly;
* listeners joining and leaving at 10 % a second keep the tree valid and the
  stable listeners' delivery at 99 % or more.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import random
import re
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

from mitalk_p2p.audio.sources import SyntheticSpeech
from mitalk_p2p.core.crypto_memo import sharing_crypto_results
from mitalk_p2p.core.invite import InviteError, InviteProblem, SignedInvite, create_invite
from mitalk_p2p.core.roles import Role
from mitalk_p2p.sim import trace as t
from mitalk_p2p.sim.analysis import Analysis
from mitalk_p2p.sim.command import SHIPPED, print_table
from mitalk_p2p.sim.network import LinkModel
from mitalk_p2p.sim.results import ScenarioResult
from mitalk_p2p.sim.runner import run_scenario
from mitalk_p2p.sim.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from mitalk_p2p.sim.simulator import PeerSpec, SimPeer, Simulator

FAULTS = SHIPPED / "faults"
REPAIR_DEADLINE_S = 1.0
"""Every listener cut off by a relay crash must hear audio again within this."""
ELECTION_SLACK_S = 0.5
"""Beyond a successor's own claim deadline: its pre-vote round trip and the claim's delivery."""

Run = tuple[ScenarioResult, Simulator]


def run(scenario: Scenario | Path, prepare: Callable[[Simulator], object] | None = None) -> Run:
    if isinstance(scenario, Path):
        scenario = load_scenario(scenario)
    with sharing_crypto_results():
        return run_scenario(scenario, prepare=prepare)


def failed(result: ScenarioResult) -> list[str]:
    return [f"{e.name}: {e.detail}" for e in result.expectations if not e.ok]


def tree_problems(sim: Simulator) -> list[str]:
    """Why the room is not one tree right now: [] when exactly one peer hosts, the
    host's plan and roster hold exactly the running members, and every member
    follows that host and climbs its parent chain to it without a cycle."""
    hosts = sim.hosts()
    if len(hosts) != 1:
        return [f"{len(hosts)} hosts: {', '.join(h.name for h in hosts)}"]
    root = hosts[0]
    assert root.peer is not None and root.peer.state is not None
    members = [p for p in sim.peers if p.status == "member"]
    keys = {p.identity.public_key for p in members}
    problems = []
    if set(root.peer.state.members) != keys:
        problems.append("the host's roster is not the set of running members")
    coordinator = root.peer.coordinator
    tree = coordinator.tree if coordinator is not None else None
    if tree is None or set(tree.members) != keys:
        problems.append("the host's tree plan is not the set of running members")
    for member in members:
        assert member.peer is not None
        if member.peer.replica.leader != root.identity.public_key:
            problems.append(f"{member.name} follows {sim.name_of(member.peer.replica.leader)}")
        if (problem := _chain_problem(sim, member, root)) is not None:
            problems.append(f"{member.name}: {problem}")
    return problems


def _chain_problem(sim: Simulator, member: SimPeer, root: SimPeer) -> str | None:
    seen = [member.name]
    here = member
    while here is not root:
        assert here.peer is not None
        parent = here.peer.media.parent
        if parent is None:
            return f"chain {'->'.join(seen)} ends without reaching {root.name}"
        name = sim.name_of(parent) or "?"
        if name in seen:
            return f"cycle {'->'.join([*seen, name])}"
        seen.append(name)
        here = sim[name]
        if here.status != "member":
            return f"chain {'->'.join(seen)} runs through a peer that is {here.status}"
    return None


# --- a relay crashes, at any depth --------------------------------------------------------


@attrs.frozen
class Crash:
    relay: str
    time: float
    depth: int
    descendants: tuple[str, ...]


def relay_crashes(sim: Simulator) -> list[Crash]:
    """Each relay crash, with its depth and descendants in the plan in force at the time."""
    crashes = []
    for action in sim.trace.of_type(t.ActionTaken):
        if action.action != "crash" or action.detail == "host":
            continue
        plans = [r for r in sim.trace.of_type(t.TreePlanned) if r.time <= action.time]
        parents = dict(plans[-1].parents)
        depth, above = 0, action.peer
        while above in parents:
            depth, above = depth + 1, parents[above]
        below = {action.peer}
        grew = True
        while grew:
            more = {child for child, parent in parents.items() if parent in below} - below
            below |= more
            grew = bool(more)
        crashes.append(Crash(action.peer, action.time, depth, tuple(sorted(below - {action.peer}))))
    return crashes


@pytest.fixture(scope="module")
def deep_crash() -> Run:
    return run(FAULTS / "deep_relay_crash.toml")


def test_every_descendant_of_a_crashed_relay_hears_again_within_a_second(deep_crash: Run) -> None:
    result, sim = deep_crash
    assert not failed(result)
    analysis = Analysis(sim, sim.now)
    crashes = relay_crashes(sim)
    assert sorted(c.depth for c in crashes) == [1, 2, 3]
    for crash in crashes:
        assert crash.descendants, f"{crash.relay} relayed to nobody"
        # Per descendant: from the last frame heard before the crash to the first after.
        gaps = analysis.outages(
            "host", crash.descendants, start=crash.time - 1.0, stop=crash.time + 3.0
        )
        assert set(gaps) == set(crash.descendants)
        slow = {name: gap for name, gap in gaps.items() if gap > REPAIR_DEADLINE_S}
        assert not slow, f"depth {crash.depth}: {slow}"
        # Every descendant really was cut off, so the measurement saw the crash.
        assert min(gaps.values()) > 0.2, f"depth {crash.depth}: {gaps}"


# --- the host crashes ---------------------------------------------------------------------


@attrs.define
class HostWatch:
    """Who hosts, sampled every 0.1 s of virtual time, and the successor list before a crash."""

    samples: list[tuple[float, list[tuple[str, str]]]] = attrs.Factory(list)
    successors: list[str] = attrs.Factory(list)

    def install(self, sim: Simulator, crash_at: float, until: float) -> None:
        sim.call_at(crash_at - 0.01, lambda: self._note_successors(sim))
        for tick in range(1, int(until * 10)):
            sim.call_at(tick / 10, lambda: self._sample(sim))

    def _note_successors(self, sim: Simulator) -> None:
        host = sim.host
        assert host is not None and host.peer is not None and host.peer.state is not None
        self.successors = [sim.name_of(k) or "?" for k in host.peer.state.successors]

    def _sample(self, sim: Simulator) -> None:
        hosting = []
        for p in sim.hosts():
            assert p.peer is not None and p.peer.state is not None
            hosting.append((p.name, str(p.peer.state.term)))
        self.samples.append((sim.now, hosting))


@pytest.mark.parametrize(
    ("path", "rank"),
    [
        (SHIPPED / "host_crash.toml", 0),
        # The host and its first successor crash together: the second one takes over.
        (FAULTS / "host_and_successor_crash.toml", 1),
    ],
)
def test_a_successor_moderates_within_the_election_deadline(path: Path, rank: int) -> None:
    scenario = load_scenario(path)
    room = scenario.room
    # Successor ``rank`` claims host_timeout + rank steps after it last heard the host.
    deadline = room.host_timeout_s + rank * room.succession_step_s + ELECTION_SLACK_S
    expectations = tuple(
        attrs.evolve(e, max_ms=deadline * 1000) if e.check == "host_takeover" else e
        for e in scenario.expectations
    )
    scenario = attrs.evolve(scenario, expectations=expectations)
    [crash_at] = [a.at for a in scenario.timeline if a.kind == "crash_host"]
    watch = HostWatch()
    result, sim = run(scenario, lambda sim: watch.install(sim, crash_at, scenario.duration))

    assert not failed(result)
    [takeover] = result.host_takeover_ms
    assert takeover <= deadline * 1000
    # The right successor took over, and moderates: it brought a raised hand on stage.
    new_host = watch.successors[rank]
    assert [h.name for h in sim.hosts()] == [new_host]
    staged = [a for a in sim.trace.of_type(t.ActionTaken) if a.action == "InviteToStage"]
    assert [(a.peer, a.detail) for a in staged] == [(new_host, "l007")]
    # Exactly one moderator per term over the whole trace, as every peer saw it...
    analysis = Analysis(sim, sim.now)
    terms = analysis.hosts_per_term()
    assert len(terms) == 2
    assert all(len(hosts) == 1 for hosts in terms.values()), terms
    # ...and never two running hosts at once: no term ever had a rival.
    assert all(len(hosting) <= 1 for _, hosting in watch.samples)
    moderated = {hosting[0] for _, hosting in watch.samples if hosting}
    assert {name for name, _ in moderated} == {"host", new_host}
    # The room went without a moderator only between the crash and the deadline.
    vacant = [when for when, hosting in watch.samples if not hosting]
    assert vacant and crash_at <= min(vacant) and max(vacant) <= crash_at + deadline


# --- a partition and heal, with both halves talking ---------------------------------------


@pytest.fixture(scope="module")
def split() -> tuple[Run, dict[float, list[str]]]:
    checks: dict[float, list[str]] = {}
    scenario = load_scenario(FAULTS / "split_and_merge.toml")
    [heal] = [a.at for a in scenario.timeline if a.kind == "heal"]

    def prepare(sim: Simulator) -> None:
        def check() -> None:
            checks[sim.now] = tree_problems(sim)

        moment = heal + 0.5
        while moment < scenario.duration:
            sim.call_at(moment, check)
            moment += 0.5

    return run(scenario, prepare), checks


def test_after_a_heal_one_moderator_and_one_tree(
    split: tuple[Run, dict[float, list[str]]],
) -> None:
    (result, sim), checks = split
    assert not failed(result)
    # Both halves had their own moderator during the split, in different terms.
    terms = Analysis(sim, sim.now).hosts_per_term()
    assert len(terms) == 2 and all(len(h) == 1 for h in terms.values())
    assert len({host for hosts in terms.values() for host in hosts}) == 2
    # Within two seconds of the heal the room is one tree, and stays one.
    heal = next(a.time for a in sim.trace.of_type(t.ActionTaken) if a.action == "heal")
    late = {at: problems for at, problems in checks.items() if at >= heal + 2.0}
    assert late and all(not problems for problems in late.values()), late
    assert tree_problems(sim) == []
    # ...and that tree holds everyone: the merge lost nobody from either half.
    assert all(p.status == "member" for p in sim.peers)
    host = sim.host
    assert host is not None and host.peer is not None and host.peer.state is not None
    assert len(host.peer.state.members) == len(sim.peers)


def test_after_a_heal_no_frame_is_played_twice(split: tuple[Run, dict[float, list[str]]]) -> None:
    (result, sim), _ = split
    # A speaker's frame counter never repeats within its session (and none rejoins
    # here), so (listener, speaker, counter) names each (speaker, generation, counter).
    seen: set[tuple[str, str, int]] = set()
    twice = []
    for delivery in sim.trace.deliveries():
        key = (delivery.listener, delivery.speaker, delivery.seq)
        if key in seen:
            twice.append(key)
        seen.add(key)
    assert not twice
    assert len(seen) > 10_000
    # The links really duplicated datagrams, and the replay windows dropped the copies.
    assert result.counters["datagrams_duplicated"] > 100
    dropped = 0
    for p in sim.peers:
        assert p.peer is not None
        dropped += p.peer.statistics().media.dropped.get("duplicate", 0)
    assert dropped >= result.counters["datagrams_duplicated"] // 2


# --- 20 % loss, bursty loss and reordering ------------------------------------------------


@attrs.frozen
class Lossy:
    counter: str
    """The network counter that shows the fault was applied."""
    outage_s: float
    """The longest a listener may go without audio (the scenario file says the same)."""
    concealed: tuple[float, float]
    """The sane range of the concealed share of samples."""


LOSSY = {
    # Independent loss silences no link for long: at worst a parent is given up
    # for dead and replaced, as after a crash.
    "heavy_loss": Lossy("datagrams_lost", REPAIR_DEADLINE_S, (0.02, 0.35)),
    # A burst silences a link for its length, and a failover may follow.
    "bursty_loss": Lossy("datagrams_burst_lost", REPAIR_DEADLINE_S + 0.5, (0.02, 0.35)),
    # Nothing is lost; only frames later than the jitter buffer's target are concealed.
    "reordering": Lossy("datagrams_reordered", 0.1, (0.0, 0.05)),
}


@pytest.fixture(scope="module")
def lossy() -> dict[str, Run]:
    return {name: run(FAULTS / f"{name}.toml") for name in LOSSY}


@pytest.mark.parametrize("name", sorted(LOSSY))
def test_audio_continues_through_loss_and_reordering(name: str, lossy: dict[str, Run]) -> None:
    result, sim = lossy[name]
    case = LOSSY[name]
    assert result.counters[case.counter] > 500, "the fault was applied"
    # The file's expectations: every listener heard the host throughout, no outage
    # beyond the bound, enough frames delivered, none played twice.
    assert not failed(result)
    checks = {e.name.split()[0] for e in result.expectations}
    assert {"outage", "heard", "delivery", "no_frame_played_twice"} <= checks
    outages = Analysis(sim, sim.now).outages("host")
    assert len(outages) == sum(1 for p in sim.peers if p.name != "host")
    assert max(outages.values()) <= case.outage_s


@pytest.mark.parametrize("name", sorted(LOSSY))
def test_the_concealed_share_is_reported_and_sane(name: str, lossy: dict[str, Run]) -> None:
    result, sim = lossy[name]
    low, high = LOSSY[name].concealed
    ratio = result.concealed_ratio
    assert ratio is not None
    assert low <= ratio < high
    assert result.to_json()["metrics"]["concealed_ratio"] == pytest.approx(ratio, abs=1e-6)
    table = io.StringIO()
    print_table(result, table)
    assert f"concealed       {ratio * 100:.2f} % of samples" in table.getvalue()
    # Concealment covers what neither the network nor FEC delivered: never more
    # than the share of frames that did not arrive, plus the few that came late.
    missing = 1 - sum(result.delivery_ratio.values()) / len(result.delivery_ratio)
    assert ratio <= missing + 0.05
    assert sim.playout.played_samples > 0


def test_the_concealed_share_is_in_the_html_report(lossy: dict[str, Run]) -> None:
    pytest.importorskip("matplotlib")
    from mitalk_p2p.sim.report import render_html

    result, _ = lossy["heavy_loss"]
    shown = result.to_json()["metrics"]["concealed_ratio"]
    page = render_html(result)
    row = page[page.index("<td>concealed_ratio</td>") :]
    assert row.index(f'<td class="number">{shown:.6g}</td>') < 40


# --- a peer's clock is 90 s off -----------------------------------------------------------

SKEW_S = 90.0
LONG = 3600


@attrs.frozen
class Skew:
    """Whose clock is off, by how much, and how an invite is minted and presented."""

    host: float = 0.0
    issuer: float = 0.0
    joiner: float = 0.0
    lifetime: int = LONG
    presented_after: float = 10.0
    """Seconds between minting the invite and presenting it to the host."""
    by_host: bool = False
    """The host mints the invite itself (on its own clock)."""


def present(skew: Skew) -> tuple[Simulator, SignedInvite]:
    """A room whose moderator ``mod`` mints an invite that ``guest`` presents later."""
    specs = [
        PeerSpec(name="host", clock_offset=skew.host),
        PeerSpec(name="mod", clock_offset=skew.issuer),
        PeerSpec(name="guest", clock_offset=skew.joiner),
    ]
    sim = Simulator.create(specs, seed=3, link=LinkModel(latency_ms=10))
    sim.create_room("host")
    sim.join("mod", sim.invite("host", role=Role.MODERATOR), via="host")
    sim.run_until(1.0)
    assert sim["mod"].status == "member"
    issuer = sim["host" if skew.by_host else "mod"]
    invite = create_invite(
        issuer.identity,
        room_id=sim.room_id,
        room_name="Simulated room",
        role=Role.LISTENER,
        now=sim.unix_time(issuer),
        lifetime=skew.lifetime,
        nonce=hashlib.blake2b(repr(skew).encode(), digest_size=16).digest(),
    )
    sim.run_for(skew.presented_after)
    sim.join("guest", invite, via="host")
    sim.run_for(1.0)
    return sim, invite


# Valid at the host when  not_before - 60 <= host clock < expires_at + 60.
WITHIN = {
    "issuer 90 s ahead, invite 45 s old: starts 45 s ahead of the host": Skew(
        issuer=SKEW_S, presented_after=45
    ),
    "host 90 s behind, invite 45 s old: starts 45 s ahead of the host": Skew(
        host=-SKEW_S, presented_after=45
    ),
    "host 90 s behind, its own invite": Skew(host=-SKEW_S, by_host=True),
    "issuer 90 s behind, 60 s invite 10 s old: expired 40 s ago at the host": Skew(
        issuer=-SKEW_S, lifetime=60, presented_after=10
    ),
    "host 90 s ahead, 60 s invite 10 s old: expired 40 s ago at the host": Skew(
        host=SKEW_S, lifetime=60, presented_after=10
    ),
    "joiner 90 s ahead: the joiner's clock is not consulted": Skew(joiner=SKEW_S),
    "joiner 90 s behind: the joiner's clock is not consulted": Skew(joiner=-SKEW_S),
}
BEYOND = {
    "issuer 90 s ahead, invite 10 s old: starts 80 s ahead of the host": (
        Skew(issuer=SKEW_S, presented_after=10),
        "not-yet-valid",
    ),
    "host 90 s behind, invite 10 s old: starts 80 s ahead of the host": (
        Skew(host=-SKEW_S, presented_after=10),
        "not-yet-valid",
    ),
    "issuer 90 s behind, 60 s invite 45 s old: expired 75 s ago at the host": (
        Skew(issuer=-SKEW_S, lifetime=60, presented_after=45),
        "expired",
    ),
    "host 90 s ahead, 60 s invite 45 s old: expired 75 s ago at the host": (
        Skew(host=SKEW_S, lifetime=60, presented_after=45),
        "expired",
    ),
}


@pytest.mark.parametrize("skew", list(WITHIN.values()), ids=list(WITHIN))
def test_an_invite_within_the_skew_window_admits(skew: Skew) -> None:
    with sharing_crypto_results():
        sim, _ = present(skew)
        assert sim["guest"].status == "member"
        assert not sim.trace.of_type(t.JoinRefused)
        sim.speak("host", SyntheticSpeech(1), 0.5, codec="synthetic")
        sim.run_for(1.0)
    assert any(d.listener == "guest" for d in sim.trace.deliveries())


@pytest.mark.parametrize(("skew", "problem"), list(BEYOND.values()), ids=list(BEYOND))
def test_an_invite_beyond_the_skew_window_fails_clearly(skew: Skew, problem: str) -> None:
    with sharing_crypto_results():
        sim, invite = present(skew)
    assert sim["guest"].status == "left"
    [refusal] = sim.trace.of_type(t.JoinRefused)
    assert refusal.peer == "guest"
    code, _, message = refusal.reason.partition(": ")
    assert code == problem
    host, guest = sim["host"], sim["guest"]
    assert host.peer is not None and guest.peer is not None
    assert host.peer.replica.statistics().joins_refused == 1
    assert guest.peer.state is None  # refused: no roster
    # The message says what is wrong, when, and by whose clock (read as the host judged).
    edge = invite.invite.not_before if problem == "not-yet-valid" else invite.invite.expires_at
    assert f"(at {_utc(edge)} UTC)" in message
    found = re.search(r"by the host's clock, which reads (\S+ \S+) UTC", message)
    assert found is not None, message
    read = datetime.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S")
    judged = sim.unix_time(host) - (sim.now - refusal.time)
    assert abs(read.replace(tzinfo=datetime.UTC).timestamp() - judged) < 1.0
    if problem == "not-yet-valid":
        assert message.startswith("invite is not valid yet: it starts in 1 min")
        assert "clock is off" in message
    else:
        assert message.startswith("invite expired 1 min ago")


def test_a_joiner_whose_clock_is_90_s_behind_is_told_so_by_its_own_check() -> None:
    """``mitalk join`` checks an invite on the joiner's clock before dialling."""
    with sharing_crypto_results():
        sim, invite = present(Skew(joiner=-SKEW_S, presented_after=10))
    # The host admits it (its own clock is right), but the joiner's own check, run
    # on its clock, finds the invite starting 80 s ahead: beyond the window.
    assert sim["guest"].status == "member"
    joiner_clock = sim.unix_time(sim["guest"]) - 1.0  # when it was presented
    with pytest.raises(InviteError, match=r"not valid yet.*check this computer's clock") as caught:
        invite.verify(joiner_clock)
    assert caught.value.problem is InviteProblem.NOT_YET_VALID
    # Had it been 35 s older, it would start 45 s ahead of that clock: inside the window.
    assert invite.verify(joiner_clock + 35)


def _utc(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(int(timestamp), tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


# --- churn ----------------------------------------------------------------------------------

CHURN = """
name = "churn"
description = "100 listeners; 10 % of them join or leave every second for a minute."
seed = 8
duration = 70.0

[room]
codec = "synthetic"

[network]
latency_ms = 10
jitter_ms = 2

[peers]
listeners = 100
join_spread_s = 3.0

[[timeline]]
at = 4.0
action = "speak"
peer = "host"
duration = 65.0
"""
CHURNERS = 40
CHURN_RATE = 0.10
CHURN_FROM, CHURN_SECONDS = 5, 60


@attrs.define
class Churn:
    """Every second, 10 % of the listeners present leave or come back; the rest stay."""

    sim: Simulator
    churners: list[str]
    rng: random.Random
    rounds: list[tuple[int, int]] = attrs.Factory(list)
    """(listeners present, joins and leaves) for each second of churn."""
    checks: dict[float, list[str]] = attrs.Factory(dict)

    def install(self) -> None:
        for second in range(CHURN_FROM, CHURN_FROM + CHURN_SECONDS):
            self.sim.call_at(float(second), self.churn)
            self.sim.call_at(second + 0.5, self.check)
        self.sim.call_at(CHURN_FROM + CHURN_SECONDS + 2.0, self.check)

    def churn(self) -> None:
        sim = self.sim
        present = sum(1 for p in sim.peers if p.status == "member" and p.name != "host")
        eligible = [n for n in self.churners if sim[n].status in ("member", "left")]
        chosen = self.rng.sample(eligible, round(CHURN_RATE * present))
        for name in chosen:
            if sim[name].status == "member":
                sim.leave(name)
            else:
                host = sim.host
                assert host is not None
                sim.join(name, sim.invite(host.name), via=host.name)
        self.rounds.append((present, len(chosen)))

    def check(self) -> None:
        problems = tree_problems(self.sim)
        host = self.sim.host
        coordinator = host.peer.coordinator if host is not None and host.peer else None
        tree = coordinator.tree if coordinator is not None else None
        if (
            coordinator is not None
            and tree is not None
            and not tree.within_limits(coordinator.limits)
        ):
            problems.append("the host's plan breaks its fanout or depth limits")
        self.checks[self.sim.now] = problems


def test_churn_keeps_the_tree_valid_and_stable_listeners_hear_99_percent() -> None:
    scenario = parse_scenario(CHURN)
    rng = random.Random(scenario.seed)
    listeners = [p.name for p in scenario.peers if p.name != "host"]
    churners = sorted(rng.sample(listeners, CHURNERS))
    stable = [n for n in listeners if n not in churners]
    watch: list[Churn] = []

    def prepare(sim: Simulator) -> None:
        watch.append(Churn(sim, churners, rng))
        watch[0].install()

    _, sim = run(scenario, prepare)
    churn = watch[0]
    # 10 % of the listeners present joined or left every second, for a minute.
    assert len(churn.rounds) == CHURN_SECONDS
    assert all(count == round(CHURN_RATE * present) for present, count in churn.rounds)
    assert min(present for present, _ in churn.rounds) >= 0.6 * len(listeners)
    assert len(sim.trace.of_type(t.JoinedRoom)) > len(listeners) + 200
    assert not sim.trace.of_type(t.JoinRefused)
    assert len(churn.checks) == CHURN_SECONDS + 1
    broken = {at: problems for at, problems in churn.checks.items() if problems}
    assert not broken
    delivery = Analysis(sim, scenario.duration).delivery("host", stable)
    assert set(delivery) == set(stable)
    worst = min(delivery, key=lambda n: delivery[n])
    assert delivery[worst] >= 0.99, f"{worst} got {delivery[worst]:.4f}"


# --- the scenario vocabulary these cases use --------------------------------------------


def test_a_crash_depth_picks_among_relays_only() -> None:
    base = 'duration = 4.0\n[peers]\nlisteners = 3\n[[timeline]]\nat = 2.0\naction = "crash"\n'
    with pytest.raises(ScenarioError, match=r"depth goes with peer = 'busiest_relay'"):
        parse_scenario(base + 'peer = "l001"\ndepth = 1\n')
    with pytest.raises(ScenarioError, match="must be between 1 and 64"):
        parse_scenario(base + 'peer = "busiest_relay"\ndepth = 0\n')
    # Three listeners all hang off the host: nobody relays at depth 2.
    _, sim = run(parse_scenario(base + 'peer = "busiest_relay"\ndepth = 2\n'))
    [refused] = sim.trace.of_type(t.ActionRefused)
    assert refused.reason == "no peer relays to anyone at depth 2"
    assert all(p.status == "member" for p in sim.peers)
