"""The listener's playout path: decode each speaker's slots, mix them, and write.

The media plane emits one :class:`~mitalk_p2p.core.media_events.AudioOut` per
speaker per playout slot, on each speaker's own jitter-buffer schedule, in
bursts when its timer runs late.  :class:`Playback` decouples that from the
output: :meth:`Playback.accept` decodes each slot into a short per-speaker
queue, and :meth:`Playback.tick`, called once per frame period by
:func:`run_playback`, takes at most one frame per speaker and mixes them.
A silent slot queues a silent frame, so a DTX pause keeps its length even when
slots arrive in a burst.

Optional per-speaker tracks get a frame (or silence) on every tick, starting
with silence for the ticks before the speaker was first heard, so every track
lines up sample for sample with the mix from time zero.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping

import attrs
import trio

from ..codec import CodecConfig, CodecError, OpusDecoder
from ..core.errors import LocalProtocolError
from ..core.identity import PublicKey
from ..core.jitter import Conceal, PlayFrame, Playout, RecoverWithFec, Silence, Stretch
from ..core.media_events import AudioOut
from .io import FrameClock, FrameOutput, write_silence
from .mixer import Mixer, MixerConfig, SpeakingConfig, SpeakingTracker, levels_dbfs
from .sources import SAMPLE_RATE

DEFAULT_QUEUE_FRAMES = 10
"""Decoded frames held per speaker; beyond this the oldest is dropped (200 ms at 20 ms)."""


@attrs.frozen(kw_only=True)
class SpeakerStatistics:
    """What playout did with one speaker's slots (or, summed, everyone's)."""

    frames_played: int = 0
    """Frames decoded from their own packet."""
    frames_fec: int = 0
    """Lost frames rebuilt from the next packet's forward error correction."""
    frames_concealed: int = 0
    """Frames invented by the decoder's loss concealment (losses, stretches, bad packets)."""
    frames_silent: int = 0
    """Silent slots: DTX pauses, or the jitter buffer running dry."""
    decode_errors: int = 0
    """Packets libopus refused; each slot was concealed instead."""
    queue_drops: int = 0
    """Decoded frames dropped because the speaker's queue was full (output too slow)."""
    unknown_playouts: int = 0
    """Playout decisions of a kind this version does not know, ignored."""

    @property
    def concealed_fraction(self) -> float:
        """Share of audible frames (played, FEC or concealed) that were concealed."""
        audible = self.frames_played + self.frames_fec + self.frames_concealed
        return self.frames_concealed / audible if audible else 0.0

    @classmethod
    def total(cls, parts: Iterable[SpeakerStatistics]) -> SpeakerStatistics:
        sums = dict.fromkeys(attrs.fields_dict(cls), 0)
        for part in parts:
            for name in sums:
                sums[name] += getattr(part, name)
        return cls(**sums)


@attrs.frozen
class PlaybackStatistics:
    ticks: int
    """Frames written to the mix output."""
    speakers: Mapping[PublicKey, SpeakerStatistics]
    overall: SpeakerStatistics


@attrs.define
class _Speaker:
    decoder: OpusDecoder | None = None
    queue: collections.deque[bytes] = attrs.field(factory=collections.deque)
    track: FrameOutput | None = None
    counts: dict[str, int] = attrs.field(
        factory=lambda: dict.fromkeys(attrs.fields_dict(SpeakerStatistics), 0)
    )


def _check_codec(_instance: object, _attribute: object, value: CodecConfig) -> None:
    if value.sample_rate != SAMPLE_RATE or value.channels != 1:
        raise LocalProtocolError(
            f"playback is {SAMPLE_RATE} Hz mono, not {value.sample_rate} Hz "
            f"with {value.channels} channel(s)"
        )


@attrs.define
class Playback:
    """Decodes, queues and mixes every speaker a listener hears.

    Sans-I/O apart from the outputs it writes to: the caller feeds it
    :class:`AudioOut` events and calls :meth:`tick` once per frame period.
    ``track_output``, when given, is called once per speaker (on the first tick
    after it is first heard) for that speaker's own time-aligned track.
    """

    output: FrameOutput
    track_output: Callable[[PublicKey], FrameOutput] | None = None
    codec: CodecConfig = attrs.field(factory=CodecConfig, validator=_check_codec)
    max_queue_frames: int = attrs.field(
        default=DEFAULT_QUEUE_FRAMES, validator=attrs.validators.ge(1)
    )
    speaking_config: SpeakingConfig = attrs.field(factory=SpeakingConfig)
    _mixer: Mixer = attrs.field(init=False)
    _tracker: SpeakingTracker[PublicKey] = attrs.field(init=False)
    _speakers: dict[PublicKey, _Speaker] = attrs.field(init=False, factory=dict)
    _silence: bytes = attrs.field(init=False)
    _ticks: int = attrs.field(init=False, default=0)
    _closed: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self._mixer = Mixer(MixerConfig(sample_rate=SAMPLE_RATE, frame_ms=self.codec.frame_ms))
        self._tracker = SpeakingTracker(self.speaking_config)
        self._silence = bytes(self.codec.frame_bytes)

    @property
    def frame_seconds(self) -> float:
        return self.codec.frame_ms / 1000

    @property
    def ticks(self) -> int:
        return self._ticks

    @property
    def speaking(self) -> frozenset[PublicKey]:
        """The speakers currently shown as speaking (with onset and hangover)."""
        return self._tracker.speaking

    def accept(self, event: AudioOut) -> None:
        """Decode one playout slot and queue it for the speaker's next free tick.

        Never raises on bad audio: a packet libopus refuses is counted and its slot
        concealed.
        """
        self._check_open()
        speaker = self._speakers.get(event.speaker)
        if speaker is None:
            speaker = self._speakers[event.speaker] = _Speaker()
        pcm = self._decode(speaker, event.playout)
        if pcm is None:
            return
        if len(speaker.queue) >= self.max_queue_frames:
            speaker.queue.popleft()
            speaker.counts["queue_drops"] += 1
        speaker.queue.append(pcm)

    def _decode(self, speaker: _Speaker, playout: Playout) -> bytes | None:
        counts = speaker.counts
        if isinstance(playout, Silence):
            counts["frames_silent"] += 1
            return self._silence
        if not isinstance(playout, PlayFrame | RecoverWithFec | Conceal | Stretch):
            counts["unknown_playouts"] += 1
            return None
        if speaker.decoder is None:
            speaker.decoder = OpusDecoder(self.codec)
        decoder = speaker.decoder
        try:
            if isinstance(playout, PlayFrame):
                pcm = decoder.decode(playout.payload)
                counts["frames_played"] += 1
                return pcm
            if isinstance(playout, RecoverWithFec):
                pcm = decoder.recover_from_fec(playout.next_payload)
                counts["frames_fec"] += 1
                return pcm
        except CodecError:
            counts["decode_errors"] += 1
        try:
            pcm = decoder.conceal()
        except CodecError:  # not expected from libopus; a slot is not worth a crash
            counts["decode_errors"] += 1
            return None
        counts["frames_concealed"] += 1
        return pcm

    def tick(self) -> bytes:
        """Play one frame period: mix at most one queued frame per speaker, write the
        mix (and each speaker's track), update who is speaking; return the mix."""
        self._check_open()
        frames = {key: s.queue.popleft() for key, s in self._speakers.items() if s.queue}
        mix = self._mixer.mix(list(frames.values()))
        self.output.write_frame(mix)
        if self.track_output is not None:
            self._write_tracks(self.track_output, frames)
        self._tracker.update(levels_dbfs(frames), self.codec.frame_ms)
        self._ticks += 1
        return mix

    def _write_tracks(
        self, factory: Callable[[PublicKey], FrameOutput], frames: Mapping[PublicKey, bytes]
    ) -> None:
        for key, speaker in self._speakers.items():
            if speaker.track is None:
                speaker.track = factory(key)
                write_silence(speaker.track, self._ticks, self.codec.samples_per_frame)
            speaker.track.write_frame(frames.get(key, self._silence))

    def forget(self, speaker: PublicKey) -> None:
        """A speaker left: drop its decoder and pending audio.  Its track stays open and
        gets silence, so it remains aligned if the speaker comes back."""
        state = self._speakers.get(speaker)
        if state is not None:
            state.decoder = None
            state.queue.clear()
        self._tracker.forget(speaker)

    def statistics(self) -> PlaybackStatistics:
        speakers = {
            key: SpeakerStatistics(**state.counts) for key, state in self._speakers.items()
        }
        return PlaybackStatistics(
            self._ticks, speakers, SpeakerStatistics.total(speakers.values())
        )

    def close(self) -> None:
        """Close the mix output and every track, even if one fails (the first failure is
        raised after); closing twice does nothing."""
        if self._closed:
            return
        self._closed = True
        failure: Exception | None = None
        outputs = [self.output, *(s.track for s in self._speakers.values() if s.track)]
        for output in outputs:
            try:
                output.close()
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def _check_open(self) -> None:
        if self._closed:
            raise LocalProtocolError("playback is closed")


async def run_playback(
    playback: Playback,
    frame_seconds: float,
    *,
    clock: FrameClock | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Call ``playback.tick()`` every ``frame_seconds`` on a drift-free schedule until
    cancelled.  The first tick is immediate.  Pass ``clock`` to read its
    ``late_resyncs`` (how often a stall restarted the schedule)."""
    if clock is None:
        clock = FrameClock(frame_seconds)
    elif clock.period != frame_seconds:
        raise LocalProtocolError(
            f"the clock's period ({clock.period} s) is not frame_seconds ({frame_seconds} s)"
        )
    task_status.started()
    while True:
        await clock.wait()
        playback.tick()
