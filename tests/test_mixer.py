"""Mixing without clipping, levels in dBFS, and the speaking detector's hysteresis."""

from __future__ import annotations

import array
import itertools
import math
import random
import time

import pytest

from mitalk_p2p.audio.mixer import (
    SAMPLE_MAX,
    SILENCE_DBFS,
    Mixer,
    MixerConfig,
    SpeakingConfig,
    SpeakingDetector,
    SpeakingTracker,
    levels_dbfs,
    pcm_to_samples,
    rms_dbfs,
    samples_to_pcm,
)
from mitalk_p2p.core.errors import LocalProtocolError

RATE = 48000
N = 960  # 20 ms


def tone(freq: float, amplitude: float, frame: int = 0, n: int = N) -> bytes:
    """Frame number ``frame`` of a continuous sine."""
    start = frame * n
    w = 2 * math.pi * freq / RATE
    return samples_to_pcm([round(amplitude * math.sin(w * (start + i))) for i in range(n)])


def reference_sum(frames: list[bytes]) -> list[int]:
    return [sum(column) for column in zip(*(pcm_to_samples(f) for f in frames), strict=True)]


# -- mixing -------------------------------------------------------------------------


def test_quiet_signals_mix_to_the_exact_sum() -> None:
    mixer = Mixer()
    for index in range(5):
        frames = [tone(220, 9000, index), tone(330, 8000, index), tone(587, 7000, index)]
        assert list(pcm_to_samples(mixer.mix(frames))) == reference_sum(frames)
    assert mixer.gain == 1.0


def test_single_speaker_and_silence_pass_through() -> None:
    mixer = Mixer()
    frame = tone(440, 32767)
    assert mixer.mix([frame]) == frame
    extreme = samples_to_pcm([-32768, 32767] * (N // 2))
    assert mixer.mix([extreme]) == extreme
    assert mixer.mix([]) == bytes(2 * N)


def test_a_sum_that_just_fits_is_not_touched() -> None:
    a = samples_to_pcm([20000, -20000] * (N // 2))
    b = samples_to_pcm([12767, -12767] * (N // 2))
    assert pcm_to_samples(Mixer().mix([a, b])).tolist() == [32767, -32767] * (N // 2)


def test_loud_signals_never_clip_or_wrap() -> None:
    mixer = Mixer()
    worst = 0
    for index in range(50):
        frames = [tone(200, 30000, index), tone(300, 28000, index), tone(450, 25000, index)]
        if index % 10 == 9:
            frames = [tone(200, 500, index)]  # a quiet gap: the gain recovers, then dips again
        expected = reference_sum(frames)
        mixed = pcm_to_samples(mixer.mix(frames)).tolist()
        assert max(map(abs, mixed)) <= SAMPLE_MAX
        for want, got in zip(expected, mixed, strict=True):
            # Scaled down, never flipped in sign, never louder than the true sum.
            assert abs(got) <= abs(want)
            assert got == 0 or (got > 0) == (want > 0)
        worst = max(worst, max(map(abs, expected)))
    assert worst > 2 * SAMPLE_MAX  # the sums really did overflow int16


def test_random_loud_mixes_stay_in_range() -> None:
    """Noise bursts of random loudness and speaker count, peaks anywhere in a frame."""
    rng = random.Random(7)
    mixer = Mixer(MixerConfig(attack_ms=2.0, release_ms=30.0, hold_ms=0.0))
    for _ in range(100):
        frames = []
        for _ in range(rng.randrange(0, 5)):
            amplitude = rng.choice((300, 8000, 32767))
            frames.append(samples_to_pcm([rng.randint(-amplitude, amplitude) for _ in range(N)]))
        expected = reference_sum(frames) if frames else [0] * N
        mixed = pcm_to_samples(mixer.mix(frames)).tolist()
        for want, got in zip(expected, mixed, strict=True):
            assert abs(got) <= abs(want)
            assert -SAMPLE_MAX - 1 <= got <= SAMPLE_MAX
            assert got == 0 or (got > 0) == (want > 0)


def test_limiter_keeps_the_loud_mix_loud_and_smooth() -> None:
    mixer = Mixer()
    out: list[int] = []
    for index in range(10):
        frames = [tone(200, 30000, index), tone(200, 30000, index)]  # in phase: 60000 peak
        out.extend(pcm_to_samples(mixer.mix(frames)))
    settled = out[5 * N :]
    # Once settled the gain is about 1/2: close to full scale, yet inside it.
    assert 0.95 * SAMPLE_MAX < max(settled) <= SAMPLE_MAX
    assert mixer.gain == pytest.approx(SAMPLE_MAX / 60000, rel=1e-3)
    # A smooth gain leaves the sine a sine: no sample-to-sample jumps beyond its slope.
    max_step = 2 * math.pi * 200 / RATE * SAMPLE_MAX
    assert max(abs(b - a) for a, b in itertools.pairwise(settled)) < 1.05 * max_step


def test_gain_recovers_after_the_loud_part() -> None:
    mixer = Mixer(MixerConfig(release_ms=50.0))
    mixer.mix([tone(200, 30000), tone(200, 30000)])
    assert mixer.gain < 0.6
    gains = []
    for index in range(1, 30):
        quiet = [tone(200, 1000, index), tone(300, 1000, index)]
        mixer.mix(quiet)
        gains.append(mixer.gain)
    assert gains == sorted(gains)  # monotonic recovery
    assert mixer.gain == 1.0
    frames = [tone(200, 1000, 40), tone(300, 1000, 40)]
    assert pcm_to_samples(mixer.mix(frames)).tolist() == reference_sum(frames)


def test_a_sudden_peak_is_absorbed_within_the_frame() -> None:
    quiet = [0] * N
    burst = [0] * N
    burst[N // 2 : N // 2 + 10] = [30000] * 10
    mixer = Mixer()
    mixer.mix([samples_to_pcm(quiet)])
    out = pcm_to_samples(mixer.mix([samples_to_pcm(burst), samples_to_pcm(burst)])).tolist()
    assert max(out) <= SAMPLE_MAX
    assert max(out) > 0.99 * SAMPLE_MAX  # only as much reduction as the peak needs


def test_mix_refuses_frames_of_the_wrong_length() -> None:
    mixer = Mixer()
    with pytest.raises(LocalProtocolError, match="every frame must be 1920 bytes"):
        mixer.mix([tone(440, 1000), bytes(1918)])
    with pytest.raises(LocalProtocolError, match="sample_rate must be a multiple of 1000"):
        MixerConfig(sample_rate=44100)
    with pytest.raises(LocalProtocolError, match="attack_ms must be positive"):
        MixerConfig(attack_ms=0)


def test_mixing_is_fast() -> None:
    mixer = Mixer()
    quiet = [tone(200, 5000), tone(300, 5000), tone(450, 5000)]
    loud = [tone(200, 30000), tone(300, 30000), tone(450, 30000)]
    for frames in (quiet, loud):
        best = math.inf
        for _ in range(20):
            start = time.perf_counter()
            mixer.mix(frames)
            best = min(best, time.perf_counter() - start)
        assert best < 1e-3, best  # typically 0.1 to 0.2 ms


# -- levels -------------------------------------------------------------------------


def test_levels_of_known_signals() -> None:
    assert rms_dbfs(tone(1000, 32767)) == pytest.approx(-3.01, abs=0.02)
    assert rms_dbfs(tone(1000, 3277)) == pytest.approx(-23.01, abs=0.02)
    assert rms_dbfs(samples_to_pcm([-32768] * N)) == pytest.approx(0.0)
    assert rms_dbfs(bytes(2 * N)) == SILENCE_DBFS
    assert rms_dbfs(b"") == SILENCE_DBFS
    assert levels_dbfs({"ann": tone(500, 32767), "bob": bytes(2 * N)}) == {
        "ann": pytest.approx(-3.01, abs=0.02),
        "bob": SILENCE_DBFS,
    }


def test_pcm_is_little_endian() -> None:
    assert samples_to_pcm([1, -2]) == b"\x01\x00\xfe\xff"
    assert pcm_to_samples(b"\x01\x00\xfe\xff").tolist() == [1, -2]
    with pytest.raises(LocalProtocolError, match="even number of bytes"):
        pcm_to_samples(b"\x00")
    assert isinstance(pcm_to_samples(b""), array.array)


# -- who is speaking ----------------------------------------------------------------

LOUD, MID, QUIET = -20.0, -48.0, -70.0  # threshold -45, quiet below -51


def feed(detector: SpeakingDetector, levels: list[float]) -> list[bool]:
    return [detector.update(level, 20.0) for level in levels]


def test_speaking_starts_only_after_the_onset_time() -> None:
    detector = SpeakingDetector(SpeakingConfig(onset_ms=60.0))
    assert feed(detector, [LOUD, LOUD, QUIET, LOUD, LOUD]) == [False] * 5  # a click or two
    assert feed(detector, [LOUD]) == [True]


def test_speaking_survives_pauses_shorter_than_the_hangover() -> None:
    detector = SpeakingDetector(SpeakingConfig(onset_ms=0.0, hangover_ms=200.0))
    assert feed(detector, [LOUD]) == [True]
    assert all(feed(detector, [QUIET] * 9 + [LOUD] + [QUIET] * 9))  # 180 ms gaps
    assert feed(detector, [QUIET]) == [False]  # the 10th quiet frame makes 200 ms


def test_levels_between_the_thresholds_neither_start_nor_stop_speech() -> None:
    detector = SpeakingDetector(SpeakingConfig(onset_ms=0.0, hangover_ms=100.0))
    assert not any(feed(detector, [MID] * 20))  # below the threshold: never starts
    assert feed(detector, [LOUD]) == [True]
    assert all(feed(detector, [MID] * 20))  # above the quiet level: never stops
    assert feed(detector, [QUIET] * 5) == [True] * 4 + [False]


def test_tracker_reports_changes_and_treats_absence_as_silence() -> None:
    tracker: SpeakingTracker[str] = SpeakingTracker(SpeakingConfig(onset_ms=40.0, hangover_ms=60.0))
    assert not tracker.update({"ann": LOUD, "bob": QUIET}, 20.0)
    change = tracker.update({"ann": LOUD, "bob": LOUD}, 20.0)
    assert change.started == {"ann"} and not change.stopped
    change = tracker.update({"bob": LOUD}, 20.0)  # ann sent nothing (DTX)
    assert change.started == {"bob"}
    assert tracker.speaking == {"ann", "bob"}
    tracker.update({"bob": LOUD}, 20.0)
    change = tracker.update({"bob": LOUD}, 20.0)
    assert change.stopped == {"ann"}
    assert tracker.speaking == {"bob"}
    tracker.forget("bob")
    assert tracker.speaking == frozenset()
