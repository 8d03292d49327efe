"""The Opus wrapper, against the real libopus: quality, bitrate, DTX, PLC, FEC, errors."""

from __future__ import annotations

import array
import functools
import math
import operator
import random
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from mitalk_p2p.codec import (
    CodecConfig,
    CodecError,
    CodecUnavailable,
    OpusDecoder,
    OpusEncoder,
    is_dtx,
    libopus_version,
)
from mitalk_p2p.core.errors import LocalProtocolError, MitalkError, RemoteProtocolError

RATE = 48000
HARMONICS = ((1, 1.0), (2, 0.6), (3, 0.45), (4, 0.3), (5, 0.2), (7, 0.1))
PITCHES = (120, 160, 135, 180, 110, 150, 125, 170, 140, 115)


@functools.cache
def speech(seconds: float = 2.0) -> array.array[int]:
    """A voiced, speech-like test signal.

    200 ms "syllables", each with its own pitch (plus slow vibrato), a few
    harmonics and a rise-and-fall envelope; one syllable in ten is a pause.
    """
    out = array.array("h")
    phase = 0.0
    for i in range(int(seconds * RATE)):
        t = i / RATE
        syllable = int(t * 5)
        f0 = PITCHES[syllable % 10] * (1 + 0.1 * math.sin(2 * math.pi * 2 * t))
        phase += 2 * math.pi * f0 / RATE
        envelope = 0.0 if syllable % 10 == 7 else math.sin(math.pi * ((t * 5) % 1.0)) ** 2
        value = sum(a * math.sin(k * phase) for k, a in HARMONICS)
        out.append(int(9000 * envelope * value))
    return out


def frames_of(signal: array.array[int], cfg: CodecConfig) -> list[bytes]:
    n = cfg.samples_per_frame
    data = signal.tobytes()  # the test hosts are little-endian, like the PCM
    return [data[2 * i : 2 * (i + n)] for i in range(0, len(signal) - n + 1, n)]


def dot(a: array.array[int], b: array.array[int]) -> int:
    return sum(map(operator.mul, a, b))


def best_lag(ref: array.array[int], out: array.array[int], around: int) -> int:
    """The delay of ``out`` behind ``ref``, searched near the encoder's look-ahead."""
    window = slice(RATE // 10, RATE // 10 + RATE // 2)
    seg = ref[window]
    return max(
        range(max(0, around - 48), around + 49),
        key=lambda lag: dot(seg, out[window.start + lag : window.stop + lag]),
    )


def squared_error(ref: array.array[int], got: array.array[int], start: int) -> int:
    """Error of ``got`` against ``ref[start:]``, treating the part past ``ref``'s end as 0."""
    end = len(ref)
    return sum((x - (ref[start + i] if start + i < end else 0)) ** 2 for i, x in enumerate(got))


def pcm(frame: bytes) -> array.array[int]:
    return array.array("h", frame)


# -- configuration ------------------------------------------------------------------


def test_defaults_are_voice_settings() -> None:
    cfg = CodecConfig()
    assert (cfg.sample_rate, cfg.channels, cfg.frame_ms) == (48000, 1, 20)
    assert (cfg.bitrate, cfg.complexity, cfg.expected_loss_percent) == (24000, 10, 10)
    assert cfg.vbr and cfg.fec and cfg.dtx
    assert cfg.samples_per_frame == 960
    assert cfg.frame_bytes == 1920
    assert CodecConfig(frame_ms=10, sample_rate=16000).samples_per_frame == 160


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frame_ms": 30}, "frame_ms must be one of 10, 20, 40, not 30"),
        ({"frame_ms": 60}, "frame_ms must be one of 10, 20, 40"),
        ({"sample_rate": 44100}, "sample_rate must be one of 8000, 12000, 16000, 24000, 48000"),
        ({"channels": 3}, "channels must be one of 1, 2"),
        ({"complexity": 11}, "complexity must be an integer from 0 to 10, not 11"),
        ({"complexity": -1}, "complexity must be an integer from 0 to 10"),
        ({"bitrate": 500}, "bitrate must be an integer from 6000 to 510000"),
        ({"expected_loss_percent": 101}, "expected_loss_percent must be an integer from 0 to 100"),
    ],
)
def test_config_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        CodecConfig(**kwargs)


def test_encode_refuses_a_frame_of_the_wrong_length() -> None:
    encoder = OpusEncoder(CodecConfig())
    with pytest.raises(LocalProtocolError, match="1920 bytes of 16-bit PCM, not 1918"):
        encoder.encode(bytes(1918))
    with pytest.raises(LocalProtocolError, match="not 3840"):
        encoder.encode(bytes(3840))


def test_libopus_is_loaded() -> None:
    assert libopus_version().startswith("libopus ")


# -- quality and bitrate ------------------------------------------------------------


@pytest.mark.parametrize("frame_ms", [10, 20, 40])
def test_round_trip_keeps_the_waveform(frame_ms: int) -> None:
    cfg = CodecConfig(frame_ms=frame_ms)
    encoder, decoder = OpusEncoder(cfg), OpusDecoder(cfg)
    ref = speech()
    out = array.array("h")
    for frame in frames_of(ref, cfg):
        decoded = decoder.decode(encoder.encode(frame))
        assert len(decoded) == cfg.frame_bytes
        out.frombytes(decoded)

    lag = best_lag(ref, out, encoder.lookahead)
    assert abs(lag - encoder.lookahead) <= 24  # the delay is the codec's, not a misalignment
    start = RATE // 10  # skip the encoder's start-up
    a = ref[start : len(out) - lag]
    b = out[start + lag :]
    correlation = dot(a, b) / math.sqrt(dot(a, a) * dot(b, b))
    noise = sum((x - y) ** 2 for x, y in zip(a, b, strict=True))
    snr_db = 10 * math.log10(dot(a, a) / noise)
    # Opus shapes its noise for the ear, so waveform SNR is modest; a broken pipeline
    # (wrong byte order, frame slip, garbage) would score near 0 or below.
    assert correlation > 0.8, correlation
    assert snr_db > 3.0, snr_db


@pytest.mark.parametrize("frame_ms", [10, 20, 40])
def test_bitrate_is_roughly_respected(frame_ms: int) -> None:
    def mean_packet_bytes(bitrate: int) -> float:
        cfg = CodecConfig(frame_ms=frame_ms, bitrate=bitrate)
        encoder = OpusEncoder(cfg)
        sizes = [len(encoder.encode(frame)) for frame in frames_of(speech(), cfg)]
        return sum(sizes) / len(sizes)

    target = 24000 / 8 * frame_ms / 1000  # bytes per packet at exactly 24 kbit/s
    at_24k = mean_packet_bytes(24000)
    assert 0.7 * target < at_24k < 1.3 * target, (at_24k, target)
    assert mean_packet_bytes(12000) < 0.7 * at_24k


def test_stereo_frames() -> None:
    cfg = CodecConfig(channels=2)
    assert cfg.frame_bytes == 3840
    encoder, decoder = OpusEncoder(cfg), OpusDecoder(cfg)
    mono = frames_of(speech(), CodecConfig())[3]
    left = array.array("h", mono)
    stereo = array.array("h", [s for pair in zip(left, left, strict=True) for s in pair])
    assert len(decoder.decode(encoder.encode(stereo.tobytes()))) == 3840


# -- DTX ----------------------------------------------------------------------------


@pytest.mark.parametrize("frame_ms", [10, 20, 40])
def test_dtx_sends_almost_nothing_for_digital_silence(frame_ms: int) -> None:
    def silence_packets(dtx: bool) -> list[bytes]:
        cfg = CodecConfig(frame_ms=frame_ms, dtx=dtx)
        encoder = OpusEncoder(cfg)
        for frame in frames_of(speech(), cfg)[: 200 // frame_ms]:  # some voice first
            encoder.encode(frame)
        silence = bytes(cfg.frame_bytes)
        return [encoder.encode(silence) for _ in range(2000 // frame_ms)]

    with_dtx = silence_packets(dtx=True)
    # libopus keeps coding ~10 frames of silence, then sends only a comfort-noise
    # update every 400 ms or so; everything else is a "don't transmit" packet.
    skippable = sum(is_dtx(p) for p in with_dtx)
    assert skippable >= 0.75 * len(with_dtx), [len(p) for p in with_dtx]
    assert not any(is_dtx(p) for p in silence_packets(dtx=False))


def test_is_dtx() -> None:
    assert is_dtx(b"\x08")
    assert is_dtx(b"\x08\x00")
    assert not is_dtx(b"\x08\x00\x00")


# -- loss: PLC and FEC --------------------------------------------------------------


def test_conceal_returns_one_frame() -> None:
    cfg = CodecConfig()
    encoder, decoder = OpusEncoder(cfg), OpusDecoder(cfg)
    assert decoder.conceal() == bytes(cfg.frame_bytes)  # nothing heard yet: silence
    for frame in frames_of(speech(), cfg)[:10]:
        decoder.decode(encoder.encode(frame))
    concealed = decoder.conceal()
    assert len(concealed) == cfg.frame_bytes
    assert any(pcm(concealed))  # extrapolated voice, not silence


@pytest.mark.parametrize(("frame_ms", "vs_original"), [(10, False), (20, True), (40, True)])
def test_fec_rebuilds_a_lost_frame_better_than_plc(frame_ms: int, vs_original: bool) -> None:
    """Every 9th frame is lost.  One decoder conceals each loss, another rebuilds it from
    the FEC data in the following packet, and a third never loses anything."""
    cfg = CodecConfig(frame_ms=frame_ms)
    encoder = OpusEncoder(cfg)
    ref = speech()
    packets = [encoder.encode(frame) for frame in frames_of(ref, cfg)]
    n = cfg.samples_per_frame
    lossless = OpusDecoder(cfg)
    clean_frames = [pcm(lossless.decode(packet)) for packet in packets]
    clean_out = array.array("h", b"".join(f.tobytes() for f in clean_frames))
    lag = best_lag(ref, clean_out, encoder.lookahead)
    plc, fec = OpusDecoder(cfg), OpusDecoder(cfg)

    errors = {"plc": 0, "fec": 0}  # against the original signal
    drift = {"plc": 0, "fec": 0}  # against the lossless decode
    lost = 0
    for index, packet in enumerate(packets[:-1]):
        clean = clean_frames[index]
        if index < 3 or index % 9:
            plc.decode(packet)
            fec.decode(packet)
            continue
        lost += 1
        rebuilt = {"plc": pcm(plc.conceal()), "fec": pcm(fec.recover_from_fec(packets[index + 1]))}
        for name, got in rebuilt.items():
            assert len(got) == n
            # Output sample i of this frame corresponds to input sample index*n + i - lag.
            errors[name] += squared_error(ref, got, index * n - lag)
            drift[name] += sum((a - b) ** 2 for a, b in zip(got, clean, strict=True))

    assert lost >= 5
    assert drift["fec"] < drift["plc"] / (1.5 if frame_ms == 10 else 3), drift
    if vs_original:
        assert errors["fec"] < errors["plc"], errors


# -- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"\xff", "corrupted stream"),  # code 3 (several frames) without its count byte
        (b"\x03", "corrupted stream"),
        (b"\x01\xff\xff\xff", "corrupted stream"),  # code 1 (2 equal frames), odd payload
        (b"\x03\x00", "holds 0 samples"),  # code 3 announcing zero frames
    ],
)
def test_garbage_raises_codec_error(packet: bytes, reason: str) -> None:
    decoder = OpusDecoder(CodecConfig())
    with pytest.raises(CodecError, match=reason):
        decoder.decode(packet)
    with pytest.raises(CodecError, match=reason):
        decoder.recover_from_fec(packet)
    assert issubclass(CodecError, RemoteProtocolError)


def test_empty_packet_is_refused() -> None:
    decoder = OpusDecoder(CodecConfig())
    with pytest.raises(CodecError, match="empty"):
        decoder.decode(b"")
    with pytest.raises(CodecError, match="empty"):
        decoder.recover_from_fec(b"")


def test_packet_of_another_duration_is_refused() -> None:
    ten = CodecConfig(frame_ms=10)
    packet = OpusEncoder(ten).encode(bytes(ten.frame_bytes))
    with pytest.raises(CodecError, match=r"holds 480 samples per channel, expected .* of 960"):
        OpusDecoder(CodecConfig()).decode(packet)
    forty = CodecConfig(frame_ms=40)
    packet = OpusEncoder(forty).encode(bytes(forty.frame_bytes))
    with pytest.raises(CodecError, match="holds 1920 samples"):
        OpusDecoder(CodecConfig()).decode(packet)


def test_random_bytes_decode_or_raise_codec_error_only() -> None:
    rng = random.Random(1234)
    cfg = CodecConfig()
    decoder = OpusDecoder(cfg)
    refused = 0
    for _ in range(400):
        packet = rng.randbytes(rng.randrange(1, 200))
        try:
            assert len(decoder.decode(packet)) == cfg.frame_bytes
        except CodecError:
            refused += 1
    assert refused > 0


# -- libopus missing ----------------------------------------------------------------

_WITHOUT_LIBOPUS = """
import ctypes.util
ctypes.util.find_library = {lookup}
import mitalk_p2p.codec as codec  # must import fine without libopus
try:
    codec.{build}(codec.CodecConfig())
except codec.CodecUnavailable as exc:
    print(exc)
else:
    raise SystemExit("no CodecUnavailable")
"""


@pytest.mark.parametrize(
    "lookup",
    [
        "lambda name: None",  # the library is not installed at all
        "lambda name: '/nonexistent/libopus.so.0'",  # found, but it cannot be loaded
    ],
)
@pytest.mark.parametrize("build", ["OpusEncoder", "OpusDecoder"])
def test_missing_libopus_names_the_package_and_the_fix(lookup: str, build: str) -> None:
    script = _WITHOUT_LIBOPUS.format(lookup=lookup, build=build)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    message = result.stdout
    assert "libopus0" in message
    assert "install it with: sudo apt-get install libopus0 (or run `make install` as root)" in (
        message
    )
    assert issubclass(CodecUnavailable, MitalkError)
