"""Per-speaker sender keys: fresh keys, the join ratchet, and a listener's keyring.

A speaker seals its frames under a 32-byte *sender key*, handed to each member
over the pairwise Noise link.  Two ways to move to a new key:

* **Ratchet** (someone joined): the next key is a one-way hash of the current
  one, so members already holding the key derive it themselves and only the
  newcomer needs a grant.  The newcomer gets the ratcheted key and, the hash
  being one-way, cannot compute any key used before it arrived.
* **Fresh key** (someone left or was kicked): a new random key in a new epoch,
  granted only to the remaining members.  A removed member can ratchet its old
  key forward as far as it likes and never reach the new epoch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import attrs
import nacl.utils

from .errors import LocalProtocolError
from .identity import PublicKey
from .media_frame import KEY_SIZE, KeyGeneration

KeySource = Callable[[int], bytes]
"""Where fresh key material comes from: ``source(n)`` returns ``n`` secret bytes."""

MAX_RATCHET_AHEAD = 64
"""Furthest a listener ratchets forward on its own to read a frame (bounds CPU per frame)."""
KEYS_PER_SPEAKER = 8
"""Generations a listener keeps per speaker, so frames in flight across a switch still open."""


def system_key_source(size: int) -> bytes:
    """Key material from libsodium's CSPRNG: the only source real peers use."""
    return bytes(nacl.utils.random(size))


class SimulatedKeysRefused(LocalProtocolError):
    """A real peer was handed the simulator's deterministic key material."""


def refuse_simulated_keys(source: KeySource) -> KeySource:
    """Return ``source``, unless it is the simulator's :class:`SeededKeySource`.

    Real peers (the trio runtime) pass their key source through this, so a
    seeded, guessable key can never protect real audio.
    """
    if isinstance(source, SeededKeySource):
        raise SimulatedKeysRefused(
            "seeded sender keys are for the simulator only; a real peer needs system randomness"
        )
    return source


@attrs.define(repr=False)
class SeededKeySource:
    """Deterministic key material for the simulator, so a seed reproduces a run exactly.

    Never use it on a real network: anyone who knows the seed knows every key.
    """

    seed: bytes
    _counter: int = 0

    def __call__(self, size: int) -> bytes:
        self._counter += 1
        return hashlib.blake2b(
            self._counter.to_bytes(8, "big"),
            key=self.seed[:64],
            digest_size=size,
            person=b"mitalk-simkeys",
        ).digest()

    def __repr__(self) -> str:
        return "SeededKeySource(<hidden>)"


def ratchet_secret(secret: bytes) -> bytes:
    return hashlib.blake2b(b"", key=secret, digest_size=KEY_SIZE, person=b"mitalk-ratchet").digest()


@attrs.frozen(repr=False)
class SenderKey:
    generation: KeyGeneration
    secret: bytes = attrs.field(repr=False)

    @classmethod
    def fresh(cls, epoch: int, source: KeySource) -> SenderKey:
        return cls(KeyGeneration(epoch, 0), source(KEY_SIZE))

    def ratcheted(self) -> SenderKey:
        return SenderKey(self.generation.ratcheted(), ratchet_secret(self.secret))

    def __repr__(self) -> str:
        return f"SenderKey({self.generation}, secret=<hidden>)"


@attrs.define(repr=False)
class Keyring:
    """The sender keys one listener holds for one speaker."""

    _keys: dict[KeyGeneration, bytes] = attrs.Factory(dict)
    _latest: KeyGeneration | None = None  # max(_keys), asked for every frame received

    def install(self, key: SenderKey) -> None:
        self._keys[key.generation] = key.secret
        self._trim()
        self._latest = max(self._keys)

    def latest(self) -> KeyGeneration | None:
        return self._latest

    def has(self, generation: KeyGeneration) -> bool:
        return generation in self._keys

    def key_for(self, generation: KeyGeneration) -> bytes | None:
        """The secret for ``generation``, ratcheting forward within its epoch if needed.

        ``None`` if no key of that epoch at or before that step is held, or the
        step is more than :data:`MAX_RATCHET_AHEAD` past the newest held key.
        """
        secret = self._keys.get(generation)
        if secret is not None:
            return secret
        base = max(
            (g for g in self._keys if g.epoch == generation.epoch and g.step < generation.step),
            default=None,
        )
        if base is None or generation.step - base.step > MAX_RATCHET_AHEAD:
            return None
        secret = self._keys[base]
        for _ in range(generation.step - base.step):
            secret = ratchet_secret(secret)
        self.install(SenderKey(generation, secret))
        return secret

    def reachable(self, generation: KeyGeneration) -> bool:
        """Whether :meth:`key_for` would find a key, decided without hashing anything."""
        if generation in self._keys:
            return True
        return any(
            g.epoch == generation.epoch and 0 < generation.step - g.step <= MAX_RATCHET_AHEAD
            for g in self._keys
        )

    def held(self) -> tuple[SenderKey, ...]:
        """Every key in the ring, oldest generation first."""
        return tuple(SenderKey(g, self._keys[g]) for g in sorted(self._keys))

    def forget_epochs_before(self, epoch: int) -> None:
        self._keys = {g: s for g, s in self._keys.items() if g.epoch >= epoch}
        self._latest = max(self._keys) if self._keys else None

    def _trim(self) -> None:
        while len(self._keys) > KEYS_PER_SPEAKER:
            del self._keys[min(self._keys)]

    def __repr__(self) -> str:
        return f"Keyring({sorted(str(g) for g in self._keys)})"


@attrs.define(repr=False)
class SpeakerKeys:
    """A speaker's own sender key, and a rotation in progress.

    A rotation hands a fresh key to every remaining member and keeps sealing
    with the old one until all of them acknowledged (or ``deadline`` passed),
    so members who stay never meet a frame they cannot open.  ``current`` is
    what :meth:`seal_key` returns; the rotation is complete once it changes.
    """

    current: SenderKey
    pending: SenderKey | None = None
    awaiting: set[PublicKey] = attrs.Factory(set)
    deadline: float = 0.0

    @property
    def newest_epoch(self) -> int:
        pending = self.pending.generation.epoch if self.pending else -1
        return max(self.current.generation.epoch, pending)

    def ratchet(self) -> list[SenderKey]:
        """Someone joined: step every held key forward; return the keys the newcomer needs."""
        self.current = self.current.ratcheted()
        if self.pending is not None:
            self.pending = self.pending.ratcheted()
            return [self.current, self.pending]
        return [self.current]

    def begin_rotation(
        self, source: KeySource, members: set[PublicKey], deadline: float
    ) -> SenderKey:
        """Someone left: make a fresh key for ``members``; a rotation in progress is replaced."""
        self.pending = SenderKey.fresh(self.newest_epoch + 1, source)
        self.awaiting = set(members)
        self.deadline = deadline
        return self.pending

    def acknowledge(self, member: PublicKey, generation: KeyGeneration) -> bool:
        """Record an ack; return True if it completed the rotation."""
        if self.pending is None or generation.epoch != self.pending.generation.epoch:
            return False
        self.awaiting.discard(member)
        return self.complete_if_due(float("-inf"))

    def forget_member(self, member: PublicKey) -> bool:
        self.awaiting.discard(member)
        return self.complete_if_due(float("-inf"))

    def complete_if_due(self, now: float) -> bool:
        if self.pending is None or (self.awaiting and now < self.deadline):
            return False
        self.current, self.pending, self.awaiting = self.pending, None, set()
        return True

    def __repr__(self) -> str:
        pending = self.pending.generation if self.pending else None
        return f"SpeakerKeys(current={self.current.generation}, pending={pending})"
