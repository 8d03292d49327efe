"""The listener's playout path, against the real libopus: decode, queue, mix, tracks."""

from __future__ import annotations

import functools
import wave
from pathlib import Path
from typing import cast

import attrs
import pytest
import trio
import trio.testing

from mitalk_p2p.audio.io import FrameClock, FrameOutput, NullOutput
from mitalk_p2p.audio.mixer import Mixer, pcm_to_samples, samples_to_pcm
from mitalk_p2p.audio.playout import Playback, SpeakerStatistics, run_playback
from mitalk_p2p.audio.sources import PcmSource, SyntheticSpeech, ToneSource
from mitalk_p2p.audio.wav_writer import open_wav_writer
from mitalk_p2p.codec import CodecConfig, OpusDecoder, OpusEncoder, is_dtx
from mitalk_p2p.core.errors import LocalProtocolError
from mitalk_p2p.core.identity import PublicKey
from mitalk_p2p.core.jitter import Conceal, PlayFrame, Playout, RecoverWithFec, Silence, Stretch
from mitalk_p2p.core.media_events import AudioOut

FRAME_BYTES = 1920
SILENT = bytes(FRAME_BYTES)
ANN = PublicKey(b"\x01" * 32)
BOB = PublicKey(b"\x02" * 32)


@attrs.define
class Recorder:
    """A FrameOutput that keeps every frame."""

    frames: list[bytes] = attrs.field(factory=list)
    closed: int = 0

    def write_frame(self, pcm: bytes) -> None:
        assert len(pcm) == FRAME_BYTES
        self.frames.append(pcm)

    def close(self) -> None:
        self.closed += 1


@attrs.define
class Tracks:
    """A track factory that records what it was asked for."""

    made: dict[PublicKey, Recorder] = attrs.field(factory=dict)

    def __call__(self, key: PublicKey) -> FrameOutput:
        assert key not in self.made
        recorder = self.made[key] = Recorder()
        return recorder


def packets(source: PcmSource, count: int) -> list[bytes]:
    """``count`` non-DTX Opus packets of ``source`` (DTX frames are skipped)."""
    encoder = OpusEncoder()
    out: list[bytes] = []
    while len(out) < count:
        frame = source.read_frame()
        assert frame is not None
        packet = encoder.encode(frame)
        if not is_dtx(packet):
            out.append(packet)
    return out


@functools.cache
def speech(seed: int, count: int = 60, level: float = -12.0) -> tuple[bytes, ...]:
    return tuple(packets(SyntheticSpeech(seed, level_dbfs=level), count))


def reference(payloads: list[Playout]) -> list[bytes]:
    """What one fresh decoder makes of a speaker's slots."""
    decoder = OpusDecoder()
    out = []
    for playout in payloads:
        if isinstance(playout, PlayFrame):
            out.append(decoder.decode(playout.payload))
        elif isinstance(playout, RecoverWithFec):
            out.append(decoder.recover_from_fec(playout.next_payload))
        elif isinstance(playout, Silence):
            out.append(SILENT)
        else:
            out.append(decoder.conceal())
    return out


def plays(payloads: tuple[bytes, ...] | list[bytes], first_seq: int = 0) -> list[Playout]:
    return [PlayFrame(first_seq + i, p) for i, p in enumerate(payloads)]


def stats(playback: Playback, key: PublicKey) -> SpeakerStatistics:
    return playback.statistics().speakers[key]


# -- mixing and tracks ---------------------------------------------------------------


@pytest.mark.parametrize("level", [-12.0, -30.0])
def test_mix_is_the_mixers_sum_of_each_speakers_decode(level: float) -> None:
    ann, bob = plays(speech(1, level=level)), plays(speech(2, level=level)[7:])
    mix, tracks = Recorder(), Tracks()
    playback = Playback(mix, tracks)
    count = min(len(ann), len(bob))
    returned = []
    for ann_slot, bob_slot in zip(ann, bob, strict=False):
        playback.accept(AudioOut(ANN, ann_slot))
        playback.accept(AudioOut(BOB, bob_slot))
        returned.append(playback.tick())

    ann_pcm, bob_pcm = reference(ann[:count]), reference(bob[:count])
    mixer = Mixer()
    expected = [mixer.mix([a, b]) for a, b in zip(ann_pcm, bob_pcm, strict=True)]
    assert mix.frames == returned == expected
    assert tracks.made[ANN].frames == ann_pcm
    assert tracks.made[BOB].frames == bob_pcm
    if level == -30.0:  # quiet enough that the limiter never acts: the exact sum
        for a, b, m in zip(ann_pcm, bob_pcm, mix.frames, strict=True):
            total = [x + y for x, y in zip(pcm_to_samples(a), pcm_to_samples(b), strict=True)]
            assert m == samples_to_pcm(total)
    overall = playback.statistics().overall
    assert overall.frames_played == 2 * count
    assert overall.concealed_fraction == 0.0


def test_a_late_speaker_track_starts_with_silence_aligned_to_the_mix() -> None:
    ann, bob = plays(speech(1, 30)), plays(speech(2, 30)[:10])
    mix, tracks = Recorder(), Tracks()
    playback = Playback(mix, tracks)
    for tick in range(30):
        playback.accept(AudioOut(ANN, ann[tick]))
        if 7 <= tick < 17:
            playback.accept(AudioOut(BOB, bob[tick - 7]))
        playback.tick()

    assert len(mix.frames) == playback.ticks == 30
    assert len(tracks.made[ANN].frames) == len(tracks.made[BOB].frames) == 30
    bob_track = tracks.made[BOB].frames
    assert bob_track[:7] == [SILENT] * 7
    assert bob_track[7:17] == reference(bob)
    assert bob_track[17:] == [SILENT] * 13  # no frame, no audio: silence keeps it aligned
    assert tracks.made[ANN].frames == reference(ann)


def test_a_late_speaker_wav_track_gets_its_leading_silence_in_one_step(tmp_path: Path) -> None:
    writers = {ANN: tmp_path / "ann.wav", BOB: tmp_path / "bob.wav"}
    playback = Playback(NullOutput(), lambda key: open_wav_writer(writers[key]))
    ann, bob = plays(speech(1, 20)), plays(speech(2, 20))
    for tick in range(20):
        playback.accept(AudioOut(ANN, ann[tick]))
        if tick >= 12:
            playback.accept(AudioOut(BOB, bob[tick - 12]))
        playback.tick()
    playback.close()

    with wave.open(str(writers[BOB]), "rb") as reader:
        assert reader.getnframes() == 20 * 960
        audio = reader.readframes(20 * 960)
    assert audio[: 12 * FRAME_BYTES] == bytes(12 * FRAME_BYTES)
    assert audio[12 * FRAME_BYTES :] == b"".join(reference(bob[:8]))
    with wave.open(str(writers[ANN]), "rb") as reader:
        assert reader.getnframes() == 20 * 960


def test_without_tracks_only_the_mix_is_written() -> None:
    mix = Recorder()
    playback = Playback(mix)
    assert playback.tick() == SILENT  # nobody yet: silence
    playback.accept(AudioOut(ANN, PlayFrame(0, speech(1)[0])))
    playback.tick()
    assert len(mix.frames) == 2


# -- decoding ------------------------------------------------------------------------


def test_fec_concealment_and_silence_are_decoded_and_counted() -> None:
    p = speech(3)
    slots: list[Playout] = [
        PlayFrame(0, p[0]),
        RecoverWithFec(1, p[2]),
        PlayFrame(2, p[2]),
        Conceal(3),
        Stretch(),
        PlayFrame(4, p[4]),
        Silence(),
        PlayFrame(5, p[5]),
    ]
    tracks = Tracks()
    playback = Playback(NullOutput(), tracks)
    for slot in slots:
        playback.accept(AudioOut(ANN, slot))
        playback.tick()
    assert tracks.made[ANN].frames == reference(slots)
    counted = stats(playback, ANN)
    assert (counted.frames_played, counted.frames_fec, counted.frames_concealed) == (4, 1, 2)
    assert counted.frames_silent == 1
    assert counted.concealed_fraction == pytest.approx(2 / 7)


def test_a_bad_packet_is_counted_and_its_slot_concealed() -> None:
    p = speech(4)
    long_frame = OpusEncoder(CodecConfig(frame_ms=40)).encode(bytes(2 * 1920))
    tracks = Tracks()
    playback = Playback(NullOutput(), tracks)
    slots: list[Playout] = [
        PlayFrame(0, p[0]),
        PlayFrame(1, b"\xff\xff\xff\xff garbage"),  # libopus refuses it
        PlayFrame(2, long_frame),  # valid Opus, but 40 ms where 20 ms are expected
        RecoverWithFec(3, b""),  # empty: no FEC data
        PlayFrame(4, p[2]),
    ]
    for slot in slots:
        playback.accept(AudioOut(ANN, slot))
        playback.tick()
    counted = stats(playback, ANN)
    assert (counted.frames_played, counted.decode_errors, counted.frames_concealed) == (2, 3, 3)
    assert len(tracks.made[ANN].frames) == 5  # every slot still filled its tick


def test_an_unknown_playout_kind_is_counted_and_ignored() -> None:
    @attrs.frozen
    class Vanish:
        seq: int

    mix = Recorder()
    playback = Playback(mix)
    playback.accept(AudioOut(ANN, cast(Playout, Vanish(3))))
    assert playback.tick() == SILENT
    assert stats(playback, ANN).unknown_playouts == 1


def test_a_full_queue_drops_its_oldest_frames() -> None:
    slots = plays(speech(5, 13))
    tracks = Tracks()
    playback = Playback(NullOutput(), tracks, max_queue_frames=10)
    for slot in slots:
        playback.accept(AudioOut(ANN, slot))
    for _ in range(11):
        playback.tick()
    assert stats(playback, ANN).queue_drops == 3
    assert tracks.made[ANN].frames == [*reference(slots)[3:], SILENT]


def test_a_burst_of_slots_plays_out_one_per_tick() -> None:
    slots: list[Playout] = [*plays(speech(6, 3)), Silence(), Silence()]
    tracks = Tracks()
    playback = Playback(NullOutput(), tracks)
    for slot in slots:
        playback.accept(AudioOut(ANN, slot))
    for _ in range(6):
        playback.tick()
    assert tracks.made[ANN].frames == [*reference(slots), SILENT]


# -- speakers coming and going --------------------------------------------------------


def test_speaking_follows_the_levels_of_what_is_played() -> None:
    tone = plays(packets(ToneSource(300.0, level_dbfs=-20.0), 40))
    playback = Playback(NullOutput())
    seen = []
    for slot in tone:
        playback.accept(AudioOut(ANN, slot))
        playback.tick()
        seen.append(ANN in playback.speaking)
    assert not seen[0] and seen[-1]
    playback.forget(ANN)
    assert playback.speaking == frozenset()


def test_a_forgotten_speaker_gets_silence_and_a_fresh_decoder_on_return() -> None:
    p = speech(7, 10)
    tracks = Tracks()
    playback = Playback(NullOutput(), tracks)
    for slot in plays(p[:3]):
        playback.accept(AudioOut(ANN, slot))
    playback.tick()
    playback.forget(ANN)  # the queued frames go with the speaker
    playback.tick()
    playback.tick()
    back = plays(p[5:8], 5)
    for slot in back:
        playback.accept(AudioOut(ANN, slot))
        playback.tick()
    frames = tracks.made[ANN].frames
    assert frames[1:3] == [SILENT, SILENT]
    assert frames[3:] == reference(back)  # decoded as by a new decoder
    assert tracks.made[ANN].closed == 0
    assert len(frames) == playback.ticks == 6
    playback.forget(BOB)  # unknown: nothing to do


def test_statistics_sum_over_speakers() -> None:
    playback = Playback(NullOutput())
    playback.accept(AudioOut(ANN, PlayFrame(0, speech(1)[0])))
    playback.accept(AudioOut(BOB, Conceal(0)))
    playback.accept(AudioOut(BOB, PlayFrame(1, b"\xff" * 9)))
    playback.tick()
    result = playback.statistics()
    assert result.ticks == 1
    assert set(result.speakers) == {ANN, BOB}
    assert result.overall == SpeakerStatistics(
        frames_played=1, frames_concealed=2, decode_errors=1
    )
    assert result.overall.concealed_fraction == pytest.approx(2 / 3)


def test_close_closes_every_output_once_and_ends_playback() -> None:
    mix, tracks = Recorder(), Tracks()
    playback = Playback(mix, tracks)
    playback.accept(AudioOut(ANN, Conceal(0)))
    playback.accept(AudioOut(BOB, Conceal(0)))
    playback.tick()
    playback.close()
    playback.close()
    assert mix.closed == tracks.made[ANN].closed == tracks.made[BOB].closed == 1
    with pytest.raises(LocalProtocolError):
        playback.tick()
    with pytest.raises(LocalProtocolError):
        playback.accept(AudioOut(ANN, Conceal(1)))


def test_a_failing_output_does_not_stop_the_others_closing() -> None:
    class Broken(Recorder):
        def close(self) -> None:
            raise OSError("gone")

    track = Recorder()
    playback = Playback(Broken(), lambda _key: track)
    playback.accept(AudioOut(ANN, Conceal(0)))
    playback.tick()
    with pytest.raises(OSError, match="gone"):
        playback.close()
    assert track.closed == 1


def test_playback_is_48_khz_mono() -> None:
    with pytest.raises(LocalProtocolError, match="48000 Hz mono"):
        Playback(NullOutput(), codec=CodecConfig(sample_rate=16000))
    with pytest.raises(LocalProtocolError):
        Playback(NullOutput(), codec=CodecConfig(channels=2))


def test_10_ms_frames_are_supported() -> None:
    codec = CodecConfig(frame_ms=10)
    encoder = OpusEncoder(codec)
    packet = encoder.encode(ToneSource(frame_samples=480).read_frame())
    mix = NullOutput()
    playback = Playback(mix, codec=codec)
    playback.accept(AudioOut(ANN, PlayFrame(0, packet)))
    assert len(playback.tick()) == 960
    assert playback.frame_seconds == 0.010


# -- the driver ------------------------------------------------------------------------


async def test_run_playback_ticks_on_a_drift_free_schedule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mix = NullOutput()
    playback = Playback(mix)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(run_playback, playback, 0.020)
        await trio.sleep_until(start + 0.99)
        assert playback.ticks == 50  # at 0, 20, ..., 980 ms
        await trio.sleep_until(start + 120.01)
        assert playback.ticks == 6001  # no drift over two minutes
        nursery.cancel_scope.cancel()
    assert mix.frames == 6001


async def test_run_playback_resyncs_after_a_stall(autojump_clock: trio.testing.MockClock) -> None:
    clock = FrameClock(0.020)
    stalled = False

    class Stalling(NullOutput):
        def write_frame(self, pcm: bytes) -> None:
            nonlocal stalled
            super().write_frame(pcm)
            if self.frames == 10 and not stalled:
                stalled = True
                autojump_clock.jump(1.0)  # as if the process were suspended for a second

    mix = Stalling()
    playback = Playback(mix)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(functools.partial(run_playback, playback, 0.020, clock=clock))
        await trio.sleep_until(start + 1.18 + 0.09)
        nursery.cancel_scope.cancel()
    # 10 ticks, then (no burst of 50) one at 1.18 s and one per 20 ms after it, to 1.26 s.
    assert clock.late_resyncs == 1
    assert mix.frames == 10 + 5


async def test_run_playback_refuses_a_clock_of_another_period() -> None:
    with pytest.raises(LocalProtocolError):
        await run_playback(Playback(NullOutput()), 0.020, clock=FrameClock(0.010))
