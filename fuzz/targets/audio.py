"""Audio inputs: Opus packets (after decryption), WAV files, and audio source specs."""

from __future__ import annotations

import array
import functools
import io
import math
import wave
from collections.abc import Iterator
from pathlib import Path

from mitalk_p2p.audio.sources import AudioSourceError, WavSource, source_from_spec
from mitalk_p2p.codec import CodecConfig, CodecError, OpusDecoder, OpusEncoder

from . import Target, expect, scratch_dir

CONFIG = CodecConfig()


def check_opus(data: bytes) -> None:
    """A packet from a speaker is decoded to one frame, or refused with a CodecError."""
    decoder = OpusDecoder(CONFIG)  # kept no longer: its destructor fails at interpreter exit
    for run in (decoder.decode, decoder.recover_from_fec):
        try:
            pcm = run(data)
        except CodecError:
            continue
        expect(len(pcm) == CONFIG.frame_bytes, f"a decoded frame of {len(pcm)} bytes")


@functools.cache
def scratch() -> Path:
    return scratch_dir() / "input.wav"


def check_wav(data: bytes) -> None:
    path = scratch()
    path.write_bytes(data)
    try:
        source = WavSource.open(path, max_seconds=5.0)
    except AudioSourceError as error:
        expect("\n" not in str(error), "a WAV error of more than one line")
        return
    expect(source.frame_count >= 1, "a WAV file with no frame was accepted")


def check_spec(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    kind = text.strip().partition(":")[0]
    if kind == "wav":
        return  # names a file; the WAV parser is fuzzed on its own
    try:
        source = source_from_spec(text, seed=1)
    except AudioSourceError as error:
        expect("\n" not in str(error), "a source error of more than one line")
        return
    expect(len(source.read_frame() or b"") > 0, "a source gave no audio")


def _wav_bytes(channels: int, width: int, rate: int, frames: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(bytes((i * 37) % 256 for i in range(frames * channels * width)))
    return out.getvalue()


def seeds() -> Iterator[tuple[str, bytes]]:
    encoder = OpusEncoder(CONFIG)
    samples = CONFIG.frame_bytes // 2
    for frame in range(4):
        tone = array.array("h", (int(8000 * math.sin((frame * samples + i) / 7))
                                 for i in range(samples)))
        yield "opus", encoder.encode(tone.tobytes())
    yield "opus", encoder.encode(bytes(CONFIG.frame_bytes))
    for channels, width, rate in ((1, 2, 48000), (2, 1, 8000), (1, 3, 44100), (2, 4, 16000)):
        yield "wav", _wav_bytes(channels, width, rate, 200)
    for spec in ("synthetic", "silence", "tone", "tone:440", " tone:1000.5 "):
        yield "spec", spec.encode()


TARGET = Target(
    "audio",
    "Opus packets (a speaker's decrypted payload), WAV files and audio source specs",
    (("opus", check_opus), ("wav", check_wav), ("spec", check_spec)),
    seeds,
)
