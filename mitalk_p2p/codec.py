"""Opus encoding and decoding for voice, over ``opuslib`` (ctypes bindings to libopus).

PCM here is always 16-bit signed little-endian, interleaved when stereo, exactly
one frame per call.  ``opuslib`` is imported on first use, so importing this
module never fails: a machine without libopus gets :class:`CodecUnavailable`,
with the install command, when it first builds an encoder or decoder.

Two settings go through ``opuslib.api`` directly because the high-level
``opuslib.Encoder`` (3.0.1) mishandles them: its ``dtx`` setter sends the *get*
request and its ``inband_fec`` setter drops the value.
"""

from __future__ import annotations

import array
import sys
from typing import Any, Final

import attrs

from .core.errors import LocalProtocolError, MitalkError, RemoteProtocolError

FRAME_MS_CHOICES: Final = (10, 20, 40)
SAMPLE_RATES: Final = (8000, 12000, 16000, 24000, 48000)
DTX_MAX_BYTES: Final = 2
"""An encoded packet this short carries no audio: it need not be transmitted (Opus DTX)."""

_MAX_PACKET_BYTES: Final = 4000
"""The output buffer libopus recommends for one packet."""

INSTALL_HINT: Final = (
    "install it with: sudo apt-get install libopus0 (or run `make install` as root)"
)


class CodecUnavailable(MitalkError):
    """libopus could not be loaded, so no audio can be encoded or decoded."""


class CodecError(RemoteProtocolError):
    """An Opus packet from a peer that libopus refuses, or of the wrong duration."""


# -- loading libopus ----------------------------------------------------------------

_opus: Any = None


def _load() -> Any:
    """The ``opuslib`` package, imported once; :class:`CodecUnavailable` if that fails."""
    global _opus
    if _opus is None:
        try:
            import opuslib
            import opuslib.api.ctl
            import opuslib.api.decoder
            import opuslib.api.encoder
            import opuslib.api.info
        except Exception as exc:  # opuslib raises a bare Exception when libopus is missing
            raise CodecUnavailable(
                f"the Opus library (Debian package libopus0) could not be loaded ({exc}); "
                + INSTALL_HINT
            ) from exc
        _opus = opuslib
    return _opus


def libopus_version() -> str:
    """The loaded libopus version string, e.g. ``"libopus 1.3.1"``."""
    raw = _load().api.info.get_version_string()
    return raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)


def _describe(exc: Exception) -> str:
    """A readable reason for an ``opuslib.OpusError``, whose ``str()`` is a bytes repr."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        raw = _load().api.info.strerror(code)
        text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
        return f"{text} (libopus error {code})"
    return str(code if code is not None else exc)


# -- configuration ------------------------------------------------------------------


def _one_of(choices: tuple[int, ...]) -> Any:
    def check(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or value not in choices:
            allowed = ", ".join(str(c) for c in choices)
            raise LocalProtocolError(f"{attribute.name} must be one of {allowed}, not {value!r}")

    return check


def _in_range(low: int, high: int) -> Any:
    def check(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise LocalProtocolError(
                f"{attribute.name} must be an integer from {low} to {high}, not {value!r}"
            )

    return check


@attrs.frozen(kw_only=True)
class CodecConfig:
    """How voice is encoded; a sender and its listeners must agree on rate and frame size."""

    sample_rate: int = attrs.field(default=48000, validator=_one_of(SAMPLE_RATES))
    """PCM samples per second per channel (Opus always codes at 48 kHz internally)."""

    channels: int = attrs.field(default=1, validator=_one_of((1, 2)))
    """1 for mono (voice); 2 for interleaved stereo."""

    frame_ms: int = attrs.field(default=20, validator=_one_of(FRAME_MS_CHOICES))
    """Duration of one packet.  Shorter lowers latency, longer lowers packet overhead."""

    bitrate: int = attrs.field(default=24000, validator=_in_range(6000, 510000))
    """Target bits per second; with VBR this is an average, not a cap."""

    complexity: int = attrs.field(default=10, validator=_in_range(0, 10))
    """Encoder CPU effort, 0 to 10; higher gives better quality at the same bitrate."""

    vbr: bool = True
    """Variable bitrate: easy frames spend fewer bytes."""

    fec: bool = True
    """In-band forward error correction: each packet carries a coarse copy of the previous
    frame, which a listener decodes when that frame was lost."""

    dtx: bool = True
    """Discontinuous transmission: during silence the encoder emits packets of at most
    :data:`DTX_MAX_BYTES` bytes that the sender need not transmit."""

    expected_loss_percent: int = attrs.field(default=10, validator=_in_range(0, 100))
    """Packet loss the encoder plans for.  At 0 libopus produces no FEC data at all."""

    @property
    def samples_per_frame(self) -> int:
        """Samples per channel in one frame."""
        return self.sample_rate * self.frame_ms // 1000

    @property
    def frame_bytes(self) -> int:
        """Bytes of 16-bit PCM in one frame, all channels."""
        return self.samples_per_frame * self.channels * 2


def is_dtx(packet: bytes) -> bool:
    """Whether an encoded packet is a DTX "nothing to send" packet."""
    return len(packet) <= DTX_MAX_BYTES


def _native(pcm: bytes) -> bytes:
    """Little-endian PCM in the host's byte order, as libopus reads it (and back)."""
    if sys.byteorder == "little":
        return pcm
    samples = array.array("h", pcm)
    samples.byteswap()
    return samples.tobytes()


# -- encoder and decoder ------------------------------------------------------------


class OpusEncoder:
    """Encodes one frame of PCM at a time into Opus packets."""

    def __init__(self, config: CodecConfig | None = None) -> None:
        self.config = config if config is not None else CodecConfig()
        opus = _load()
        cfg = self.config
        # The high-level object owns the native state and frees it when collected.
        self._encoder = opus.Encoder(cfg.sample_rate, cfg.channels, opus.APPLICATION_VOIP)
        state = self._encoder.encoder_state
        ctl = opus.api.ctl
        try:
            for request, value in (
                (ctl.set_bitrate, cfg.bitrate),
                (ctl.set_complexity, cfg.complexity),
                (ctl.set_vbr, int(cfg.vbr)),
                (ctl.set_inband_fec, int(cfg.fec)),
                (ctl.set_packet_loss_perc, cfg.expected_loss_percent),
                (ctl.set_dtx, int(cfg.dtx)),
            ):
                opus.api.encoder.encoder_ctl(state, request, value)
        except opus.OpusError as exc:
            raise LocalProtocolError(
                f"libopus refused the encoder settings: {_describe(exc)}"
            ) from exc
        self._state = state
        self._encode = opus.api.encoder.encode
        self._lookahead = int(opus.api.encoder.encoder_ctl(state, ctl.get_lookahead))
        self._opus_error: type[Exception] = opus.OpusError

    @property
    def lookahead(self) -> int:
        """The encoder's algorithmic delay in samples: decoded audio lags the input by
        about this much."""
        return self._lookahead

    def encode(self, pcm: bytes) -> bytes:
        """One Opus packet from exactly one frame of PCM.

        Check the result with :func:`is_dtx`: during silence it may be a packet
        that need not be sent.
        """
        cfg = self.config
        if len(pcm) != cfg.frame_bytes:
            raise LocalProtocolError(
                f"a {cfg.frame_ms} ms frame at {cfg.sample_rate} Hz, {cfg.channels} channel(s) "
                f"is {cfg.frame_bytes} bytes of 16-bit PCM, not {len(pcm)}"
            )
        try:
            packet = self._encode(
                self._state, _native(bytes(pcm)), cfg.samples_per_frame, _MAX_PACKET_BYTES
            )
        except self._opus_error as exc:
            raise LocalProtocolError(
                f"libopus could not encode the frame: {_describe(exc)}"
            ) from exc
        return bytes(packet)


class OpusDecoder:
    """Decodes one speaker's Opus packets, in order, back to PCM frames.

    Keep one decoder per speaker: Opus is stateful, and concealment and FEC
    depend on what that speaker's decoder saw last.
    """

    def __init__(self, config: CodecConfig | None = None) -> None:
        self.config = config if config is not None else CodecConfig()
        opus = _load()
        self._decoder = opus.Decoder(self.config.sample_rate, self.config.channels)
        self._state = self._decoder.decoder_state
        self._decode = opus.api.decoder.decode
        self._nb_samples = opus.api.decoder.get_nb_samples
        self._opus_error: type[Exception] = opus.OpusError

    def decode(self, packet: bytes) -> bytes:
        """One frame of PCM from the packet that carries it."""
        if not packet:
            raise CodecError("an empty Opus packet carries no frame (use conceal() for a loss)")
        return self._run(bytes(packet), fec=False)

    def conceal(self) -> bytes:
        """A stand-in for one lost frame, extrapolated from what came before (PLC)."""
        return self._run(None, fec=False)

    def recover_from_fec(self, next_packet: bytes) -> bytes:
        """The lost frame rebuilt from the FEC data carried by the packet that follows it.

        If ``next_packet`` carries no FEC data libopus falls back to concealment.
        Decode ``next_packet`` itself afterwards, as usual.
        """
        if not next_packet:
            raise CodecError("an empty Opus packet carries no FEC data")
        return self._run(bytes(next_packet), fec=True)

    def _run(self, packet: bytes | None, *, fec: bool) -> bytes:
        cfg = self.config
        length = 0 if packet is None else len(packet)
        try:
            if packet is not None:
                # Checked first so a packet of another duration gets a clear reason,
                # not libopus's "buffer too small".
                samples = self._nb_samples(self._state, packet, length)
                if samples != cfg.samples_per_frame:
                    raise CodecError(
                        f"Opus packet holds {samples} samples per channel, "
                        f"expected one {cfg.frame_ms} ms frame of {cfg.samples_per_frame}"
                    )
            pcm = bytes(
                self._decode(self._state, packet, length, cfg.samples_per_frame, fec, cfg.channels)
            )
        except self._opus_error as exc:
            raise CodecError(f"undecodable Opus packet: {_describe(exc)}") from exc
        if len(pcm) != cfg.frame_bytes:  # libopus guarantees this; kept as a cheap invariant
            raise CodecError(f"libopus returned {len(pcm)} bytes, not {cfg.frame_bytes}")
        return _native(pcm)
