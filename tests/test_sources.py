"""PCM sources: synthetic speech, tones, silence, WAV files and source specs."""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import struct
import wave
from collections.abc import Sequence
from pathlib import Path

import pytest

from mitalk_p2p.audio.mixer import pcm_to_samples, rms_dbfs, samples_to_pcm
from mitalk_p2p.audio.sources import (
    SPEC_FORMS,
    AudioSourceError,
    PcmSource,
    SilenceSource,
    SyntheticSpeech,
    ToneSource,
    WavSource,
    source_from_spec,
)

RATE = 48000
N = 960  # 20 ms


def read(source: PcmSource, count: int) -> list[bytes]:
    frames = []
    for _ in range(count):
        frame = source.read_frame()
        assert frame is not None
        frames.append(frame)
    return frames


def samples_of(frames: Sequence[bytes]) -> list[int]:
    return list(pcm_to_samples(b"".join(frames)))


def zero_crossings(samples: Sequence[int]) -> int:
    signs = [s >= 0 for s in samples if s != 0]
    return sum(a != b for a, b in itertools.pairwise(signs))


def runs(flags: Sequence[bool]) -> list[tuple[bool, int]]:
    """Consecutive equal flags as (flag, run length)."""
    return [(flag, len(list(group))) for flag, group in itertools.groupby(flags)]


def levels(source: PcmSource, count: int) -> list[float]:
    return [rms_dbfs(frame) for frame in read(source, count)]


# -- synthetic speech ---------------------------------------------------------------


def test_synthetic_speech_is_deterministic_per_seed() -> None:
    first = read(SyntheticSpeech(5), 500)
    assert read(SyntheticSpeech(5), 500) == first
    assert read(SyntheticSpeech(6), 500) != first
    assert all(len(frame) == 2 * N for frame in first)


def test_synthetic_speech_golden_digest() -> None:
    # Scenario results depend on these exact bytes: a change to the synthesis (or a
    # platform that computes differently) must show up here.
    speech = SyntheticSpeech(1)
    digest = hashlib.sha256(b"".join(read(speech, 100))).hexdigest()
    assert digest == "88be76dc1bf4926100295c4872b77215c64ba1baaaa1a36e8e0be7fc2f5cb909"


def test_synthetic_speech_does_not_depend_on_the_frame_size() -> None:
    long_frames = b"".join(read(SyntheticSpeech(9, frame_samples=960), 150))
    short_frames = read(SyntheticSpeech(9, frame_samples=480), 300)
    odd_frames = read(SyntheticSpeech(9, frame_samples=257), 561)
    assert all(len(frame) == 960 for frame in short_frames)
    assert b"".join(short_frames) == long_frames
    assert b"".join(odd_frames)[: len(long_frames)] == long_frames


@pytest.mark.parametrize("seed", [0, 1, 2, 77])
def test_synthetic_speech_level_peaks_near_minus_12_dbfs(seed: int) -> None:
    frames = read(SyntheticSpeech(seed), 1000)
    loudest = max(rms_dbfs(frame) for frame in frames)
    assert -13.5 <= loudest <= -10.5
    assert max(abs(s) for s in samples_of(frames)) < 32767


def test_synthetic_speech_level_is_adjustable() -> None:
    loudest = max(levels(SyntheticSpeech(3, level_dbfs=-24.0), 1000))
    assert -25.5 <= loudest <= -22.5


@pytest.mark.parametrize("seed", [0, 1, 2, 77])
def test_synthetic_speech_has_spurts_and_pauses_within_10_s(seed: int) -> None:
    frame_levels = levels(SyntheticSpeech(seed), 500)
    assert sum(level > -25.0 for level in frame_levels) > 100
    pauses = [n for quiet, n in runs([level < -60.0 for level in frame_levels]) if quiet]
    assert max(pauses) >= 10  # at least one pause of 200 ms or more


@pytest.mark.parametrize("seed", [4, 1000])
def test_synthetic_speech_timing_looks_like_conversation(seed: int) -> None:
    block = RATE // 100  # 10 ms
    frame_levels = levels(SyntheticSpeech(seed, frame_samples=block), 6000)
    blocks = runs([level < -60.0 for level in frame_levels])
    # Quiet runs of 150 ms or more are pauses; shorter ones are gaps between syllables.
    pauses = [n / 100 for quiet, n in blocks[1:-1] if quiet and n >= 15]
    assert len(pauses) >= 10
    assert all(0.15 <= p <= 1.6 for p in pauses), pauses
    spurts: list[float] = []
    current = 0
    for quiet, n in blocks[:-1]:
        if quiet and n >= 15:
            if current:
                spurts.append(current / 100)
            current = 0
        else:
            current += n
    assert all(0.4 <= s <= 3.3 for s in spurts), spurts
    onsets = sum(a < -35.0 <= b for a, b in itertools.pairwise(frame_levels))
    assert 4.0 <= onsets / sum([*spurts, current / 100]) <= 7.0


def test_synthetic_speech_pauses_let_opus_dtx_skip_packets() -> None:
    from mitalk_p2p.codec import CodecUnavailable, OpusEncoder, is_dtx

    try:
        encoder = OpusEncoder()
    except CodecUnavailable as exc:
        pytest.skip(str(exc))
    frames = read(SyntheticSpeech(11), 500)
    packets = [encoder.encode(frame) for frame in frames]
    skipped = [is_dtx(packet) for packet in packets]
    assert sum(skipped) >= 30
    assert not any(rms_dbfs(f) > -40.0 for f, s in zip(frames, skipped, strict=True) if s)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"frame_samples": 0},
        {"frame_samples": -960},
        {"level_dbfs": 0.0},
        {"level_dbfs": math.nan},
        {"pitch_hz": 1000.0},
    ],
)
def test_synthetic_speech_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(AudioSourceError):
        SyntheticSpeech(1, **kwargs)  # type: ignore[arg-type]


def test_synthetic_speech_accepts_a_fixed_pitch() -> None:
    frames = read(SyntheticSpeech(2, pitch_hz=100.0), 200)
    assert frames != read(SyntheticSpeech(2, pitch_hz=200.0), 200)


# -- tones and silence --------------------------------------------------------------


@pytest.mark.parametrize(
    ("hz", "dbfs"), [(440.0, -12.0), (1000.0, -20.0), (97.3, -6.0), (3000.0, -40.0)]
)
def test_tone_level_and_frequency(hz: float, dbfs: float) -> None:
    frames = read(ToneSource(hz, dbfs), 50)  # one second
    assert abs(rms_dbfs(b"".join(frames)) - dbfs) <= 0.5
    assert all(abs(rms_dbfs(frame) - dbfs) <= 0.5 for frame in frames if hz >= 100)
    assert abs(zero_crossings(samples_of(frames)) - 2 * hz) <= 2


def test_tone_is_continuous_across_frames() -> None:
    samples = samples_of(read(ToneSource(440.0, -12.0, frame_samples=100), 480))
    amplitude = 32768 * math.sqrt(2) * 10 ** (-12 / 20)
    largest_step = amplitude * 2 * math.pi * 440 / RATE
    assert max(abs(b - a) for a, b in itertools.pairwise(samples)) <= largest_step + 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"frequency_hz": 0.0},
        {"frequency_hz": 24000.0},
        {"level_dbfs": 0.0},
        {"level_dbfs": math.inf},
        {"level_dbfs": 1e6},
        {"frame_samples": 0},
    ],
)
def test_tone_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(AudioSourceError):
        ToneSource(**kwargs)  # type: ignore[arg-type]


def test_silence() -> None:
    source = SilenceSource(frame_samples=480)
    assert read(source, 3) == [bytes(960)] * 3
    assert isinstance(source, PcmSource)


# -- WAV files ----------------------------------------------------------------------


def sine(hz: float, rate: int, count: int, amplitude: float = 0.5) -> list[float]:
    return [amplitude * math.sin(2 * math.pi * hz * i / rate) for i in range(count)]


def encode_samples(values: Sequence[float], width: int) -> bytes:
    """Samples from -1 to 1 as little-endian PCM of ``width`` bytes (8-bit unsigned)."""
    top = (1 << (8 * width - 1)) - 1
    ints = [round(v * top) for v in values]
    if width == 1:
        return bytes(i + 128 for i in ints)
    return b"".join(i.to_bytes(width, "little", signed=True) for i in ints)


def write_wav(path: Path, rate: int, width: int, channels: Sequence[Sequence[float]]) -> Path:
    interleaved = [v for frame in zip(*channels, strict=True) for v in frame]
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(len(channels))
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(encode_samples(interleaved, width))
    return path


def riff(
    fmt_tag: int = 1,
    channels: int = 1,
    rate: int = RATE,
    bits: int = 16,
    data: bytes | None = b"\x00\x00" * 100,
    data_size: int | None = None,
) -> bytes:
    """A hand-made WAV file, for formats the wave module cannot write."""
    block = channels * ((bits + 7) // 8)
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if data is not None:
        size = len(data) if data_size is None else data_size
        body += b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_wav_16_khz_stereo_16_bit(tmp_path: Path) -> None:
    tone = sine(440.0, 16000, 16000)
    path = write_wav(tmp_path / "stereo.wav", 16000, 2, [tone, [0.0] * 16000])
    source = WavSource.open(path)
    assert source.frame_count == 50
    frames = read(source, 50)
    assert source.read_frame() is None
    assert all(len(frame) == 2 * N for frame in frames)
    samples = samples_of(frames)
    assert abs(zero_crossings(samples) - 880) <= 4
    # The silent right channel halves the level: a 0.5 sine is -9 dBFS, averaged -15.
    assert abs(rms_dbfs(b"".join(frames)) - (-15.05)) <= 0.2


def test_wav_44_1_khz_mono_8_bit_pads_the_last_frame(tmp_path: Path) -> None:
    count = 22491  # 0.51 s: 24480 samples at 48 kHz, 25.5 frames
    path = write_wav(tmp_path / "mono8.wav", 44100, 1, [sine(300.0, 44100, count)])
    source = WavSource.open(path)
    frames = read(source, 26)
    assert source.read_frame() is None
    samples = samples_of(frames)
    assert abs(zero_crossings(samples[:24480]) - 306) <= 4
    assert samples[24480:] == [0] * 480
    assert any(samples[24000:24480])
    assert abs(rms_dbfs(b"".join(frames)[: 2 * 24480]) - (-9.03)) <= 0.3


@pytest.mark.parametrize("width", [3, 4])
def test_wav_48_khz_wide_samples_keep_their_top_16_bits(tmp_path: Path, width: int) -> None:
    rng = random.Random(width)
    values = [rng.randrange(-32768, 32768) for _ in range(2000)]
    low = [rng.randrange(1 << (8 * (width - 2))) for _ in values]
    raw = b"".join(
        ((v << (8 * (width - 2))) + extra).to_bytes(width, "little", signed=True)
        for v, extra in zip(values, low, strict=True)
    )
    path = tmp_path / f"wide{width}.wav"
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(width)
        writer.setframerate(RATE)
        writer.writeframes(raw)
    samples = samples_of(read(WavSource.open(path), 3))
    assert samples[:2000] == values
    assert samples[2000:] == [0] * 880


def test_wav_48_khz_24_bit_sine(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "sine24.wav", RATE, 3, [sine(1000.0, RATE, RATE)])
    samples = samples_of(read(WavSource.open(path), 50))
    assert abs(zero_crossings(samples) - 2000) <= 2


def test_wav_averages_any_number_of_channels(tmp_path: Path) -> None:
    channels = [[0.3] * 96, [-0.1] * 96, [0.1] * 96]
    path = write_wav(tmp_path / "three.wav", RATE, 2, channels)
    samples = samples_of(read(WavSource.open(path, frame_samples=96), 1))
    expected = (round(0.3 * 32767) + round(-0.1 * 32767) + round(0.1 * 32767)) // 3
    assert samples == [expected] * 96


def test_wav_48_khz_16_bit_is_bit_exact_and_frames_are_padded(tmp_path: Path) -> None:
    values = [(i * 37) % 20001 - 10000 for i in range(1000)]
    path = tmp_path / "exact.wav"
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(RATE)
        writer.writeframes(samples_to_pcm(values))
    source = WavSource.open(path)
    assert source.frame_count == 2
    assert source.duration_seconds == 1000 / RATE
    first, second = read(source, 2)
    assert source.read_frame() is None
    assert pcm_to_samples(first).tolist() == values[:960]
    assert pcm_to_samples(second).tolist() == values[960:] + [0] * 920


def test_wav_loop_starts_over(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "loop.wav", RATE, 2, [sine(500.0, RATE, 1500)])
    once = read(WavSource.open(path), 2)
    looped = WavSource.open(path, loop=True)
    assert read(looped, 7) == once * 3 + once[:1]
    assert looped.loop


def test_wav_frame_size_is_honoured(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "small.wav", 8000, 2, [sine(200.0, 8000, 800)])
    source = WavSource.open(path, frame_samples=480)
    frames = read(source, 10)
    assert source.read_frame() is None
    assert {len(frame) for frame in frames} == {960}


# -- WAV errors ---------------------------------------------------------------------


def assert_wav_error(path: Path, problem: str, **kwargs: float) -> None:
    with pytest.raises(AudioSourceError) as caught:
        WavSource.open(path, **kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert path.name in message
    assert problem in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"hello, this is text\n", "not a valid WAV file"),
        (b"", "not a valid WAV file"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", "not a valid WAV file"),
        (b"RIFF\x04\x00\x00\x00AVI ", "not a valid WAV file"),
        (riff(data=None), "not a valid WAV file"),
        (riff(fmt_tag=3, bits=32, data=b"\x00" * 400), "IEEE float"),
        (riff(fmt_tag=2, bits=4), "unsupported sample format"),
        (riff(fmt_tag=6, bits=8), "A-law"),
        (riff(fmt_tag=0xFFFE), "unsupported sample format"),
        (riff(data=b""), "no audio"),
        (riff(data=b"\x01"), "no audio"),
        (riff(data=b"\x01", data_size=200), "no complete sample frame"),
        (riff(bits=40, data=b"\x00" * 50), "sample width"),
        (riff(rate=0), "sample rate"),
        (riff(channels=0), "not a valid WAV file"),
        (riff(rate=8000, data=b"\x00" * 10, data_size=2 * 8000 * 700), "too long"),
    ],
    ids=[
        "text",
        "empty",
        "truncated-header",
        "not-wave",
        "no-data-chunk",
        "float",
        "adpcm",
        "alaw",
        "extensible",
        "zero-length",
        "partial-sample",
        "cut-short",
        "40-bit",
        "zero-rate",
        "zero-channels",
        "header-claims-700-s",
    ],
)
def test_bad_wav_files(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "bad input.wav"
    path.write_bytes(content)
    assert_wav_error(path, problem)


def test_wav_with_a_cut_short_data_chunk_keeps_what_is_there(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    path.write_bytes(riff(data=samples_to_pcm([1000] * 500), data_size=4000))
    source = WavSource.open(path)
    assert samples_of(read(source, 1)) == [1000] * 500 + [0] * 460
    assert source.read_frame() is None


def test_missing_wav_file(tmp_path: Path) -> None:
    assert_wav_error(tmp_path / "nowhere.wav", "no such file")


def test_directory_instead_of_wav_file(tmp_path: Path) -> None:
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    assert_wav_error(folder, "directory")


def test_wav_too_long(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "second.wav", 8000, 1, [[0.0] * 8000])
    assert_wav_error(path, "too long", max_seconds=0.5)
    assert WavSource.open(path, max_seconds=1.0).frame_count == 50


def test_wav_source_errors_are_value_errors() -> None:
    assert issubclass(AudioSourceError, ValueError)


# -- specs --------------------------------------------------------------------------


def test_spec_synthetic() -> None:
    source = source_from_spec("synthetic", seed=3, frame_samples=480)
    assert isinstance(source, SyntheticSpeech)
    assert read(source, 50) == read(SyntheticSpeech(3, frame_samples=480), 50)


def test_spec_tone() -> None:
    plain = source_from_spec(" tone ", seed=0)
    assert isinstance(plain, ToneSource)
    assert plain.frequency_hz == 440.0
    assert plain.frame_samples == N
    pitched = source_from_spec("tone:1000", seed=0, frame_samples=240)
    assert isinstance(pitched, ToneSource)
    assert pitched.frequency_hz == 1000.0
    assert len(read(pitched, 1)[0]) == 480


def test_spec_silence() -> None:
    source = source_from_spec("silence", seed=0, frame_samples=100)
    assert read(source, 1) == [bytes(200)]


def test_spec_wav_resolves_relative_paths_and_loops(tmp_path: Path) -> None:
    write_wav(tmp_path / "voice.wav", RATE, 2, [sine(200.0, RATE, 960)])
    looped = source_from_spec("wav:voice.wav", seed=0, base_dir=tmp_path)
    assert isinstance(looped, WavSource)
    assert len(read(looped, 5)) == 5
    once = source_from_spec("wav:voice.wav", seed=0, base_dir=tmp_path, loop=False)
    assert once.read_frame() is not None
    assert once.read_frame() is None
    absolute = source_from_spec(f"wav:{tmp_path / 'voice.wav'}", seed=0, base_dir=Path("/x"))
    assert isinstance(absolute, WavSource)


def test_spec_wav_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(AudioSourceError, match=r"missing\.wav: no such file"):
        source_from_spec("wav:missing.wav", seed=0, base_dir=tmp_path)


@pytest.mark.parametrize(
    "spec", ["", "noise", "synthetic:3", "Tone", "tone:", "wav:", "silence:1", "wav"]
)
def test_spec_garbage_lists_the_accepted_forms(spec: str) -> None:
    with pytest.raises(AudioSourceError) as caught:
        source_from_spec(spec, seed=0)
    assert all(form in str(caught.value) for form in SPEC_FORMS)


@pytest.mark.parametrize("spec", ["tone:abc", "tone:0", "tone:nan", "tone:30000"])
def test_spec_bad_tone_frequency(spec: str) -> None:
    with pytest.raises(AudioSourceError, match="frequency"):
        source_from_spec(spec, seed=0)
