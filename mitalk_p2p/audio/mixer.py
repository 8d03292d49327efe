"""Mixing speakers at a listener, and measuring who is speaking.

Frames are 16-bit signed little-endian mono PCM, all of one length.  The mix is
the exact sample-wise sum whenever that sum fits in 16 bits.  When it would not,
a limiter lowers the gain smoothly instead of clipping: the gain follows a
per-millisecond envelope that dips just enough for the loudest sample, ramps
down ahead of a peak within the frame (the frame itself is the look-ahead) and
recovers slowly across later frames.  Nothing is ever clipped or wrapped.

Levels are RMS in dBFS, where 0 dBFS is a full-scale square wave, so a
full-scale sine reads about -3 dBFS.  :class:`SpeakingDetector` turns a
speaker's levels into a speaking / not speaking state with hysteresis, and
:class:`SpeakingTracker` does that for a whole room.
"""

from __future__ import annotations

import array
import math
import operator
import sys
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Final, Generic, TypeVar

import attrs

from ..core.errors import LocalProtocolError

SAMPLE_MAX: Final = 32767
"""The largest magnitude the limiter lets through (symmetric: it never outputs -32768,
though an exact sum that fits 16 bits may)."""

FULL_SCALE: Final = 32768.0
"""RMS of a full-scale square wave: the 0 dBFS reference."""

SILENCE_DBFS: Final = -120.0
"""The level reported for digital silence and anything quieter."""

_BLOCK_MS: Final = 1
"""The limiter's gain envelope has one control point per millisecond."""

_GAIN_EPSILON: Final = 1e-4
"""A gain this close to 1 counts as fully recovered (unity, exact mixing)."""

_SWAP: Final = sys.byteorder == "big"

K = TypeVar("K", bound=Hashable)
"""A speaker's key (a member id, an index: anything hashable)."""


def pcm_to_samples(frame: bytes) -> array.array[int]:
    """Little-endian 16-bit PCM as an array of ints (in host order)."""
    if len(frame) % 2:
        raise LocalProtocolError(f"16-bit PCM has an even number of bytes, not {len(frame)}")
    samples = array.array("h", frame)
    if _SWAP:
        samples.byteswap()
    return samples


def samples_to_pcm(samples: Sequence[int]) -> bytes:
    """Ints in the 16-bit range as little-endian PCM (OverflowError if out of range)."""
    out = samples if isinstance(samples, array.array) else array.array("h", samples)
    if _SWAP:
        out = array.array("h", out)
        out.byteswap()
    return out.tobytes()


def rms_dbfs(frame: bytes) -> float:
    """The RMS level of one PCM frame in dBFS, floored at :data:`SILENCE_DBFS`."""
    samples = pcm_to_samples(frame)
    if not samples:
        return SILENCE_DBFS
    energy = sum(map(operator.mul, samples, samples))
    if energy == 0:
        return SILENCE_DBFS
    level = 10.0 * math.log10(energy / len(samples)) - 20.0 * math.log10(FULL_SCALE)
    return max(level, SILENCE_DBFS)


def levels_dbfs(frames: Mapping[K, bytes]) -> dict[K, float]:
    """:func:`rms_dbfs` of each speaker's frame."""
    return {key: rms_dbfs(frame) for key, frame in frames.items()}


# -- mixing -------------------------------------------------------------------------


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise LocalProtocolError(f"{attribute.name} must be positive, not {value!r}")


@attrs.frozen(kw_only=True)
class MixerConfig:
    """Frame geometry and limiter timing."""

    sample_rate: int = attrs.field(default=48000, validator=_positive)
    """Samples per second; must be a multiple of 1000 so the envelope has whole-ms blocks."""

    frame_ms: int = attrs.field(default=20, validator=_positive)
    """Duration of every frame given to :meth:`Mixer.mix`."""

    attack_ms: float = attrs.field(default=5.0, validator=_positive)
    """How long the gain takes to fall from 1 to 0 ahead of a peak inside a frame.
    A peak in a frame's first milliseconds may still need a steeper fall."""

    hold_ms: float = attrs.field(default=10.0, validator=attrs.validators.ge(0.0))
    """How long a reduction is held after a peak before recovery starts.  Longer than a
    voice's pitch period, so the gain does not ripple between waveform peaks."""

    release_ms: float = attrs.field(default=150.0, validator=_positive)
    """Time constant of the gain's recovery toward 1 once the mix is quieter."""

    def __attrs_post_init__(self) -> None:
        if self.sample_rate % 1000:
            raise LocalProtocolError(
                f"sample_rate must be a multiple of 1000 Hz, not {self.sample_rate}"
            )

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate * self.frame_ms // 1000

    @property
    def frame_bytes(self) -> int:
        return 2 * self.samples_per_frame


@attrs.define
class Mixer:
    """Sums speakers' frames for one listener, with a limiter that carries gain across frames."""

    config: MixerConfig = attrs.field(factory=MixerConfig)
    gain: float = 1.0
    """The limiter gain at the end of the last frame; 1.0 means no reduction."""
    _recent_caps: list[float] = attrs.field(factory=list, init=False, repr=False)
    """The last ``hold_ms`` of per-block gain caps, carried into the next frame."""

    def mix(self, frames: Sequence[bytes]) -> bytes:
        """One output frame from zero or more speakers' frames (silence for none)."""
        cfg = self.config
        for frame in frames:
            if len(frame) != cfg.frame_bytes:
                raise LocalProtocolError(
                    f"every frame must be {cfg.frame_bytes} bytes "
                    f"({cfg.frame_ms} ms at {cfg.sample_rate} Hz), not {len(frame)}"
                )
        if not frames:
            total: Sequence[int] = array.array("h", bytes(cfg.frame_bytes))
        elif len(frames) == 1:
            total = pcm_to_samples(frames[0])
        else:
            acc: list[int] = list(map(operator.add, *(pcm_to_samples(f) for f in frames[:2])))
            for frame in frames[2:]:
                acc = list(map(operator.add, acc, pcm_to_samples(frame)))
            total = acc
        if self.gain >= 1.0 and max(total) <= SAMPLE_MAX and min(total) >= -SAMPLE_MAX - 1:
            self._recent_caps.clear()  # all 1.0: nothing to hold
            return samples_to_pcm(total)  # the exact sum
        return samples_to_pcm(self._limit(total))

    def _limit(self, total: Sequence[int]) -> list[int]:
        cfg = self.config
        block = cfg.sample_rate * _BLOCK_MS // 1000
        starts = range(0, len(total), block)
        # The most gain each block can take without any sample exceeding SAMPLE_MAX.
        caps = []
        for start in starts:
            chunk = total[start : start + block]
            peak = max(max(chunk), -min(chunk))
            caps.append(1.0 if peak <= SAMPLE_MAX else SAMPLE_MAX / peak)
        # Hold: each block also honours the caps of the blocks just before it.
        hold = round(cfg.hold_ms / _BLOCK_MS)
        history = self._recent_caps + caps
        offset = len(self._recent_caps)
        held = [min(history[max(0, i + offset - hold) : i + offset + 1]) for i in range(len(caps))]
        self._recent_caps = history[-hold:] if hold else []
        # Gain at each block boundary; a boundary touches the blocks on both sides.
        n = len(held)
        points = [min(held[max(i - 1, 0)], held[min(i, n - 1)]) for i in range(n + 1)]
        points[0] = min(points[0], self.gain)
        # Backward pass: fall toward an upcoming peak at no more than the attack slope.
        fall = _BLOCK_MS / cfg.attack_ms
        for i in range(n - 1, -1, -1):
            points[i] = min(points[i], points[i + 1] + fall)
        # Forward pass: recover toward 1 no faster than the release time constant.
        rise = 1.0 - math.exp(-_BLOCK_MS / cfg.release_ms)
        for i in range(1, n + 1):
            points[i] = min(points[i], points[i - 1] + (1.0 - points[i - 1]) * rise)
        self.gain = 1.0 if points[n] >= 1.0 - _GAIN_EPSILON else points[n]

        out: list[int] = []
        for i, start in enumerate(starts):
            chunk = total[start : start + block]
            g0 = points[i]
            step = (points[i + 1] - g0) / len(chunk)
            # Both ends are within the block's cap, so is every point between them.
            # int() truncates toward zero, so rounding never adds magnitude.
            out.extend([int(x * (g0 + step * j)) for j, x in enumerate(chunk)])
        return out

    def reset(self) -> None:
        """Forget the limiter state (e.g. after the output restarts)."""
        self.gain = 1.0
        self._recent_caps.clear()


# -- who is speaking ----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SpeakingConfig:
    """Thresholds for deciding that someone is speaking, with hysteresis."""

    threshold_dbfs: float = -45.0
    """A frame at or above this level counts as voice."""

    quiet_margin_db: float = attrs.field(default=6.0, validator=attrs.validators.ge(0.0))
    """A frame counts as quiet only below ``threshold_dbfs - quiet_margin_db``, so a level
    hovering around the threshold does not make the state flicker."""

    onset_ms: float = attrs.field(default=60.0, validator=attrs.validators.ge(0.0))
    """Voice must last this long without a break before the speaker shows as speaking."""

    hangover_ms: float = attrs.field(default=400.0, validator=attrs.validators.ge(0.0))
    """A speaking speaker stops only after this much uninterrupted quiet (pauses between
    words do not count)."""


@attrs.define
class SpeakingDetector:
    """Speaking / not speaking for one speaker, from that speaker's frame levels."""

    config: SpeakingConfig = attrs.field(factory=SpeakingConfig)
    speaking: bool = False
    _run_ms: float = 0.0
    """Time spent in the condition that would flip the state (voice if silent, quiet if
    speaking)."""

    def update(self, level_dbfs: float, duration_ms: float) -> bool:
        """Account for one frame of ``duration_ms`` at ``level_dbfs``; return ``speaking``."""
        cfg = self.config
        if self.speaking:
            flipping = level_dbfs < cfg.threshold_dbfs - cfg.quiet_margin_db
            limit = cfg.hangover_ms
        else:
            flipping = level_dbfs >= cfg.threshold_dbfs
            limit = cfg.onset_ms
        self._run_ms = self._run_ms + duration_ms if flipping else 0.0
        if flipping and self._run_ms >= limit:
            self.speaking = not self.speaking
            self._run_ms = 0.0
        return self.speaking


@attrs.frozen
class SpeakingChange(Generic[K]):
    """Who started and who stopped speaking in one update."""

    started: frozenset[K] = frozenset()
    stopped: frozenset[K] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.started or self.stopped)


@attrs.define
class SpeakingTracker(Generic[K]):
    """A :class:`SpeakingDetector` per speaker, for a room's "who is speaking" display."""

    config: SpeakingConfig = attrs.field(factory=SpeakingConfig)
    _detectors: dict[K, SpeakingDetector] = attrs.field(factory=dict)

    @property
    def speaking(self) -> frozenset[K]:
        """The speakers currently shown as speaking."""
        return frozenset(key for key, det in self._detectors.items() if det.speaking)

    def update(self, levels: Mapping[K, float], duration_ms: float) -> SpeakingChange[K]:
        """Account for one frame interval.

        ``levels`` holds the level of each speaker that produced a frame; a known
        speaker missing from it (no packet, DTX) counts as silent.
        """
        started: set[K] = set()
        stopped: set[K] = set()
        for key in levels.keys() - self._detectors.keys():
            self._detectors[key] = SpeakingDetector(self.config)
        for key, detector in self._detectors.items():
            was = detector.speaking
            now = detector.update(levels.get(key, SILENCE_DBFS), duration_ms)
            if now != was:
                (started if now else stopped).add(key)
        return SpeakingChange(frozenset(started), frozenset(stopped))

    def forget(self, key: K) -> None:
        """Stop tracking a speaker who left the stage."""
        self._detectors.pop(key, None)
