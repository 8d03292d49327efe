"""Capture timestamps that count samples, not the moments frames were read.

A sound device hands frames over in bursts: PortAudio through ALSA and a sound
server delivers 20 ms frames anywhere from 0 to 30 ms apart.  Stamping each frame
with the time it was read would pass that burstiness on as if it were network
jitter, and the listener's jitter buffer (which schedules playout by capture
time) would see frames overlap or leave gaps the speaker never made.

:class:`CaptureClock` is a media clock in the RTP sense: frame *n* of a run is
stamped ``anchor + n * frame_seconds``, where the anchor is when the run's first
frame was read.  Frames read early (a burst) keep their slots.  When a frame is
read more than ``max_lag`` after its slot, samples went missing (the device
stalled, or the input was paused), so the run restarts from that frame: the
stamps jump forward, as they do over a pause in speech, and never go back.
"""

from __future__ import annotations

import attrs


@attrs.define
class CaptureClock:
    """Stamps consecutive captured frames; times are seconds on one monotonic clock."""

    frame_seconds: float = attrs.field(validator=attrs.validators.gt(0.0))
    max_lag: float = attrs.field(default=0.08, validator=attrs.validators.gt(0.0))
    """How far behind its slot a frame may be read before the run restarts."""
    restarts: int = 0
    """Runs restarted because the input fell behind (the first frame is not counted)."""
    _anchor: float | None = None
    _count: int = 0

    def stamp(self, read_at: float) -> float:
        """The capture time of the next frame, which was read at ``read_at``."""
        if self._anchor is None:
            self._anchor, self._count = read_at, 0
        slot = self._anchor + self._count * self.frame_seconds
        if read_at - slot > self.max_lag:
            self._anchor += read_at - slot
            slot = read_at
            self.restarts += 1
        self._count += 1
        return slot
