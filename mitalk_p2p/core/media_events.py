"""What the media plane asks its driver to do, and what it reports."""

from __future__ import annotations

import attrs

from .identity import PublicKey
from .jitter import Playout
from .media_frame import KeyGeneration


@attrs.frozen
class SendDatagram:
    """Send ``data`` as one UDP datagram to media address ``address``."""

    address: str
    data: bytes = attrs.field(repr=False)


@attrs.frozen
class AudioOut:
    """One playout slot for one speaker: decode, recover with FEC, conceal, or stay silent."""

    speaker: PublicKey
    playout: Playout


@attrs.frozen
class FrameReceived:
    """A frame was verified and decrypted (reported only when asked for, it is per frame)."""

    speaker: PublicKey
    seq: int
    capture_time: float
    arrived: float


@attrs.frozen
class ParentChanged:
    """This peer's tree parent changed: ``reason`` is "assigned", "silent", "corrupt",
    "detached" (the parent's path no longer reached the host, or led back here) or
    "lossy" (the parent passed on too few frames)."""

    parent: PublicKey | None
    reason: str


@attrs.frozen
class SenderKeyChanged:
    """This peer started sealing its frames with a new sender key generation."""

    generation: KeyGeneration
    reason: str  # "fresh", "ratchet" or "rotation"


MediaEvent = AudioOut | FrameReceived | ParentChanged | SenderKeyChanged
