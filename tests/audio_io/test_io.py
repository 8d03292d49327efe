"""Frame inputs and outputs: real-time pacing, simple outputs, source specs."""

from __future__ import annotations

import wave
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from mitalk_p2p.audio.io import (
    FanOutput,
    FrameClock,
    FrameInput,
    FrameOutput,
    NullOutput,
    PacedSource,
    SupportsSilence,
    input_from_spec,
    write_silence,
)
from mitalk_p2p.audio.sources import AudioSourceError, SilenceSource, ToneSource, WavSource

FRAME = 0.020


def write_wav(path: Path, samples: int) -> None:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(48000)
        writer.writeframes(bytes(range(256)) * (2 * samples // 256) + bytes(2 * samples % 256))


async def read_times(source: FrameInput, count: int) -> list[float]:
    times = []
    for _ in range(count):
        assert await source.read_frame() is not None
        times.append(trio.current_time())
    return times


# -- pacing --------------------------------------------------------------------------


async def test_frames_come_at_exact_times_without_drift(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = PacedSource(ToneSource(), FRAME)
    await trio.sleep(3.7)  # the schedule starts at the first read, not at construction
    start = trio.current_time()
    times = await read_times(source, 3001)
    assert times[:4] == [start + i * FRAME for i in range(4)]
    assert times[-1] == pytest.approx(start + 60.0, abs=1e-9)
    assert source.late_resyncs == 0
    assert source.frame_samples == 960


async def test_a_small_lag_is_caught_up_and_a_stall_resyncs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = PacedSource(ToneSource(), FRAME)
    start = trio.current_time()
    await read_times(source, 3)  # 0, 20, 40 ms
    await trio.sleep(0.070)  # now 110 ms; frame 3 was due at 60 ms
    caught_up = await read_times(source, 4)
    # 60, 80 and 100 ms at once, then on schedule again
    assert caught_up == pytest.approx([start + 0.110] * 3 + [start + 6 * FRAME])
    assert source.late_resyncs == 0

    await trio.sleep(1.0)  # far behind: restart the schedule from now
    stalled = trio.current_time()
    resumed = await read_times(source, 3)
    assert resumed == pytest.approx([stalled, stalled + FRAME, stalled + 2 * FRAME])
    assert source.late_resyncs == 1


async def test_a_cancelled_read_loses_no_frame(autojump_clock: trio.testing.MockClock) -> None:
    source = PacedSource(WavSource(Path("t"), bytes(range(200)) * 48, 960), FRAME)
    first = await source.read_frame()
    with trio.move_on_after(0.010):
        await source.read_frame()
    second = await source.read_frame()
    assert first is not None and second is not None
    assert first + second == (bytes(range(200)) * 48)[: 4 * 960]


async def test_a_finite_input_ends_with_none(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    write_wav(path, 960 * 2 + 100)
    source = input_from_spec(str(path), seed=0, loop=False)
    frames = [await source.read_frame() for _ in range(5)]
    assert [f is not None for f in frames] == [True, True, True, False, False]


async def test_frame_clock_starts_on_first_wait(autojump_clock: trio.testing.MockClock) -> None:
    clock = FrameClock(0.5, max_lag_frames=0)
    assert clock.next_deadline() is None
    await trio.sleep(2.0)
    await clock.wait()
    assert clock.next_deadline() == trio.current_time() + 0.5
    with pytest.raises(ValueError):
        FrameClock(0.0)


# -- outputs -------------------------------------------------------------------------


@attrs.define
class Recorder:
    frames: list[bytes] = attrs.field(factory=list)
    closed: bool = False

    def write_frame(self, pcm: bytes) -> None:
        self.frames.append(pcm)

    def close(self) -> None:
        self.closed = True


def test_null_output_counts_and_fan_output_copies() -> None:
    null, recorder = NullOutput(), Recorder()
    fan = FanOutput([null, recorder])
    fan.write_frame(b"ab")
    fan.write_frame(b"cd")
    fan.close()
    assert null.frames == 2 and null.closed
    assert recorder.frames == [b"ab", b"cd"] and recorder.closed


def test_fan_output_closes_every_output_even_if_one_fails() -> None:
    class Broken(Recorder):
        def close(self) -> None:
            raise OSError("device vanished")

    after = Recorder()
    fan = FanOutput([Broken(), after])
    with pytest.raises(OSError, match="vanished"):
        fan.close()
    assert after.closed


def test_write_silence_uses_the_fast_path_when_there_is_one() -> None:
    @attrs.define
    class Fast(Recorder):
        silent_samples: int = 0

        def write_silence(self, samples: int) -> None:
            self.silent_samples += samples

    fast, slow = Fast(), Recorder()
    assert isinstance(fast, SupportsSilence) and not isinstance(slow, SupportsSilence)
    outputs: list[FrameOutput] = [fast, slow]
    for output in outputs:
        write_silence(output, 3, 960)
        write_silence(output, 0, 960)
    assert fast.silent_samples == 2880 and fast.frames == []
    assert slow.frames == [bytes(1920)] * 3


# -- specs ---------------------------------------------------------------------------


async def test_specs_make_paced_inputs(tmp_path: Path) -> None:
    write_wav(tmp_path / "voice.wav", 4800)
    write_wav(tmp_path / "LOUD.WAV", 4800)
    for spec in ("synthetic", "silence", "tone", "tone:300", "wav:voice.wav", "voice.wav"):
        source = input_from_spec(spec, seed=3, loop=True, base_dir=tmp_path)
        assert isinstance(source, PacedSource)
        assert source.frame_seconds == FRAME
        frame = await source.read_frame()
        assert frame is not None and len(frame) == 1920
    loud = input_from_spec(str(tmp_path / "LOUD.WAV"), seed=0, loop=False)
    assert isinstance(loud, PacedSource) and isinstance(loud.source, WavSource)
    quiet = input_from_spec(" silence ", seed=0, loop=True, frame_samples=480)
    assert isinstance(quiet, PacedSource) and isinstance(quiet.source, SilenceSource)
    assert quiet.frame_seconds == 0.010 and quiet.frame_samples == 480


async def test_a_looped_wav_input_never_ends(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", 960)
    source = input_from_spec("a.wav", seed=0, loop=True, base_dir=tmp_path)
    for _ in range(4):
        assert await source.read_frame() is not None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bogus", "unknown audio source 'bogus'.*or a path to a .wav file"),
        ("wav", "unknown audio source"),
        ("wav:", "unknown audio source"),
        ("tone:abc", "must be a number"),
        ("tone:0", "tone frequency"),
        ("missing.wav", "missing.wav: no such file"),
        ("wav:missing.wav", "missing.wav: no such file"),
        ("notes.txt", "unknown audio source"),
        ("fake.wav", "not a valid WAV file"),
    ],
)
def test_bad_specs_fail_with_one_clear_line(tmp_path: Path, spec: str, message: str) -> None:
    (tmp_path / "fake.wav").write_text("not audio")
    with pytest.raises(AudioSourceError, match=message) as caught:
        input_from_spec(spec, seed=0, loop=False, base_dir=tmp_path)
    assert "\n" not in str(caught.value)
