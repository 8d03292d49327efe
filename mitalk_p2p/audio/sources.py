"""Sources of PCM frames for one speaker: synthetic speech, test tones, silence, WAV files.

Every source produces the mixer's and codec's PCM: 16-bit signed little-endian mono
at :data:`SAMPLE_RATE`, exactly ``frame_samples`` samples per :meth:`PcmSource.read_frame`.
Levels are RMS in dBFS as in :mod:`.mixer` (0 dBFS is a full-scale square wave, so a
full-scale sine reads about -3 dBFS).

:class:`SyntheticSpeech` is bit-exact for a given seed on every machine: it draws only
from a seeded :class:`random.Random` and computes with integers and basic float
arithmetic (correctly rounded under IEEE 754), not with ``libm`` functions whose last
bit may differ between platforms.  Its sine table comes from a Taylor polynomial for
that reason, and its one ``libm`` result (the level's dB-to-linear gain) is rounded to
an integer straight away.
"""

from __future__ import annotations

import array
import functools
import itertools
import math
import operator
import random
import re
import wave
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

import attrs

from .mixer import FULL_SCALE, SAMPLE_MAX, pcm_to_samples, samples_to_pcm

SAMPLE_RATE: Final = 48000
"""Samples per second of every source (the codec's and the mixer's default rate)."""

DEFAULT_FRAME_SAMPLES: Final = 960
"""One 20 ms frame at :data:`SAMPLE_RATE`, the codec's default frame."""

WAV_MAX_SECONDS: Final = 600.0
"""The longest WAV file :meth:`WavSource.open` loads (it holds the whole file in memory)."""

SPEC_FORMS: Final = ("synthetic", "silence", "tone", "tone:HZ", "wav:PATH")
"""The forms :func:`source_from_spec` accepts."""


class AudioSourceError(ValueError):
    """An audio source cannot be built: a bad WAV file, spec or parameter."""


@runtime_checkable
class PcmSource(Protocol):
    """Anything that hands out PCM frames of one fixed size, one at a time."""

    @property
    def frame_samples(self) -> int:
        """Samples in every frame :meth:`read_frame` returns."""
        ...

    def read_frame(self) -> bytes | None:
        """The next frame (``2 * frame_samples`` bytes), or ``None`` once a finite
        source has ended."""
        ...


def _positive_int(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AudioSourceError(f"{attribute.name} must be a positive integer, not {value!r}")


def _frame_samples_field() -> Any:
    return attrs.field(default=DEFAULT_FRAME_SAMPLES, validator=_positive_int)


# -- silence and tones --------------------------------------------------------------


@attrs.define
class SilenceSource:
    """Digital silence, forever."""

    frame_samples: int = _frame_samples_field()

    def read_frame(self) -> bytes:
        return bytes(2 * self.frame_samples)


def _sine_amplitude(level_dbfs: float) -> float:
    """Peak amplitude of a sine whose RMS level is ``level_dbfs``."""
    return FULL_SCALE * math.sqrt(2.0) * math.pow(10.0, level_dbfs / 20.0)


def _check_tone_frequency(_instance: object, _attribute: object, value: float) -> None:
    if not 0.0 < value < SAMPLE_RATE / 2:
        raise AudioSourceError(
            f"tone frequency must be above 0 and below {SAMPLE_RATE // 2} Hz, not {value!r}"
        )


def _check_tone_level(_instance: object, _attribute: object, value: float) -> None:
    if not (math.isfinite(value) and value < 0.0 and _sine_amplitude(value) <= SAMPLE_MAX):
        raise AudioSourceError(
            f"tone level must be a finite dBFS value up to about -3.01 "
            f"(a louder sine would clip), not {value!r}"
        )


@attrs.define
class ToneSource:
    """A continuous sine at ``level_dbfs`` RMS, forever."""

    frequency_hz: float = attrs.field(
        default=440.0, converter=float, validator=_check_tone_frequency
    )
    level_dbfs: float = attrs.field(default=-12.0, converter=float, validator=_check_tone_level)
    frame_samples: int = _frame_samples_field()
    _phase: float = attrs.field(default=0.0, init=False)
    """Where the next frame starts, in cycles (0 to 1)."""

    def read_frame(self) -> bytes:
        step = self.frequency_hz / SAMPLE_RATE
        amplitude = _sine_amplitude(self.level_dbfs)
        two_pi = 2.0 * math.pi
        start = self._phase
        samples = [
            round(amplitude * math.sin(two_pi * (start + i * step)))
            for i in range(self.frame_samples)
        ]
        self._phase = (start + self.frame_samples * step) % 1.0
        return samples_to_pcm(samples)


# -- synthetic speech ---------------------------------------------------------------

_TABLE_BITS: Final = 12
_TABLE_SIZE: Final = 1 << _TABLE_BITS
_QUARTER: Final = _TABLE_SIZE // 4

_HARMONICS: Final = (
    (1.0, 0.9, 1.0, 0.7, 0.5, 0.35, 0.25, 0.15),  # open vowel, strong upper harmonics
    (1.0, 0.7, 0.5, 0.4, 0.3, 0.3, 0.25, 0.15),
    (1.0, 0.8, 0.5, 0.25, 0.1, 0.06, 0.04, 0.02),
    (1.0, 0.6, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01),  # closed back vowel, nearly a sine
    (1.0, 0.35, 0.15, 0.1, 0.1, 0.15, 0.2, 0.15),  # front vowel, weak middle, some upper
)
"""Relative amplitudes of harmonics 1..8 for a few vowel-like timbres."""

_NOISE_SAMPLES: Final = 1 << 16
"""Length of each speaker's noise table; far longer than a syllable."""

_BREATH_SCALE: Final = 4
"""Breath noise is the noise table (int8) times this: about 29 dB under a loud voice."""

_HISS_SHIFT: Final = 5
"""Pause noise is the noise table shifted right by this: -4 to 3, about -83 dBFS."""

_GAIN_ONE: Final = 128
"""Per-syllable gain of 1.0 in the fixed-point syllable mix."""

_ENVELOPE_ONE: Final = 32768
"""Envelope value 1.0 in the fixed-point syllable mix."""

_MIX_SHIFT: Final = 22
"""log2(_GAIN_ONE * _ENVELOPE_ONE): scales a syllable's fixed-point products back."""

_DURATION_STEP: Final = SAMPLE_RATE // 100
"""Syllables and gaps last whole 10 ms steps, so few distinct envelopes exist."""


def _sin_quarter(x: float) -> float:
    """sin(x) for 0 <= x <= pi/2 from its Taylor series, with basic arithmetic only."""
    term = x
    total = x
    square = x * x
    for n in range(1, 13):
        term = -term * square / ((2 * n) * (2 * n + 1))
        total += term
    return total


@functools.cache
def _sine_table() -> tuple[float, ...]:
    """One cycle of sin() in :data:`_TABLE_SIZE` steps."""
    quarter = [_sin_quarter(math.pi / 2 * i / _QUARTER) for i in range(_QUARTER + 1)]
    rising = quarter + quarter[-2:0:-1]
    return tuple(rising + [-v for v in rising])


@functools.cache
def _wavetable(vowel: int) -> tuple[float, ...]:
    """One cycle of a vowel's harmonic mix, normalised to an RMS of 1."""
    sine = _sine_table()
    weights = _HARMONICS[vowel]
    count = len(weights)
    mask = _TABLE_SIZE - 1
    # Schroeder phases keep the crest factor of the harmonic sum low.
    phases = [(k * (k - 1) * (_TABLE_SIZE // 2) // count) & mask for k in range(1, count + 1)]
    cycle = [
        sum(
            weight * sine[(k * i + phase) & mask]
            for k, weight, phase in zip(range(1, count + 1), weights, phases, strict=True)
        )
        for i in range(_TABLE_SIZE)
    ]
    rms = math.sqrt(sum(v * v for v in cycle) / _TABLE_SIZE)
    return tuple(v / rms for v in cycle)


@functools.lru_cache(maxsize=2048)
def _pitch_period(vowel: int, period: int, rms: int) -> array.array[int]:
    """One pitch period of ``period`` samples at RMS ``rms``, clamped so that breath noise
    added on top still fits 16 bits."""
    table = _wavetable(vowel)
    limit = SAMPLE_MAX - 128 * _BREATH_SCALE
    values = (round(table[(i << _TABLE_BITS) // period] * rms) for i in range(period))
    return array.array("h", [max(-limit, min(limit, v)) for v in values])


@functools.cache
def _envelope(length: int) -> array.array[int]:
    """A syllable's amplitude envelope: a raised-cosine rise over the first quarter, a
    flat top, and a raised-cosine fall over the last 35%.  Fixed point, 1.0 is
    :data:`_ENVELOPE_ONE`."""
    sine = _sine_table()
    rise = length // 4
    fall = length * 35 // 100
    top = length - rise - fall

    def ramp(n: int) -> list[int]:
        return [round(_ENVELOPE_ONE * sine[i * _QUARTER // n] ** 2) for i in range(n)]

    up = ramp(rise)
    return array.array("i", up + [_ENVELOPE_ONE] * top + ramp(fall)[::-1])


def _uniform(rng: random.Random, low: float, high: float) -> float:
    return low + (high - low) * rng.random()


def _steps(rng: random.Random, low: int, high: int) -> int:
    """A duration of ``low`` to ``high`` (inclusive) 10 ms steps, in samples."""
    return _DURATION_STEP * (low + int(rng.random() * (high - low + 1)))


def _cyclic_slice(table: bytes, start: int, length: int) -> bytes:
    """``length`` bytes of ``table`` from ``start``, wrapping around its end."""
    out = bytearray()
    while length:
        start %= len(table)
        piece = table[start : start + length]
        out += piece
        start += len(piece)
        length -= len(piece)
    return bytes(out)


def _check_level(_instance: object, _attribute: object, value: float) -> None:
    if not math.isfinite(value) or not -60.0 <= value <= -6.0:
        raise AudioSourceError(f"speech level must be from -60 to -6 dBFS, not {value!r}")


def _check_pitch(_instance: object, _attribute: object, value: float | None) -> None:
    if value is not None and not 60.0 <= value <= 400.0:
        raise AudioSourceError(f"speech pitch must be from 60 to 400 Hz, not {value!r}")


def _optional_float(value: float | None) -> float | None:
    return None if value is None else float(value)


@attrs.define
class SyntheticSpeech:
    """An endless, deterministic speech-like signal for one simulated speaker.

    Talk spurts of 0.5-3 s alternate with pauses of 0.2-1.5 s that hold only a faint
    hiss (about -83 dBFS), quiet enough for Opus DTX.  A spurt is a run of syllables
    (120-220 ms each with 10-50 ms gaps, about 5 per second), each a vowel-like mix of
    8 harmonics of a fundamental that glides between syllables and falls across the
    spurt, plus a little breath noise, shaped by a rise-hold-fall envelope.  The loudest
    syllables' frames read about ``level_dbfs``; the others are up to 6 dB quieter.

    The same ``seed`` gives the same bytes on every machine.  Synthesis is cheap: pitch
    periods are cached per (vowel, length), so each sample costs a few integer operations.
    """

    seed: int = attrs.field(validator=attrs.validators.instance_of(int))
    frame_samples: int = _frame_samples_field()
    level_dbfs: float = attrs.field(default=-12.0, converter=float, validator=_check_level)
    pitch_hz: float | None = attrs.field(
        default=None, converter=_optional_float, validator=_check_pitch
    )
    """The speaker's typical fundamental; ``None`` picks one from 100-220 Hz by seed."""

    _pending: bytearray = attrs.field(factory=bytearray, init=False, repr=False)
    _chunks: Iterator[bytes] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._chunks = self._speech()

    def read_frame(self) -> bytes:
        size = 2 * self.frame_samples
        while len(self._pending) < size:
            self._pending += next(self._chunks)
        frame = bytes(self._pending[:size])
        del self._pending[:size]
        return frame

    def _speech(self) -> Iterator[bytes]:
        """PCM chunks, alternately a talk spurt's syllables and gaps, and a pause."""
        rng = random.Random(self.seed)
        noise = array.array("b", rng.randbytes(_NOISE_SAMPLES))
        breath = array.array("h", [n * _BREATH_SCALE for n in noise])
        hiss = samples_to_pcm(array.array("h", [n >> _HISS_SHIFT for n in noise]))
        base_hz = self.pitch_hz if self.pitch_hz is not None else _uniform(rng, 100.0, 220.0)
        rms = round(FULL_SCALE * math.pow(10.0, self.level_dbfs / 20.0))
        while True:
            spurt = round(_uniform(rng, 0.5, 3.0) * SAMPLE_RATE)
            done = 0
            pitch = base_hz * 1.08
            while done < spurt:
                length = _steps(rng, 12, 22)
                declination = 1.08 - 0.16 * done / spurt
                target = base_hz * declination * _uniform(rng, 0.92, 1.12)
                yield self._syllable(rng, breath, rms, length, pitch, target)
                pitch = target
                gap = _steps(rng, 1, 5)
                yield _cyclic_slice(hiss, 2 * int(rng.random() * _NOISE_SAMPLES), 2 * gap)
                done += length + gap
            pause = round(_uniform(rng, 0.2, 1.5) * SAMPLE_RATE)
            yield _cyclic_slice(hiss, 2 * int(rng.random() * _NOISE_SAMPLES), 2 * pause)

    @staticmethod
    def _syllable(
        rng: random.Random,
        breath: array.array[int],
        rms: int,
        length: int,
        start_hz: float,
        end_hz: float,
    ) -> bytes:
        """One syllable of ``length`` samples whose pitch glides from start to end."""
        vowel = int(rng.random() * len(_HARMONICS))
        gain = round(_GAIN_ONE * _uniform(rng, 0.5, 1.0))
        voice = array.array("h")
        while len(voice) < length:
            hz = start_hz + (end_hz - start_hz) * len(voice) / length
            voice += _pitch_period(vowel, round(SAMPLE_RATE / hz), rms)
        offset = int(rng.random() * (_NOISE_SAMPLES - length))
        noise = breath[offset : offset + length]
        envelope = _envelope(length)
        samples = array.array(
            "h",
            [
                ((v + n) * e * gain) >> _MIX_SHIFT
                for v, n, e in zip(voice, noise, envelope, strict=False)
            ],
        )
        return samples_to_pcm(samples)


# -- WAV files ----------------------------------------------------------------------

_FORMAT_TAGS: Final = {
    2: "Microsoft ADPCM",
    3: "IEEE float",
    6: "A-law",
    7: "mu-law",
    0x11: "IMA ADPCM",
    0x31: "GSM 6.10",
    0x55: "MP3",
    0xFFFE: "WAVE_FORMAT_EXTENSIBLE",
}
"""Names of common WAV format tags that are not plain integer PCM."""


def _wav_error(path: Path, problem: str) -> AudioSourceError:
    return AudioSourceError(f"{path}: {problem}")


def _describe_wave_error(exc: wave.Error) -> str:
    """The problem a ``wave.Error`` stands for, as one line."""
    text = str(exc)
    tag = re.fullmatch(r"unknown format: (\d+)", text)
    if tag:
        number = int(tag.group(1))
        name = _FORMAT_TAGS.get(number, "unknown")
        return (
            f"unsupported sample format {name} (format tag {number}); "
            "only plain integer PCM WAV files are supported"
        )
    if text.startswith("unknown extended format"):
        return (
            "unsupported extensible sample format; only plain integer PCM WAV files are supported"
        )
    return f"not a valid WAV file ({text})"


@attrs.frozen
class _WavData:
    """The raw contents of a PCM WAV file."""

    frames: bytes
    channels: int
    sample_width: int
    rate: int


def _read_wav(path: Path, max_seconds: float) -> _WavData:
    """Header and sample bytes of the WAV file at ``path``, after checking its format."""
    try:
        with path.open("rb") as file, wave.open(file, "rb") as reader:
            channels = reader.getnchannels()
            width = reader.getsampwidth()
            rate = reader.getframerate()
            count = reader.getnframes()
            _check_format(path, width, rate, count, max_seconds)
            frames = reader.readframes(count)
    except FileNotFoundError:
        raise _wav_error(path, "no such file") from None
    except IsADirectoryError:
        raise _wav_error(path, "is a directory, not a WAV file") from None
    except OSError as exc:
        raise _wav_error(path, f"cannot read the file ({exc.strerror or exc})") from exc
    except EOFError:
        raise _wav_error(
            path, "not a valid WAV file (the header is truncated or missing)"
        ) from None
    except wave.Error as exc:
        raise _wav_error(path, _describe_wave_error(exc)) from exc
    except RuntimeError:  # the wave module's chunk reader, on a chunk that overruns its parent
        raise _wav_error(
            path, "not a valid WAV file (a chunk's size runs past the end of its container)"
        ) from None
    whole = len(frames) - len(frames) % (channels * width)
    if whole == 0:
        raise _wav_error(path, "contains no audio (the data chunk holds no complete sample frame)")
    return _WavData(frames[:whole], channels, width, rate)


def _resampled_length(count: int, rate: int) -> int:
    """How many :data:`SAMPLE_RATE` samples ``count`` samples at ``rate`` become."""
    return -(-count * SAMPLE_RATE // rate)


def _check_format(path: Path, width: int, rate: int, count: int, max_seconds: float) -> None:
    """Reject what :func:`_read_wav` cannot load (the wave module itself rejects zero
    channels and non-PCM formats)."""
    if width not in (1, 2, 3, 4):
        raise _wav_error(path, f"unsupported sample width of {8 * width} bits (8 to 32 only)")
    if rate <= 0:
        raise _wav_error(path, f"invalid sample rate of {rate} Hz")
    if count == 0:
        raise _wav_error(path, "contains no audio (zero samples)")
    if _resampled_length(count, rate) > max_seconds * SAMPLE_RATE:
        raise _wav_error(
            path, f"too long: {count / rate:.1f} s of audio, the limit is {max_seconds:g} s"
        )


def _to_int16_le(frames: bytes, width: int) -> bytes:
    """Interleaved samples of ``width`` bytes as 16-bit little-endian PCM: 8-bit audio is
    unsigned and moves to the high byte; wider audio keeps its two most significant
    bytes (truncating, as a plain bit-depth reduction does)."""
    if width == 2:
        return frames
    out = bytearray(2 * (len(frames) // width))
    if width == 1:
        out[1::2] = frames.translate(bytes((b ^ 0x80) for b in range(256)))
    else:
        out[0::2] = frames[width - 2 :: width]
        out[1::2] = frames[width - 1 :: width]
    return bytes(out)


def _downmix(samples: array.array[int], channels: int) -> array.array[int]:
    """The average of the channels (rounded down) of interleaved samples."""
    if channels == 1:
        return samples
    total: Iterable[int] = samples[0::channels]
    for channel in range(1, channels):
        total = map(operator.add, total, samples[channel::channels])
    return array.array("h", map(operator.floordiv, total, itertools.repeat(channels)))


def _resample_linear(samples: array.array[int], rate: int) -> array.array[int]:
    """``samples`` at ``rate`` as :data:`SAMPLE_RATE` samples, by linear interpolation.

    Positions are exact: with the rate ratio reduced to ``up / down``, output ``j`` lies
    at input ``j * down / up``, so outputs ``phase, phase + up, ...`` share one fraction
    and are computed together from strided slices.  There is no anti-alias filter, so
    downsampling folds content above 24 kHz back: acceptable for speech and test
    material, not for high-fidelity music.
    """
    if rate == SAMPLE_RATE:
        return samples
    common = math.gcd(rate, SAMPLE_RATE)
    up, down = SAMPLE_RATE // common, rate // common
    count = _resampled_length(len(samples), rate)
    held = samples + array.array("h", samples[-1:])
    out = array.array("h", bytes(2 * count))
    for phase in range(min(up, count)):
        start, fraction = divmod(phase * down, up)
        lanes = len(range(phase, count, up))
        left = held[start : start + lanes * down : down]
        if fraction:
            right = held[start + 1 : start + 1 + lanes * down : down]
            rise = map(operator.mul, map(operator.sub, right, left), itertools.repeat(fraction))
            steps = map(operator.floordiv, rise, itertools.repeat(up))
            left = array.array("h", map(operator.add, left, steps))
        out[phase::up] = left
    return out


@attrs.define
class WavSource:
    """A WAV file's audio as mono 48 kHz frames; the last frame is zero-padded.

    Without ``loop`` :meth:`read_frame` returns ``None`` after the last frame; with it,
    the next frame starts over from the beginning.  Build it with :meth:`open`.
    """

    path: Path
    pcm: bytes = attrs.field(repr=False)
    """The whole file as 16-bit little-endian mono PCM."""
    frame_samples: int = _frame_samples_field()
    loop: bool = False
    _position: int = attrs.field(default=0, init=False)

    @classmethod
    def open(
        cls,
        path: str | Path,
        frame_samples: int = DEFAULT_FRAME_SAMPLES,
        loop: bool = False,
        *,
        max_seconds: float = WAV_MAX_SECONDS,
    ) -> WavSource:
        """Load an integer PCM WAV file (8, 16, 24 or 32 bits, any channel count and
        rate): channels are averaged, samples cut to 16 bits and resampled linearly to
        :data:`SAMPLE_RATE`.  Raises :class:`AudioSourceError` for anything unusable."""
        path = Path(path)
        _positive_int(None, attrs.fields(cls).frame_samples, frame_samples)
        data = _read_wav(path, max_seconds)
        samples = pcm_to_samples(_to_int16_le(data.frames, data.sample_width))
        mono = _resample_linear(_downmix(samples, data.channels), data.rate)
        return cls(path, samples_to_pcm(mono), frame_samples, loop)

    @property
    def frame_count(self) -> int:
        """Frames in one pass over the file, counting the padded last one."""
        return -(-len(self.pcm) // (2 * self.frame_samples))

    @property
    def duration_seconds(self) -> float:
        """Length of one pass over the file, without padding."""
        return len(self.pcm) / (2 * SAMPLE_RATE)

    def read_frame(self) -> bytes | None:
        if self._position >= len(self.pcm):
            if not self.loop:
                return None
            self._position = 0
        size = 2 * self.frame_samples
        frame = self.pcm[self._position : self._position + size]
        self._position += size
        return frame.ljust(size, b"\0")


# -- specs --------------------------------------------------------------------------


def source_from_spec(
    spec: str,
    *,
    seed: int,
    frame_samples: int = DEFAULT_FRAME_SAMPLES,
    base_dir: Path | None = None,
    loop: bool = True,
) -> PcmSource:
    """The source a short text spec names, as written in scenario files and on the
    command line: ``synthetic`` (:class:`SyntheticSpeech` with ``seed``), ``silence``,
    ``tone`` or ``tone:HZ``, or ``wav:PATH`` (relative to ``base_dir`` when given;
    looped unless ``loop`` is false)."""
    text = spec.strip()
    kind, colon, argument = text.partition(":")
    if text == "synthetic":
        return SyntheticSpeech(seed, frame_samples=frame_samples)
    if text == "silence":
        return SilenceSource(frame_samples=frame_samples)
    if kind == "tone" and (not colon or argument):
        hz = _parse_hz(spec, argument) if colon else 440.0
        return ToneSource(frequency_hz=hz, frame_samples=frame_samples)
    if kind == "wav" and argument:
        path = Path(argument)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        return WavSource.open(path, frame_samples, loop)
    raise AudioSourceError(
        f"unknown audio source {spec!r}; expected one of: {', '.join(SPEC_FORMS)}"
    )


def _parse_hz(spec: str, text: str) -> float:
    try:
        hz = float(text)
    except ValueError:
        raise AudioSourceError(
            f"audio source {spec!r}: the tone frequency must be a number of Hz, not {text!r}"
        ) from None
    return hz
