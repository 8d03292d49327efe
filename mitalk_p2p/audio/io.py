"""Where a peer's audio comes from and goes to: frame-at-a-time inputs and outputs.

Every frame is 16-bit signed little-endian mono PCM at :data:`SAMPLE_RATE`.  An
input is *paced*: :meth:`FrameInput.read_frame` returns each frame when it is
due in real time, so a driver can simply loop over it and encode.  An output is
*non-blocking*: :meth:`FrameOutput.write_frame` is called from the playout loop,
which must never stall on it.  Sound devices (:mod:`.devices`) and files
(:mod:`.wav_writer`) implement the same two protocols, so a peer runs the same
way against a microphone, a WAV file or synthetic speech.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

import attrs
import trio

from ..core.errors import MitalkError
from .sources import (
    DEFAULT_FRAME_SAMPLES,
    SAMPLE_RATE,
    SPEC_FORMS,
    AudioSourceError,
    PcmSource,
    source_from_spec,
)

DEFAULT_MAX_LAG_FRAMES = 5
"""How far (in frames) a consumer may fall behind a :class:`FrameClock` before the
schedule restarts from now instead of catching up in a burst."""


class AudioOutputError(MitalkError):
    """Audio cannot be written: an output file or device is unusable."""


class FrameInput(Protocol):
    """A source of PCM frames delivered in real time (a microphone, a paced file)."""

    @property
    def frame_samples(self) -> int:
        """Samples in every frame :meth:`read_frame` returns."""
        ...

    async def read_frame(self) -> bytes | None:
        """The next frame (``2 * frame_samples`` bytes) once it is due; ``None`` when the
        input has ended."""
        ...


class FrameOutput(Protocol):
    """A sink for PCM frames (a speaker, a WAV file); writing never blocks."""

    def write_frame(self, pcm: bytes) -> None:
        """Take one frame; it must not wait on the device or the disk."""
        ...

    def close(self) -> None:
        """Release the output; further writes are an error."""
        ...


@runtime_checkable
class SupportsSilence(Protocol):
    """An output that can append a long stretch of silence in one cheap step."""

    def write_silence(self, samples: int) -> None:
        """Append ``samples`` samples of digital silence."""
        ...


def write_silence(output: FrameOutput, frames: int, frame_samples: int) -> None:
    """Append ``frames`` frames of silence to ``output``, in one step when it supports
    that: a track that starts an hour into a session must not stall the playout loop
    with 180 000 separate writes."""
    if frames <= 0:
        return
    if isinstance(output, SupportsSilence):
        output.write_silence(frames * frame_samples)
        return
    silence = bytes(2 * frame_samples)
    for _ in range(frames):
        output.write_frame(silence)


# -- pacing -------------------------------------------------------------------------


@attrs.define
class FrameClock:
    """A drift-free schedule of frame deadlines: ``start + n * period``.

    The first :meth:`wait` fixes ``start`` at the current Trio time and returns at
    once.  Deadlines are computed from ``start``, never by adding up sleeps, so
    the schedule does not drift however long it runs.  A consumer that falls more
    than ``max_lag_frames`` behind (a stalled process, a suspended laptop) restarts
    the schedule from now, counted in ``late_resyncs``, rather than catching up in
    a burst of frames that would arrive all at once.
    """

    period: float = attrs.field(validator=attrs.validators.gt(0.0))
    max_lag_frames: int = attrs.field(
        default=DEFAULT_MAX_LAG_FRAMES, validator=attrs.validators.ge(0)
    )
    late_resyncs: int = attrs.field(default=0, init=False)
    _start: float | None = attrs.field(default=None, init=False)
    _index: int = attrs.field(default=0, init=False)

    def next_deadline(self) -> float | None:
        """When the next :meth:`wait` returns; None before the first."""
        return None if self._start is None else self._start + self._index * self.period

    async def wait(self) -> None:
        """Sleep until the next frame is due."""
        now = trio.current_time()
        deadline = self.next_deadline()
        if deadline is None or now - deadline > self.max_lag_frames * self.period:
            if deadline is not None:
                self.late_resyncs += 1
            self._start, self._index = now, 0
            deadline = now
        await trio.sleep_until(deadline)
        # Only a completed wait consumes a slot: a cancelled one leaves it due.
        self._index += 1


@attrs.define
class PacedSource:
    """A :class:`FrameInput` that hands out a :class:`PcmSource`'s frames in real time.

    The first frame is returned at once, each later one ``frame_seconds`` after
    the one before on a :class:`FrameClock` (so a WAV file or synthetic speech
    stands in for a microphone).  The source is read only after the wait, so a
    cancelled read loses no audio.
    """

    source: PcmSource
    frame_seconds: float = attrs.field(validator=attrs.validators.gt(0.0))
    max_lag_frames: int = DEFAULT_MAX_LAG_FRAMES
    _clock: FrameClock = attrs.field(init=False)
    _ended: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        self._clock = FrameClock(self.frame_seconds, self.max_lag_frames)

    @property
    def frame_samples(self) -> int:
        return self.source.frame_samples

    @property
    def late_resyncs(self) -> int:
        """How often the consumer fell so far behind that the schedule restarted."""
        return self._clock.late_resyncs

    async def read_frame(self) -> bytes | None:
        if self._ended:
            await trio.lowlevel.checkpoint()
            return None
        await self._clock.wait()
        frame = self.source.read_frame()
        if frame is None:
            self._ended = True
        return frame


# -- simple outputs -----------------------------------------------------------------


@attrs.define
class NullOutput:
    """Discards every frame, counting them (a listener with nowhere to play)."""

    frames: int = 0
    closed: bool = False

    def write_frame(self, pcm: bytes) -> None:
        self.frames += 1

    def close(self) -> None:
        self.closed = True


def _output_tuple(outputs: Iterable[FrameOutput]) -> tuple[FrameOutput, ...]:
    return tuple(outputs)


@attrs.define
class FanOutput:
    """Writes every frame to several outputs (the speakers and a recording, say)."""

    outputs: tuple[FrameOutput, ...] = attrs.field(converter=_output_tuple)

    def write_frame(self, pcm: bytes) -> None:
        for output in self.outputs:
            output.write_frame(pcm)

    def close(self) -> None:
        """Close every output, even if one fails; the first failure is raised after."""
        failure: BaseException | None = None
        for output in self.outputs:
            try:
                output.close()
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure


# -- specs --------------------------------------------------------------------------

_SPEC_KINDS = frozenset(form.partition(":")[0] for form in SPEC_FORMS)


def input_from_spec(
    spec: str,
    *,
    seed: int,
    loop: bool,
    base_dir: Path | None = None,
    frame_samples: int = DEFAULT_FRAME_SAMPLES,
) -> FrameInput:
    """A paced input for a source spec as :func:`~.sources.source_from_spec` reads it
    (``synthetic``, ``silence``, ``tone[:HZ]``, ``wav:PATH``), or a plain path ending
    in ``.wav``.  Raises :class:`~.sources.AudioSourceError` with a one-line reason."""
    text = spec.strip()
    if text.partition(":")[0] not in _SPEC_KINDS:
        if not text.lower().endswith(".wav"):
            raise AudioSourceError(
                f"unknown audio source {spec!r}; expected one of: "
                f"{', '.join(SPEC_FORMS)}, or a path to a .wav file"
            )
        text = f"wav:{text}"
    source = source_from_spec(
        text, seed=seed, frame_samples=frame_samples, base_dir=base_dir, loop=loop
    )
    return PacedSource(source, source.frame_samples / SAMPLE_RATE)
