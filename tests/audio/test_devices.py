"""Sound devices: the pieces without a device, then real capture and playback through
PortAudio, ALSA's pulse plugin and a private PulseAudio server (see :mod:`.pulse`)."""

from __future__ import annotations

import array
import importlib.abc
import importlib.machinery
import json
import os
import random
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType, SimpleNamespace

import attrs
import numpy as np
import numpy.typing as npt
import pytest
import trio
import trio.testing

from mitalk_p2p.audio import devices
from mitalk_p2p.audio.devices import (
    AudioDeviceError,
    AudioDeviceUnavailable,
    DeviceInfo,
    DeviceInput,
    DeviceOutput,
    DropOldestQueue,
    InputStatistics,
    LinearResampler,
    OutputStatistics,
    StreamFormat,
    choose_format,
    find_device,
    format_device_table,
    open_device_input,
    open_device_output,
)
from mitalk_p2p.audio.io import FrameInput, FrameOutput
from mitalk_p2p.audio.mixer import pcm_to_samples, samples_to_pcm
from mitalk_p2p.audio.sources import SAMPLE_RATE, SyntheticSpeech, _resample_linear
from mitalk_p2p.core.errors import LocalProtocolError, MitalkError

from .pulse import PulseServer

FRAME = 960
SPEECH_SEED = 8
"""A seed whose first two seconds are mostly voiced (few, short pauses)."""

# -- the drop-oldest queue ------------------------------------------------------------


def test_queue_drops_the_oldest_and_counts() -> None:
    queue: DropOldestQueue[int] = DropOldestQueue(3)
    for item in range(5):
        queue.push(item)
    assert len(queue) == 3
    assert queue.dropped == 2
    assert [queue.pop() for _ in range(4)] == [2, 3, 4, None]
    queue.push(9)
    assert queue.pop() == 9
    assert queue.dropped == 2


def test_queue_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        DropOldestQueue[int](0)


def test_queue_count_is_exact_across_threads() -> None:
    """One producer thread against one consumer: nothing is lost without being counted,
    and what arrives keeps its order."""
    queue: DropOldestQueue[int] = DropOldestQueue(4)
    total = 50_000
    received: list[int] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set() or len(queue):
            item = queue.pop()
            if item is not None:
                received.append(item)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for item in range(total):
        queue.push(item)
    done.set()
    consumer.join()
    assert received == sorted(received)
    assert len(received) + queue.dropped == total


# -- the streaming resampler ----------------------------------------------------------

RATE_PAIRS = [(44100, 48000), (16000, 48000), (48000, 44100), (48000, 16000), (22050, 48000)]


def _noise(count: int, seed: int) -> array.array[int]:
    rng = random.Random(seed)
    return array.array("h", [rng.randint(-20000, 20000) for _ in range(count)])


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_resampler_in_blocks_equals_resampling_whole(in_rate: int, out_rate: int) -> None:
    """Block boundaries leave no trace (no clicks): any split gives the same samples."""
    signal = _noise(5000, in_rate)
    whole = LinearResampler(in_rate, out_rate).process(signal)
    rng = random.Random(out_rate)
    streaming = LinearResampler(in_rate, out_rate)
    pieces = array.array("h")
    start = 0
    while start < len(signal):
        size = rng.choice([0, 1, 2, 7, 147, 160, 441, 960])
        pieces.extend(streaming.process(signal[start : start + size]))
        start += size
    assert pieces == whole
    # One output per output period that starts before the last input sample.
    assert len(whole) == -(-(len(signal) - 1) * out_rate // in_rate)


@pytest.mark.parametrize("in_rate", [8000, 16000, 44100, 22050])
def test_resampler_agrees_with_the_wav_resampler(in_rate: int) -> None:
    signal = _noise(3000, in_rate)
    ours = LinearResampler(in_rate, SAMPLE_RATE).process(signal)
    assert ours == _resample_linear(signal, in_rate)[: len(ours)]


def test_resampler_same_rate_is_identity() -> None:
    signal = _noise(100, 1)
    assert LinearResampler(48000, 48000).process(signal) == signal


# -- the stream callbacks, driven as PortAudio would drive them -----------------------

FAKE_INFO = DeviceInfo(0, "fake", "test", 2, 2, 48000.0)
STEREO = StreamFormat(samplerate=48000, channels=2, blocksize=FRAME)


def _status(*, overflow: bool = False, underflow: bool = False) -> SimpleNamespace:
    return SimpleNamespace(input_overflow=overflow, output_underflow=underflow)


def _stereo_block(left: int, right: int) -> bytes:
    block = array.array("h", [left, right] * FRAME)
    return block.tobytes()  # PortAudio's int16 is in host byte order


async def test_input_callback_drops_the_oldest_blocks_and_downmixes() -> None:
    mic = DeviceInput(FAKE_INFO, STEREO, frame_samples=FRAME, queue_frames=2)
    for value in range(4):
        mic._callback(_stereo_block(100 * value, 100 * value + 20), FRAME, None, _status())
    mic._callback(_stereo_block(-7, -9), FRAME, None, _status(overflow=True))
    assert mic.statistics() == InputStatistics(frames_captured=5, frames_dropped=3, overflows=1)
    assert set(pcm_to_samples(await mic.read_frame() or b"")) == {310}  # channels averaged
    assert set(pcm_to_samples(await mic.read_frame() or b"")) == {-8}
    await mic.aclose()
    assert await mic.read_frame() is None


def _output_block(speaker: DeviceOutput, *, underflow: bool = False) -> array.array[int]:
    """One callback's worth of output, as the left channel's samples."""
    out = bytearray(2 * speaker.format.channels * speaker.format.blocksize)
    speaker._callback(out, speaker.format.blocksize, None, _status(underflow=underflow))
    samples = array.array("h", bytes(out))
    left, right = samples[0::2], samples[1::2]
    assert left == right  # the mono frame goes to both channels
    return left


def _frame(value: int) -> bytes:
    return samples_to_pcm([value] * FRAME)


async def test_output_callback_prebuffers_pads_and_counts_underruns() -> None:
    speaker = DeviceOutput(FAKE_INFO, STEREO, frame_samples=FRAME, queue_frames=3)
    assert speaker.prebuffer_frames == 2
    silence = array.array("h", bytes(2 * FRAME))
    assert _output_block(speaker) == silence  # nothing written yet
    speaker.write_frame(_frame(1))
    assert _output_block(speaker) == silence  # waiting for a second frame
    speaker.write_frame(_frame(2))
    assert set(_output_block(speaker)) == {1}
    assert set(_output_block(speaker)) == {2}
    assert _output_block(speaker, underflow=True) == silence  # ran dry: a gap
    assert speaker.statistics().underruns == 0  # not (yet) an underrun: it may be the end
    for value in range(3, 8):
        speaker.write_frame(_frame(value))  # 3 and 4 do not fit in the queue
    assert [set(_output_block(speaker)) for _ in range(4)] == [{5}, {6}, {7}, {0}]
    assert speaker.statistics() == OutputStatistics(
        frames_written=7, frames_dropped=2, underruns=1, underflows=1
    )
    speaker.close()
    with pytest.raises(LocalProtocolError, match="after close"):
        speaker.write_frame(_frame(8))


async def test_output_drain_plays_below_the_prebuffer_threshold() -> None:
    speaker = DeviceOutput(FAKE_INFO, STEREO, frame_samples=FRAME, prebuffer_frames=3)
    speaker.write_frame(_frame(5))
    assert set(_output_block(speaker)) == {0}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(speaker.drain)
        await trio.testing.wait_all_tasks_blocked()
        assert set(_output_block(speaker)) == {5}  # draining: no threshold any more
        assert set(_output_block(speaker)) == {0}  # dry: this wakes drain()
    assert speaker.statistics().underruns == 0


async def test_prebuffer_cannot_exceed_the_queue() -> None:
    with pytest.raises(LocalProtocolError, match="prebuffer_frames"):
        DeviceOutput(FAKE_INFO, STEREO, queue_frames=2, prebuffer_frames=3)


# -- choosing the stream format -------------------------------------------------------


class _FakePortAudioError(Exception):
    pass


def _fake_sounddevice(accepts: Callable[[int, int], bool]) -> SimpleNamespace:
    """Enough of ``sounddevice`` for :func:`choose_format`: a device that accepts
    (channels, rate) when ``accepts`` says so."""

    def check(*, device: int, channels: int, dtype: str, samplerate: int) -> None:
        assert dtype == "int16"
        if not accepts(channels, samplerate):
            raise _FakePortAudioError("Invalid sample rate")

    return SimpleNamespace(
        PortAudioError=_FakePortAudioError,
        check_input_settings=check,
        check_output_settings=check,
    )


@pytest.mark.parametrize(
    ("accepts", "expected"),
    [
        (lambda channels, rate: True, StreamFormat(48000, 1, 960)),
        (lambda channels, rate: rate == 44100, StreamFormat(44100, 1, 882)),
        (lambda channels, rate: channels == 2, StreamFormat(48000, 2, 960)),
        (lambda channels, rate: channels == 2 and rate == 44100, StreamFormat(44100, 2, 882)),
    ],
)
def test_format_prefers_48k_mono(
    monkeypatch: pytest.MonkeyPatch, accepts: Callable[[int, int], bool], expected: StreamFormat
) -> None:
    monkeypatch.setattr(devices, "_sd", _fake_sounddevice(accepts))
    info = DeviceInfo(3, "card", "ALSA", 2, 2, 44100.0)
    assert choose_format(info, "input") == expected
    assert choose_format(info, "output") == expected


def test_format_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "_sd", _fake_sounddevice(lambda channels, rate: rate == 48000))
    info = DeviceInfo(3, "card", "ALSA", 0, 2, 44100.0)
    assert choose_format(info, "output", samplerate=48000, frame_samples=480).blocksize == 480
    with pytest.raises(AudioDeviceError, match=r'3 "card" \(ALSA\) .* at 16000 Hz$'):
        choose_format(info, "output", samplerate=16000)
    with pytest.raises(AudioDeviceError, match="has no input channels"):
        choose_format(info, "input")


# -- finding devices ------------------------------------------------------------------

FAKE_DEVICES = [
    DeviceInfo(0, "HDA Intel PCH: ALC257 Analog (hw:0,0)", "ALSA", 2, 2, 44100.0),
    DeviceInfo(1, "USB Headset Mic (hw:1,0)", "ALSA", 1, 0, 48000.0),
    DeviceInfo(2, "USB Headset (hw:1,0)", "ALSA", 0, 2, 48000.0),
    DeviceInfo(3, "pulse", "ALSA", 32, 32, 44100.0),
    DeviceInfo(4, "pulse_monitor", "ALSA", 32, 0, 44100.0),
    DeviceInfo(5, "default", "ALSA", 32, 32, 44100.0, True, True),
]


@pytest.fixture
def fake_devices(monkeypatch: pytest.MonkeyPatch) -> list[DeviceInfo]:
    monkeypatch.setattr(devices, "list_devices", lambda: list(FAKE_DEVICES))
    return FAKE_DEVICES


@pytest.mark.usefixtures("fake_devices")
def test_find_device_by_index_name_and_default() -> None:
    assert find_device("1", "input") == FAKE_DEVICES[1]
    assert find_device("usb headset mic", "input") == FAKE_DEVICES[1]
    assert find_device("HEADSET", "input") == FAKE_DEVICES[1]  # the only input among two
    assert find_device("headset", "output") == FAKE_DEVICES[2]
    assert find_device("pulse", "input") == FAKE_DEVICES[3]  # a whole name beats a part
    assert find_device(None, "output") == FAKE_DEVICES[5]
    assert find_device("  ", "input") == FAKE_DEVICES[5]
    assert find_device("default", "input") == FAKE_DEVICES[5]


def test_find_device_without_a_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "list_devices", lambda: FAKE_DEVICES[:2])
    assert find_device(None, "input") is None


@pytest.mark.usefixtures("fake_devices")
def test_ambiguous_device_lists_the_candidates_on_one_line() -> None:
    with pytest.raises(AudioDeviceError) as caught:
        find_device("hw:", "input")
    message = str(caught.value)
    assert "\n" not in message
    assert "ambiguous" in message
    assert '0 "HDA Intel PCH: ALC257 Analog (hw:0,0)" (ALSA)' in message
    assert '1 "USB Headset Mic (hw:1,0)" (ALSA)' in message
    assert "USB Headset (hw:1,0)" not in message  # output only
    assert isinstance(caught.value, MitalkError)


@pytest.mark.usefixtures("fake_devices")
def test_unknown_device_lists_the_devices_of_that_kind() -> None:
    with pytest.raises(AudioDeviceError, match="no audio output device matches 'webcam'") as c:
        find_device("webcam", "output")
    assert "\n" not in str(c.value)
    assert '2 "USB Headset (hw:1,0)"' in str(c.value)
    assert "pulse_monitor" not in str(c.value)
    with pytest.raises(AudioDeviceError, match="no audio input device has index 2"):
        find_device("2", "input")
    with pytest.raises(AudioDeviceError, match="index 17"):
        find_device("17", "output")


def test_find_device_rejects_a_bad_kind() -> None:
    with pytest.raises(LocalProtocolError, match="kind"):
        find_device("x", "both")  # type: ignore[arg-type]


def test_device_table() -> None:
    table = format_device_table(
        [
            DeviceInfo(0, "mic", "ALSA", 1, 0, 48000.0, is_default_input=True),
            DeviceInfo(1, "speakers", "ALSA", 0, 2, 44100.0, is_default_output=True),
            DeviceInfo(12, "both", "JACK Audio Connection Kit", 2, 2, 48000.0, True, True),
        ]
    )
    assert table.splitlines() == [
        "    #  name      host API                   in  out   rate",
        ">   0  mic       ALSA                        1    0  48000",
        "<   1  speakers  ALSA                        0    2  44100",
        "*  12  both      JACK Audio Connection Kit   2    2  48000",
        "> default input, < default output, * both",
    ]
    assert format_device_table([]) == "no audio devices found"


# -- PortAudio missing ----------------------------------------------------------------


class _NoPortAudio(importlib.abc.MetaPathFinder):
    """Makes ``import sounddevice`` fail as it does without libportaudio2."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "sounddevice":
            raise OSError("PortAudio library not found")
        return None


def test_missing_portaudio_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "_sd", None)
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])
    with pytest.raises(AudioDeviceUnavailable) as caught:
        devices.list_devices()
    message = str(caught.value)
    assert "libportaudio2" in message
    assert "apt-get install libportaudio2" in message
    assert "PortAudio library not found" in message
    assert isinstance(caught.value, AudioDeviceError)
    assert isinstance(caught.value, MitalkError)


def test_missing_sounddevice_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "_sd", None)
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(AudioDeviceUnavailable, match="sounddevice is not installed"):
        devices.list_devices()


# -- real devices through PulseAudio --------------------------------------------------

Signal = npt.NDArray[np.float64]


def _signal(frames: Sequence[bytes]) -> Signal:
    return np.array(pcm_to_samples(b"".join(frames)), dtype=np.float64)


def _aligned_correlation(sent: Signal, received: Signal) -> tuple[int, float]:
    """The delay of ``received`` behind ``sent`` (by FFT cross-correlation), and their
    normalized correlation once aligned, over what overlaps."""
    size = 1 << (len(sent) + len(received)).bit_length()
    spectrum = np.fft.rfft(received, size) * np.conj(np.fft.rfft(sent, size))
    cross = np.fft.irfft(spectrum, size)
    lag = int(np.argmax(cross[: len(received)]))
    overlap = min(len(sent), len(received) - lag)
    a, b = sent[:overlap], received[lag : lag + overlap]
    return lag, float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


LEAD_FRAMES = 6
"""Frames written before the first one is captured (of the output queue's 10)."""


@attrs.frozen
class Loopback:
    sent: list[bytes]
    received: list[bytes]
    mic: InputStatistics
    speaker: OutputStatistics


async def _loopback(
    pulse: PulseServer,
    sink: str,
    *,
    frames: int = 100,
    play_rate: int | None = None,
    record_rate: int | None = None,
) -> Loopback:
    """Play speech into ``sink`` while recording its monitor.  Each captured frame
    lets one more frame be written, so the device clock paces the writer."""
    source = SyntheticSpeech(SPEECH_SEED, frame_samples=FRAME, pitch_hz=120)
    sent: list[bytes] = []
    received: list[bytes] = []
    async with (
        open_device_input(pulse.monitor_device(sink), samplerate=record_rate) as mic,
        open_device_output(pulse.playback_device(sink), samplerate=play_rate) as speaker,
    ):

        def play() -> None:
            sent.append(source.read_frame())
            speaker.write_frame(sent[-1])

        # Capture arrives in uneven bursts (up to about 40 ms apart), so the writer
        # starts 120 ms ahead, or a late burst would let playback run dry mid-signal.
        for _ in range(LEAD_FRAMES):
            play()
        with trio.fail_after(10):
            while len(received) < frames:
                frame = await mic.read_frame()
                assert frame is not None
                received.append(frame)
                play()
    return Loopback(sent, received, mic.statistics(), speaker.statistics())


async def test_loopback_through_a_null_sink(pulse_server: PulseServer) -> None:
    result = await _loopback(pulse_server, "mic")
    assert {len(frame) for frame in result.received} == {2 * FRAME}
    lag, correlation = _aligned_correlation(_signal(result.sent), _signal(result.received))
    assert correlation >= 0.9, (lag, correlation, result)
    assert lag < 30 * FRAME  # well under the length of the recording
    assert result.mic.frames_captured >= len(result.received)
    assert result.mic.frames_dropped == 0
    assert result.speaker.frames_written == len(result.sent)
    assert result.speaker.frames_dropped == 0
    assert result.speaker.underruns == 0


@pytest.mark.parametrize(
    ("sink", "play_rate", "record_rate"), [("cd", 44100, 16000), ("speaker", 16000, 44100)]
)
async def test_devices_at_other_rates_are_resampled(
    pulse_server: PulseServer, sink: str, play_rate: int, record_rate: int
) -> None:
    """Devices opened at 44.1 and 16 kHz (``cd`` is a 44.1 kHz sink): both ends go
    through the resampler, up and down, and frames keep their size."""
    assert pulse_server.sink("cd").rate == 44100
    result = await _loopback(pulse_server, sink, play_rate=play_rate, record_rate=record_rate)
    assert {len(frame) for frame in result.received} == {2 * FRAME}
    lag, correlation = _aligned_correlation(_signal(result.sent), _signal(result.received))
    assert correlation >= 0.9, (lag, correlation, result)


async def test_device_formats(pulse_server: PulseServer) -> None:
    async with (
        open_device_input(pulse_server.monitor_device("mic")) as mic,
        open_device_output(pulse_server.playback_device("cd"), samplerate=44100) as speaker,
    ):
        assert mic.format.samplerate == SAMPLE_RATE  # taken when the device accepts it
        assert (mic.format.channels, mic.format.blocksize) == (1, FRAME)
        assert (speaker.format.samplerate, speaker.format.blocksize) == (44100, 882)
        assert mic.device.name == pulse_server.monitor_device("mic")
        # They stand in for any other input and output (checked by mypy).
        frame_input: FrameInput = mic
        frame_output: FrameOutput = speaker
        assert frame_input.frame_samples == FRAME and frame_output is speaker


def _own_streams(pulse: PulseServer) -> list[str]:
    """The kinds of stream this process has open on the server."""
    return sorted(stream.kind for stream in pulse.client_streams(os.getpid()))


async def test_cancellation_closes_both_streams(pulse_server: PulseServer) -> None:
    with trio.CancelScope() as scope:
        async with (
            open_device_input(pulse_server.monitor_device("speaker")) as mic,
            open_device_output(pulse_server.playback_device("speaker")) as speaker,
        ):
            assert await mic.read_frame() is not None
            speaker.write_frame(bytes(2 * FRAME))
            streams = await trio.to_thread.run_sync(_own_streams, pulse_server)
            assert streams == ["sink-inputs", "source-outputs"]
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert mic.closed and speaker.closed
    assert await trio.to_thread.run_sync(_own_streams, pulse_server) == []
    assert await mic.read_frame() is None
    with pytest.raises(LocalProtocolError, match="after close"):
        speaker.write_frame(bytes(2 * FRAME))


async def test_closing_an_input_wakes_its_reader(pulse_server: PulseServer) -> None:
    async with open_device_input(pulse_server.monitor_device("speaker")) as mic:
        reading = trio.Event()
        ended: list[bool] = []

        async def read_until_closed() -> None:
            while await mic.read_frame() is not None:
                reading.set()
            ended.append(True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_until_closed)
            await reading.wait()
            await trio.testing.wait_all_tasks_blocked()  # the reader waits for a frame
            await mic.aclose()
        assert ended == [True]


async def test_output_rejects_wrong_frame_sizes(pulse_server: PulseServer) -> None:
    async with open_device_output(pulse_server.playback_device("speaker")) as speaker:
        with pytest.raises(LocalProtocolError, match="1920 bytes"):
            speaker.write_frame(bytes(100))
        speaker.close()
        with pytest.raises(LocalProtocolError, match="after close"):
            speaker.write_frame(bytes(2 * FRAME))


@pytest.mark.usefixtures("pulse_server")
async def test_unknown_device_on_open() -> None:
    with pytest.raises(AudioDeviceError, match="no audio input device matches"):
        async with open_device_input("no such microphone"):
            pass  # pragma: no cover


def _indices(pulse: PulseServer, kind: str) -> dict[int, str]:
    return {
        entry["index"]: entry["name"]
        for entry in json.loads(pulse.pactl("-f", "json", "list", kind))
    }


async def test_default_devices_are_the_speaker_and_the_mic_monitor(
    pulse_server: PulseServer,
) -> None:
    async with open_device_input() as mic, open_device_output() as speaker:
        assert mic.device.is_default_input and speaker.device.is_default_output
        assert await mic.read_frame() is not None
        streams = await trio.to_thread.run_sync(pulse_server.client_streams, os.getpid())
        sinks = await trio.to_thread.run_sync(_indices, pulse_server, "sinks")
        sources = await trio.to_thread.run_sync(_indices, pulse_server, "sources")
    attached = sorted(
        (sinks if stream.kind == "sink-inputs" else sources)[stream.device] for stream in streams
    )
    assert attached == ["mic.monitor", "speaker"]


async def test_child_processes_reach_the_server(pulse_server: PulseServer) -> None:
    """:attr:`PulseServer.env` is all a child process needs to see the devices."""
    script = (
        "from mitalk_p2p.audio.devices import list_devices\n"
        "print('\\n'.join(device.name for device in list_devices()))\n"
    )
    done = await trio.run_process(
        [sys.executable, "-c", script], env=pulse_server.child_env(), capture_stdout=True
    )
    names = done.stdout.decode().split()
    for sink in pulse_server.sink_names:
        assert pulse_server.playback_device(sink) in names
        assert pulse_server.monitor_device(sink) in names
