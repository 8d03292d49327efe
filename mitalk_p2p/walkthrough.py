"""``mitalk demo``: a guided tour of a room, its control plane and then its audio, in memory.

Everything here is the real protocol: fresh Ed25519 identities, signed invites,
Noise XX handshakes, the signed moderation log and host succession.  Only the
network is simulated (an in-memory control network on a virtual clock), so the
tour runs anywhere in well under a second.
"""

from __future__ import annotations

from typing import TextIO

import nacl.utils

from . import audio_tour
from .core import ops
from .core.control import LogEntry, SignedRequest, encode_message
from .core.events import Event, JoinRefusedEvent, MembersMerged, RoomChanged, TermStarted
from .core.identity import Identity, PublicKey
from .core.ids import ROOM_ID_SIZE, RoomId
from .core.invite import SignedInvite, create_invite
from .core.rejection import Rejected
from .core.replica import RoomConfig, RoomReplica
from .core.roles import Role
from .sim.control_net import ControlNet, establish_link

CONFIG = RoomConfig(heartbeat_interval=1.0, host_timeout=4.0, succession_step=1.0)
START = 1_795_000_000.0  # the walkthrough's virtual wall clock (unix seconds)


class Tour:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.room_id = RoomId(nacl.utils.random(ROOM_ID_SIZE))
        self.net = ControlNet(self.room_id, now=START)
        self.names: dict[PublicKey, str] = {}
        self.replicas: dict[str, RoomReplica] = {}

    # --- printing ----------------------------------------------------------

    def section(self, title: str) -> None:
        print(f"\n== {title}", file=self.out)

    def say(self, text: str) -> None:
        print(f"   {text}", file=self.out)

    def narrate(self, viewer: str) -> None:
        """Print what ``viewer``'s replica reported, then drop everyone else's copies."""
        for name, replica in self.replicas.items():
            events = replica.events()
            if name == viewer:
                for event in events:
                    line = self.describe(event)
                    if line:
                        self.say(f"({viewer} sees) {line}")

    def describe(self, event: Event) -> str | None:
        match event:
            case RoomChanged(seq=seq, author=author, op=op):
                who = self.names.get(author, author.short)
                return f"#{seq:<3} {who}: {self.describe_op(op)}"
            case TermStarted(term=term, host=host):
                return f"term {term} begins; {self.names[host]} now moderates"
            case JoinRefusedEvent(problem=problem, message=message):
                return f"join refused ({problem}): {message}"
            case MembersMerged(from_term=term, members=members):
                merged = ", ".join(self.names[k] for k in members) or "nobody new"
                return f"merged the branch of term {term}: {merged}"
            case _:
                return None

    def describe_op(self, op: ops.Op) -> str:
        def name(key: PublicKey) -> str:
            return self.names.get(key, key.short)

        match op:
            case ops.Admit(member=member, role=role):
                return f"admitted {name(member)} as {role.label}"
            case ops.InviteToStage(target=target):
                return f"invited {name(target)} to the stage"
            case ops.Mute(target=target, muted=muted):
                return f"{'muted' if muted else 'unmuted'} {name(target)}"
            case ops.Kick(target=target):
                return f"kicked {name(target)} (banned)"
            case ops.Promote(target=target):
                return f"made {name(target)} a co-moderator"
            case ops.MoveToAudience(target=target):
                return f"moved {name(target)} back to the audience"
            case ops.SetSuccessors(successors=successors):
                return "successor list: " + (", ".join(name(k) for k in successors) or "(empty)")
            case ops.TakeOver(previous_host=previous, reason=reason):
                gone = name(previous) if previous else "the previous host"
                return f"took over from {gone} ({reason.name.lower()})"
            case ops.SelfMute(muted=muted):
                return "muted themself" if muted else "unmuted themself"
            case _:
                return ops.describe_op(op)

    # --- acting ------------------------------------------------------------

    def person(self, name: str) -> Identity:
        identity = Identity.generate(name)
        self.names[identity.public_key] = name
        return identity

    def act(self, name: str, op: ops.Op) -> None:
        self.replicas[name].act(op, self.net.now)
        self.net.pump()

    def join(self, identity: Identity, invite: SignedInvite) -> RoomReplica:
        replica = RoomReplica.joining(identity, invite, CONFIG)
        self.net.join(replica, self.replicas["ann"].me)
        if replica.joined:
            self.replicas[identity.display_name] = replica
        return replica


def run(out: TextIO) -> int:
    tour = Tour(out)
    net = tour.net
    print("mitalk-p2p control-plane walkthrough (real crypto, simulated network)", file=out)

    tour.section("1. Identities: every peer is an Ed25519 key; people compare fingerprints")
    ann, bob, cat, dan, eve = (tour.person(n) for n in ("ann", "bob", "cat", "dan", "eve"))
    for identity in (ann, bob, cat, dan, eve):
        tour.say(f"{identity.display_name:<4} {identity.fingerprint}")

    tour.section("2. ann creates a room and is its host (the moderator)")
    host = RoomReplica.create_room(
        ann, tour.room_id, name="Friday demo", now=net.now, config=CONFIG
    )
    tour.replicas["ann"] = net.add(host)
    tour.say(f"room {tour.room_id.hex}  'Friday demo'")
    tour.narrate("ann")

    tour.section("3. Signed invites: one copy-paste string, checked offline")
    open_invite = create_invite(
        ann,
        room_id=tour.room_id,
        room_name="Friday demo",
        role=Role.LISTENER,
        now=net.now,
        lifetime=3600,
        max_uses=3,
        addresses=["127.0.0.1:47000"],
    )
    cat_invite = create_invite(
        ann,
        room_id=tour.room_id,
        room_name="Friday demo",
        role=Role.SPEAKER,
        now=net.now,
        lifetime=3600,
        audience=cat.public_key,
    )
    tour.say(f"listener invite, 3 uses:  {open_invite.token[:48]}…")
    tour.say(f"speaker invite, for cat:  {cat_invite.token[:48]}…")
    checked = SignedInvite.from_token(open_invite.token).verify(net.now, room_id=tour.room_id)
    tour.say(f"verified offline: role={checked.role.label}, issuer={checked.issuer.fingerprint}")

    tour.section("4. Secure links: Noise XX, bound to this room, proving each side's identity")
    dialer, answerer = establish_link(bob, ann, tour.room_id)
    tour.say(f"bob -> ann: ann proved {dialer.remote_identity.fingerprint}")
    tour.say(f"ann <- bob: bob proved {answerer.remote_identity.fingerprint}")
    tour.say(f"handshake hash {dialer.handshake_hash.hex()[:32]}… (a join signs it)")

    tour.section("5. Joining: the host checks invite, audience, uses, bans and the link")
    tour.join(bob, open_invite)
    tour.join(dan, open_invite)
    tour.join(cat, cat_invite)
    tour.narrate("ann")
    refused = tour.join(eve, cat_invite)
    tour.say("eve tries cat's personal invite:")
    for event in refused.events():
        tour.say(f"  -> {tour.describe(event)}")

    tour.section("6. Raise a hand, invite to the stage, consent")
    tour.act("bob", ops.RaiseHand())
    tour.act("dan", ops.RaiseHand())
    queue = [m.name for m in host.state.hand_queue()] if host.state else []
    tour.say(f"hand queue seen by the moderator: {queue}")
    tour.act("ann", ops.InviteToStage(bob.public_key))
    tour.act("bob", ops.AcceptStage())
    tour.act("ann", ops.InviteToStage(dan.public_key))
    tour.act("dan", ops.DeclineStage())
    tour.narrate("cat")

    tour.section("7. Moderation: mute, co-moderators, back to the audience, kick")
    tour.act("ann", ops.Mute(bob.public_key, True))
    tour.act("ann", ops.Promote(cat.public_key))
    tour.act("cat", ops.MoveToAudience(bob.public_key))
    tour.act("ann", ops.Kick(dan.public_key))
    tour.narrate("bob")
    try:
        tour.replicas["bob"].act(ops.Kick(cat.public_key), net.now)
    except Rejected as exc:
        tour.say(f"bob (a listener) tries to kick cat: refused locally: {exc}")
    again = RoomReplica.joining(dan, open_invite, CONFIG)
    net.join(again, ann.public_key)
    for event in again.events():
        tour.say(f"dan rejoins with his old invite -> {tour.describe(event)}")

    tour.section("8. Forged and replayed commands are dropped and counted")
    state = tour.replicas["bob"].state
    assert state is not None
    fake = SignedRequest.create(eve, tour.room_id, state.term, 1, ops.Kick(cat.public_key))
    forged = LogEntry.create(eve, tour.room_id, state.term, state.seq + 1, fake)
    tour.replicas["bob"].receive(encode_message(forged), eve.public_key, net.now)
    tour.say(
        f"eve forges a log entry kicking cat -> bob's rejections: "
        f"{tour.replicas['bob'].statistics().rejected}"
    )

    tour.section("9. Host succession: ann's laptop dies; the signed successor list decides")
    net.run_for(2.0)
    state = host.state
    assert state is not None
    tour.say("successors: " + ", ".join(tour.names[k] for k in state.successors))
    crashed_at = net.now
    net.crash(ann.public_key)
    net.run_for(CONFIG.host_timeout + 1.5)
    tour.narrate("bob")
    tour.say(
        f"ann went silent at t={crashed_at - START:.1f}s; "
        f"cat moderates term {tour.replicas['cat'].term} "
        f"(timeout {CONFIG.host_timeout:.0f}s + rank 0 × Δ)"
    )

    tour.section("10. A peer cut off alone doesn't take over; the heal brings it back")
    fay = tour.person("fay")
    fay_invite = create_invite(
        cat,
        room_id=tour.room_id,
        room_name="Friday demo",
        role=Role.LISTENER,
        now=net.now,
        lifetime=600,
    )
    net.partition([cat.public_key, fay.public_key], [bob.public_key])
    fay_replica = RoomReplica.joining(fay, fay_invite, CONFIG)
    net.join(fay_replica, cat.public_key)
    tour.replicas["fay"] = fay_replica
    net.run_for(CONFIG.host_timeout + 2.0)
    tour.say(
        f"split: cat's side is at term {tour.replicas['cat'].term}, "
        f"bob's side at term {tour.replicas['bob'].term}"
    )
    net.heal()
    net.run_for(4.0)
    tour.narrate("cat")
    alive = [tour.replicas[n] for n in ("bob", "cat", "fay")]
    digests = {r.state.digest().hex()[:16] for r in alive if r.state}
    leaders = {tour.names[r.leader] for r in alive if r.leader}
    tour.say(
        "bob, alone, asked for a pre-vote and got no grant, so he never claimed; "
        "healed, he follows cat again and fay, who joined meanwhile, is in his roster"
    )
    tour.say(f"moderator(s) {sorted(leaders)}, room digest(s) {sorted(digests)}")

    ok = len(digests) == 1 and len(leaders) == 1
    audio_ok = audio_tour.run(out) == 0
    tour.say("The same core runs under the simulator and the trio runtime.")
    return 0 if ok and audio_ok else 1
