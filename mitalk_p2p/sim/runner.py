"""Run a :class:`~.scenario.Scenario` in the simulator and judge its expectations."""

from __future__ import annotations

import functools
import time
import zlib
from collections.abc import Callable

from ..audio.sources import AudioSourceError, source_from_spec
from ..codec import CodecConfig
from ..core.jitter import JitterConfig
from ..core.media import MediaConfig
from ..core.ops import (
    AcceptStage,
    DeclineStage,
    Demote,
    InviteToStage,
    Kick,
    LowerHand,
    MoveToAudience,
    Mute,
    Op,
    Promote,
    RaiseHand,
    StepDown,
)
from ..core.replica import RoomConfig
from ..core.roles import Role
from . import trace as t
from .analysis import Analysis
from .network import Uplink
from .results import ScenarioResult
from .scenario import BUSIEST_RELAY, REST, Action, Scenario
from .simulator import PeerSpec, SimulationError, Simulator

Progress = Callable[[float, float], None]
"""Called with (virtual seconds done, virtual seconds in all) as a run goes on."""

_SELF_OPS: dict[str, Callable[[], Op]] = {
    "raise_hand": RaiseHand,
    "lower_hand": LowerHand,
    "accept_stage": AcceptStage,
    "decline_stage": DeclineStage,
    "step_down": StepDown,
}


def build_simulator(scenario: Scenario, seed: int) -> Simulator:
    room = scenario.room
    specs = [
        PeerSpec(
            name=p.name,
            relay_capacity=p.relay_capacity,
            uplink=Uplink(kbps=p.upload_kbps, queue_ms=p.queue_ms),
            clock_offset=p.clock_offset_ms / 1000.0,
        )
        for p in scenario.peers
    ]
    media = MediaConfig(
        frame_seconds=room.frame_ms / 1000.0,
        report_frames=True,
        jitter=JitterConfig() if room.decode else None,
    )
    sim = Simulator.create(
        specs,
        seed=seed,
        link=scenario.link,
        room_config=RoomConfig(
            heartbeat_interval=room.heartbeat_s,
            host_timeout=room.host_timeout_s,
            succession_step=room.succession_step_s,
        ),
        media_config=media,
        fanout=room.fanout,
        codec=CodecConfig(frame_ms=room.frame_ms),
        decode_audio=room.decode,
    )
    for override in scenario.links:
        a, b = (sim[name].index for name in override.between)
        sim.network.set_link(a, b, scenario.link.with_changes(**override.changes))
    return sim


def run_scenario(
    scenario: Scenario,
    *,
    seed: int | None = None,
    progress: Progress | None = None,
    prepare: Callable[[Simulator], object] | None = None,
) -> tuple[ScenarioResult, Simulator]:
    """Run ``scenario`` to its end; the result and the simulator (with its trace).

    ``prepare`` is called with the simulator once the timeline is scheduled and
    before anything runs, so a caller can add actions or probes of its own
    (:meth:`Simulator.call_at`).
    """
    seed = scenario.seed if seed is None else seed
    started = time.perf_counter()
    sim = build_simulator(scenario, seed)
    _Timeline(scenario, sim, seed).schedule()
    if prepare is not None:
        prepare(sim)
    if progress is not None:
        step = max(1.0, scenario.duration / 100)
        moment = step
        while moment < scenario.duration:
            sim.call_at(moment, functools.partial(progress, moment, scenario.duration))
            moment += step
    sim.run_until(scenario.duration)
    if progress is not None:
        progress(scenario.duration, scenario.duration)
    analysis = Analysis(sim, scenario.duration)
    result = analysis.result(scenario, seed, wall_s=time.perf_counter() - started)
    return result, sim


class _Timeline:
    def __init__(self, scenario: Scenario, sim: Simulator, seed: int) -> None:
        self.scenario, self.sim, self.seed = scenario, sim, seed

    def schedule(self) -> None:
        sim, scenario = self.sim, self.scenario
        host = scenario.peers[0]
        sim.create_room(host.name, room_name=scenario.room.name)
        for plan in scenario.peers[1:]:
            if plan.join_at is not None:
                sim.call_at(plan.join_at, functools.partial(self.join, plan.name, plan.role, None))
        for action in scenario.timeline:
            sim.call_at(action.at, functools.partial(self.perform, action))

    # --- actions ---------------------------------------------------------------

    def perform(self, action: Action) -> None:
        try:
            self.dispatch(action)
        except (SimulationError, AudioSourceError) as problem:
            who = action.peer or action.target or ""
            self.sim.trace.add(t.ActionRefused(self.sim.now, action.kind, who, str(problem)))

    def dispatch(self, action: Action) -> None:
        sim, kind = self.sim, action.kind
        if kind == "join":
            role = action.role
            assert action.peer is not None
            self.join(action.peer, role, None)
        elif kind == "leave":
            sim.leave(self.named(action.peer))
        elif kind in _SELF_OPS:
            sim.act(self.named(action.peer), _SELF_OPS[kind]())
        elif kind == "speak":
            name = self.named(action.peer)
            source = source_from_spec(
                action.audio,
                seed=zlib.crc32(f"{self.seed}:{name}:{action.at}".encode()),
                frame_samples=sim.codec.samples_per_frame,
                base_dir=self.scenario.base_dir,
            )
            sim.speak(name, source, action.duration, codec=self.scenario.room.codec)
        elif kind == "crash":
            sim.crash(self.crash_target(action.peer, action.depth))
        elif kind == "crash_host":
            sim.crash(self.current_host())
        elif kind == "partition":
            sim.partition(self.groups(action.groups))
        elif kind == "heal":
            sim.heal()
        elif kind == "set_network":
            sim.change_links(**action.changes)
        elif kind == "eavesdrop":
            sim.tap(self.named(action.peer))
        else:
            self.moderate(action)

    def moderate(self, action: Action) -> None:
        actor = action.peer or self.current_host()
        target = self.sim[self.named(action.target)].identity.public_key
        ops: dict[str, Op] = {
            "invite_to_stage": InviteToStage(target),
            "move_to_audience": MoveToAudience(target),
            "mute": Mute(target, True),
            "unmute": Mute(target, False),
            "kick": Kick(target),
            "promote": Promote(target),
            "demote": Demote(target),
        }
        self.sim.act(actor, ops[action.kind])

    def join(self, name: str, role: str, via: str | None) -> None:
        host = self.current_host()
        invite = self.sim.invite(host, role=Role[role.upper()])
        self.sim.join(name, invite, via=via or host)

    # --- naming ------------------------------------------------------------------

    def named(self, name: str | None) -> str:
        if name is None:
            raise SimulationError("the action names no peer")
        return name

    def current_host(self) -> str:
        host = self.sim.host
        if host is None:
            raise SimulationError("no peer hosts the room right now")
        return host.name

    def crash_target(self, name: str | None, depth: int | None = None) -> str:
        if name != BUSIEST_RELAY:
            return self.named(name)
        host = self.sim.host
        coordinator = host.peer.coordinator if host is not None and host.peer else None
        tree = coordinator.tree if coordinator is not None else None
        if tree is None:
            raise SimulationError("there is no tree, so no busiest relay")
        relays = [
            k
            for k in tree.members
            if k != tree.root and tree.children(k) and depth in (None, tree.depth(k))
        ]
        if not relays:
            where = f" at depth {depth}" if depth is not None else ""
            raise SimulationError(f"no peer relays to anyone{where}")
        # The most children wins; ties go to the peer listed first in the scenario.
        names = [self.sim.name_of(k) or "?" for k in relays]
        busiest = min(
            zip(relays, names, strict=True),
            key=lambda r: (-len(tree.children(r[0])), self.sim[r[1]].index),
        )
        return busiest[1]

    def groups(self, groups: tuple[tuple[str, ...], ...]) -> list[list[str]]:
        listed = {name for group in groups for name in group if name != REST}
        rest = [p.name for p in self.sim.peers if p.name not in listed]
        return [
            [n for name in group for n in (rest if name == REST else [name])] for group in groups
        ]
