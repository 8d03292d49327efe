"""Checks of what a listener heard against what was said, shared by the process tests."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np


def read_wav(path: Path) -> tuple[int, np.ndarray[Any, np.dtype[np.float64]]]:
    """The sample rate and the samples of a 16-bit mono WAV file."""
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return rate, samples.astype(np.float64)


def aligned_correlation(source: Path, heard: Path, start: float, seconds: float) -> float:
    """Normalized cross-correlation of ``seconds`` of ``heard`` (from ``start``) with the
    source looped twice, at the lag where they match best."""
    rate, raw = read_wav(source)
    heard_rate, received = read_wav(heard)
    assert heard_rate == 48_000
    upsampled = np.interp(np.arange(len(raw) * 48_000 // rate) * rate / 48_000,
                          np.arange(len(raw)), raw)  # fmt: skip
    segment = received[int(start * 48_000) : int((start + seconds) * 48_000)]
    assert len(segment) == int(seconds * 48_000), "the listener's file is too short"
    looped = np.concatenate([upsampled, upsampled])
    lag = int(np.argmax(_valid_correlation(looped, segment)))
    reference = looped[lag : lag + len(segment)]
    return float(np.dot(reference, segment) / np.sqrt(np.dot(reference, reference)
                                                       * np.dot(segment, segment)))  # fmt: skip


def _valid_correlation(
    signal: np.ndarray[Any, np.dtype[np.float64]], kernel: np.ndarray[Any, np.dtype[np.float64]]
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """``np.correlate(signal, kernel, mode="valid")``, computed by FFT: the direct sum
    takes seconds for a few seconds of 48 kHz audio against a looped source."""
    size = 1 << (len(signal) + len(kernel) - 1).bit_length()
    product = np.fft.rfft(signal, size) * np.conj(np.fft.rfft(kernel, size))
    return np.fft.irfft(product, size)[: len(signal) - len(kernel) + 1]


def received_after(report: dict[str, Any], moment: float) -> int:
    """Frames a peer's ``--report`` says it received after ``moment`` (monotonic seconds)."""
    return sum(1 for _, _, at in report["received"] if at > moment)


def tail_correlation(source: Path, heard: Path, seconds: float, margin: float = 0.5) -> float:
    """:func:`aligned_correlation` of the last ``seconds`` of ``heard`` (less ``margin``,
    where the peers were already leaving): the room had formed by then."""
    rate, samples = read_wav(heard)
    start = len(samples) / rate - seconds - margin
    assert start >= 0.5, f"{heard.name}: only {len(samples) / rate:.1f} s recorded"
    return aligned_correlation(source, heard, start, seconds)
