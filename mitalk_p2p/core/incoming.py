"""What one listener keeps about one speaker: keys, replay windows, clock, jitter buffer."""

from __future__ import annotations

import collections

import attrs

from .identity import PublicKey
from .jitter import JitterBuffer, JitterConfig
from .media_frame import FrameHeader, KeyGeneration
from .replay import Freshness, ReplayWindow
from .sender_keys import KEYS_PER_SPEAKER, Keyring

SAMPLE_RATE = 48_000
MAX_EPOCH_AHEAD = 16
"""Fresh-key epochs a frame may be ahead of the newest key held (each needs a removal)."""
MAX_STEP_AHEAD = 4096
"""Ratchet steps a frame may be ahead of the newest key held, checked before any crypto.

Every join ratchets each speaker's key one step, and a listener only catches up
when it hears a frame, so a quiet speaker in a busy room is legitimately many
steps ahead.  A verified frame further ahead than :data:`~.sender_keys.MAX_RATCHET_AHEAD` is
not ratcheted to: it waits while the listener asks the speaker for its key.
"""
SEQ_SLACK = 3_000
"""Frames a counter may run ahead of the newest accepted one, beyond what elapsed time allows."""
MAX_PENDING = 64
"""Verified frames held per speaker while their key is on its way."""
_U32 = 1 << 32


@attrs.define
class SpeakerStream:
    key: PublicKey
    index: int
    frame_seconds: float
    keyring: Keyring = attrs.Factory(Keyring)
    jitter: JitterBuffer | None = None
    highest_seq: int = -1
    last_accept: float = 0.0
    pending: collections.deque[tuple[FrameHeader, bytes, float]] = attrs.Factory(
        lambda: collections.deque(maxlen=MAX_PENDING)
    )
    last_key_request: float = float("-inf")
    _windows: dict[KeyGeneration, ReplayWindow] = attrs.Factory(dict)
    _timestamp: int | None = None

    @classmethod
    def create(
        cls, key: PublicKey, index: int, jitter: JitterConfig | None, frame_seconds: float
    ) -> SpeakerStream:
        buffer = JitterBuffer(jitter) if jitter is not None else None
        return cls(key, index, frame_seconds, jitter=buffer)

    def precheck(self, header: FrameHeader, now: float) -> str | None:
        """Cheap checks before any crypto: the reason to drop the frame, or ``None``."""
        generation = header.generation
        latest = self.keyring.latest()
        if latest is not None:
            if generation.epoch > latest.epoch + MAX_EPOCH_AHEAD:
                return "generation-jump"
            if generation.epoch == latest.epoch and generation.step > latest.step + MAX_STEP_AHEAD:
                return "generation-jump"
            if generation < latest and not self.keyring.reachable(generation):
                # Decided without ratcheting: no hashing before the signature is checked.
                return "stale-generation"
        if self.highest_seq >= 0:
            allowance = SEQ_SLACK + 2 * max(0.0, now - self.last_accept) / self.frame_seconds
            if header.seq > self.highest_seq + allowance:
                return "counter-jump"
        window = self._windows.get(generation)
        if window is not None:
            verdict = window.check(header.seq)
            if verdict is Freshness.DUPLICATE:
                return "duplicate"
            if verdict is Freshness.TOO_OLD:
                return "too-old"
        return None

    def accept(self, header: FrameHeader, now: float) -> None:
        """Mark an authentic frame as seen, so a copy of it is never accepted again."""
        window = self._windows.get(header.generation)
        if window is None:
            window = self._windows[header.generation] = ReplayWindow()
            while len(self._windows) > KEYS_PER_SPEAKER:
                del self._windows[min(self._windows)]
        window.mark(header.seq)
        if header.seq > self.highest_seq:
            self.highest_seq = header.seq
            self.last_accept = now

    def capture_time(self, timestamp: int) -> float:
        """Unwrap the 32-bit sample clock into seconds on the speaker's media clock."""
        if self._timestamp is None:
            self._timestamp = timestamp
        else:
            delta = (timestamp - self._timestamp) % _U32
            if delta >= _U32 // 2:
                delta -= _U32
            self._timestamp += delta
        return self._timestamp / SAMPLE_RATE
