"""Witness samples: a backup parent's evidence that the room's speakers are talking.

A relay can keep answering its children's probes and pass on none of a
speaker's frames (or one now and then).  From below, that looks exactly like a
speaker who is quiet (nobody talking, or DTX): the frame counters show no gap,
because no frame arrives at all.  The one thing that tells the two apart is a
second path.

Every member already has one: the backup parent the host assigned it, a relay
outside its subtree whose path to the root avoids its parent where the tree
allows.  So a member asks its backup, with a probe of role
:attr:`~.media_messages.ProbeRole.WITNESS` (at once for a new backup, then
every 3 s, each request good for ``lease`` = 7.5 s; a member whose backup
changes tells the old one, :attr:`~.media_messages.ProbeRole.WITNESS_END`),
for a sparse sample of the frames the backup verifies: of each speaker, the
first frame to arrive in every run of ``stride`` counters
(``MediaConfig.witness_stride``, 32 by default: 1.6 frames a second per active
speaker at 20 ms, about 3 % of the audio on that one link).  Taking the first
to arrive, rather than a fixed counter, keeps frames lost on the way to the
backup from taking the samples with them.  The backup sends each sample
unchanged, behind one type byte (:data:`WITNESS_TYPE`), so it can never be
taken for a frame on a tree edge.  Frames are signed by their speakers, so a
sample needs no trust in the backup: a valid one proves that its speaker got
at least that far.

The member compares the samples with what its parent passed on
(:meth:`.DeliveryMonitor.note_witness`): the parent's lag is how many frames
the speaker sent beyond the last one the parent passed on, less the standing
lag of a parent whose path is simply longer.  A quiet speaker moves no
counter, so quiet rooms show no lag.  When the lag passes what a repair above
an honest parent can cost, the parent is withholding, and the member moves to
its backup (``SwitchReason.LOSSY``), which the host weighs against the relay's
score as for any other loss.  A relay that passes on a frame every second or
so resets the lag each time; the long gaps it leaves one after another catch
it instead (:data:`.delivery.LONG_GAPS`).

Timing.  An honest parent can go without a speaker's frames for as long as a
repair above it takes: ``probe_interval × probe_misses`` before the orphan
there notices, one more interval of timer granularity, and the first frames
from its new parent (at most 40 frames, 0.8 s, in the fault scenarios).  The
verdict therefore waits for a lag of ``withhold_seconds`` (1 s) of frames.  So
that the samples show it as soon as that much has passed, a member whose
parent lags by :data:`LAGGING_SECONDS` says so at once in a witness request
(``lagging``), and the backup then samples every ``dense_stride``-th frame
(every 4th) for a moment: a quarter of the audio on one link, only while the
parent is suspect.  Measured in the simulator, children leave a relay that
passes on nothing about 1.0 s after it starts on 5 ms links, and up to 1.2 s
on 80 ms links.

Patience.  Relays below a withholding one see the same lag, and must not blame
their honest parent for it.  So the members say what they know, with the same
``lagging`` flag on their probes:

* a member whose parent lags says so to its children, in its answers and in
  one unasked answer at once; so does one whose own parent says so, or that
  moved moments ago.  The children then allow 2.5 times the lag, for as long
  as an honest repair above can take (3 s);
* a member that sees its parent lag says so in its probes to it; the parent,
  if it has no samples of its own that show it starved, asks its own backup
  for a dense sample at once (its backup may have been losing samples);
* a member whose link to its parent lost probes lately allows twice the lag (a
  burst takes frames too);
* before the verdict, a member probes its parent a round trip ahead and judges
  by the answer, so a claim lost on the way only delays it.

A withholding relay can buy itself the longer time by these means (saying that
it lags, or dropping its own answers), but no more: it is left after at most
2.5 s of frames whatever it says.

Why samples are evidence only: a sample is checked (signature, counter sanity,
and the replay window, so a frame already held is never even verified) and
then dropped.  It is never played, never marked seen, and never forwarded: a
witness path is not a tree edge.  Playing it would add nothing audible (one
frame in 32) and would turn each sample that outruns the parent's copy into a
false gap in the parent's delivery record, since that copy would then be a
duplicate; the parent's copy must stay what is played and passed on.

Limits.  A backup sends samples to at most :data:`MAX_WITNESSED` members, each
for ``lease`` seconds after its last request, and never to its own tree
neighbours, which get every frame anyway.  A member takes samples only from
the backup the host gave it (neither its parent nor its child), and checks one
only when it would raise what the parent and earlier samples showed, so most
samples cost a header read and a replayed one costs no crypto.

Other designs.  Sampling densely all the time would make detection no faster
than the dense-on-suspicion sample does, at a quarter of the audio on every
backup link.  An authenticated progress mark from the host (each speaker's
latest counter in its heartbeats) needs no second path, but arrives once per
heartbeat, puts every speaker's progress through the host, and changes the
control protocol; the backup path already exists, and its samples are signed
by the speakers themselves.

Out of scope: a backup that colludes with the parent and withholds the samples
too, and a speaker whose frames neither path carries (a speaker cut off
upstream of both).  Probes are not authenticated, so a spoofed request makes a
backup send its samples to another address (no more than a spoofed child
probe does already, at 1/32 of the rate), and a spoofed end of samples from
the member's own address stops them until its next request.
"""

from __future__ import annotations

import struct

import attrs

from .errors import WireError
from .identity import PublicKey
from .media_frame import FRAME_TYPE, MAX_FRAME_SIZE, MIN_FRAME_SIZE

WITNESS_TYPE = 0x13
"""First byte of a witness datagram (protocol version 1, kind 3); a whole frame follows."""
_PREFIX = bytes([WITNESS_TYPE])
LAGGING_SECONDS = 0.15
"""How far (in seconds of frames) the samples may run ahead of the parent before a member
says its parent lags.  Paths differ by a few frames; a parent that is this far behind
missed several in a row."""
MAX_WITNESSED = 32
"""Most members one backup sends samples to (the planner names a relay the backup of at
most ``backup_share`` times its child limit)."""


_PEEK = struct.Struct(">xB4sI4xI")
"""The witness type, then the frame's type, room tag, speaker, (generation,) counter."""


def wrap(frame: bytes) -> bytes:
    """A witness datagram carrying ``frame``."""
    return _PREFIX + frame


def peek(datagram: bytes) -> tuple[bytes, int, int]:
    """The room tag, speaker index and counter of the frame in a witness datagram.

    Reads them in place: most samples need nothing more.  Raises :class:`WireError`.
    """
    if not MIN_FRAME_SIZE < len(datagram) <= MAX_FRAME_SIZE + 1:
        raise WireError(f"witness datagram of {len(datagram)} bytes cannot hold a frame")
    kind, tag, speaker, seq = _PEEK.unpack_from(datagram)
    if kind != FRAME_TYPE:
        raise WireError(f"witness datagram holds type {kind:#04x}, not a media frame")
    return tag, speaker, seq


@attrs.define
class _Dependent:
    address: str
    until: float
    dense_until: float


@attrs.define
class WitnessTable:
    """The members this peer sends witness samples to, as their backup parent."""

    stride: int = 32
    """Sample one frame in every run of this many counters: the first to arrive."""
    dense_stride: int = 4
    """The same, for a member that says its parent lags."""
    lease: float = 7.5
    """Seconds a request holds."""
    dense_lease: float = 0.4
    """Seconds a lagging request holds the dense sample."""
    stride_now: int = 0
    """The finest stride any member is owed now (0: none), for a one-test check per frame."""
    refused: int = 0
    """Requests refused because the table was full."""
    next_sample: dict[int, int] = attrs.Factory(dict)
    """By speaker index, the counter from which the next frame is a sample (at
    :attr:`stride_now`).  Read on the frame path; see :meth:`sample`."""
    _next_sparse: dict[int, int] = attrs.Factory(dict)
    _dependents: dict[PublicKey, _Dependent] = attrs.Factory(dict)

    def __len__(self) -> int:
        return len(self._dependents)

    def __contains__(self, key: PublicKey) -> bool:
        return key in self._dependents

    def ask(self, key: PublicKey, address: str, lagging: bool, now: float) -> bool:
        """``key`` asked for samples at ``address``; False when the table is full."""
        dependent = self._dependents.get(key)
        if dependent is None:
            if len(self._dependents) >= MAX_WITNESSED:
                self.refused += 1
                return False
            dependent = self._dependents[key] = _Dependent(address, 0.0, 0.0)
        dependent.address = address
        dependent.until = now + self.lease
        if lagging:
            dependent.dense_until = now + self.dense_lease
            if self.stride_now != self.dense_stride:
                self.stride_now = self.dense_stride
                self.next_sample.clear()  # the next frame of each speaker is a sample
        elif not self.stride_now:
            self.stride_now = self.stride
        return True

    def forget(self, key: PublicKey, address: str | None = None) -> None:
        """``key`` is now a tree neighbour, or (from ``address``, the one its samples go to)
        no longer has this peer as its backup: it needs no samples."""
        dependent = self._dependents.get(key)
        if dependent is None or (address is not None and address != dependent.address):
            return
        del self._dependents[key]
        if not self._dependents:
            self.stride_now = 0

    def expire(self, now: float) -> None:
        """Drop the requests that ran out (called from the timer)."""
        if not self._dependents:
            if self.next_sample:
                self.next_sample.clear()
                self._next_sparse.clear()
            return
        for key in [k for k, d in self._dependents.items() if d.until <= now]:
            del self._dependents[key]
        self._restride(now)

    def sample(self, speaker: int, seq: int, now: float) -> list[tuple[PublicKey, str]]:
        """Who is owed the frame with counter ``seq``, which reached ``next_sample``.

        A sample is the first frame to arrive in each run of ``stride`` counters
        (``dense_stride`` for a member whose parent lags), not the frame with a
        given counter: frames lost on the way to this peer must not take the
        samples with them.
        """
        stride = self.stride_now or self.stride
        self.next_sample[speaker] = (seq // stride + 1) * stride
        sparse = seq >= self._next_sparse.get(speaker, 0)
        if sparse:
            self._next_sparse[speaker] = (seq // self.stride + 1) * self.stride
        return [
            (key, d.address)
            for key, d in self._dependents.items()
            if now < d.until and (sparse or now < d.dense_until)
        ]

    def _restride(self, now: float) -> None:
        if not self._dependents:
            self.stride_now = 0
        elif any(d.dense_until > now for d in self._dependents.values()):
            self.stride_now = self.dense_stride
        else:
            self.stride_now = self.stride
