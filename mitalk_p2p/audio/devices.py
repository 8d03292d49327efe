"""Microphones and speakers through PortAudio (``sounddevice``), as Trio resources.

Frames are the rest of the package's PCM: 16-bit signed little-endian mono at
:data:`~.sources.SAMPLE_RATE`.  A device is opened at that rate when it accepts it
(so nothing is resampled), otherwise at its own default rate, and the audio is
resampled on the way by :class:`LinearResampler`, which keeps its position across
blocks so that block boundaries do not click.  A device that refuses mono gets
two channels: capture averages them, playback copies the frame into both.

PortAudio calls the stream callback on its own real-time thread, which must never
wait for Trio.  So each direction has a :class:`DropOldestQueue` between the two
sides: the callback only moves bytes in or out of it and, for capture, wakes Trio
with :meth:`trio.lowlevel.TrioToken.run_sync_soon`, which never blocks.  When the
consumer falls behind, the oldest audio is dropped (and counted): for live speech a
short skip is better than latency that grows without bound.  Resampling and
framing happen on the Trio side, never in the callback.

``sounddevice`` is imported on first use, so importing this module never fails: a
machine without the PortAudio library gets :class:`AudioDeviceUnavailable`, naming
the package to install, when it first touches a device.  PortAudio lists devices
once, when it is initialised; :func:`refresh_devices` makes it look again.
"""

from __future__ import annotations

import array
import collections
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, Final, Generic, Literal, TypeVar

import attrs
import trio

from ..core.errors import LocalProtocolError, MitalkError
from .mixer import pcm_to_samples, samples_to_pcm
from .sources import DEFAULT_FRAME_SAMPLES, SAMPLE_RATE, _downmix

Kind = Literal["input", "output"]
"""Which direction of a device is meant: capture (``input``) or playback (``output``)."""

DEFAULT_INPUT_QUEUE_FRAMES: Final = 25
"""Captured frames held for a slow reader (500 ms at 20 ms); beyond this the oldest go."""

DEFAULT_OUTPUT_QUEUE_FRAMES: Final = 10
"""Frames held for playback (200 ms at 20 ms); beyond this the oldest go."""

DEFAULT_PREBUFFER_FRAMES: Final = 2
"""Frames playback waits for before it starts, and again after running dry: enough to
ride out the jitter between a writer's timer and the device's clock."""

DEFAULT_DRAIN_SECONDS: Final = 0.5
"""How long leaving :func:`open_device_output` normally waits for queued audio to play."""

INSTALL_HINT: Final = (
    "install it with: sudo apt-get install libportaudio2 (or run `make install` as root)"
)

_DTYPE: Final = "int16"


class AudioDeviceError(MitalkError):
    """A sound device cannot be found, opened or used."""


class AudioDeviceUnavailable(AudioDeviceError):
    """PortAudio (or its Python binding) could not be loaded, so no device can be used."""


# -- loading PortAudio --------------------------------------------------------------

_sd: Any = None


def _sounddevice() -> Any:
    """The ``sounddevice`` module, imported once; :class:`AudioDeviceUnavailable` if not."""
    global _sd
    if _sd is None:
        try:
            import sounddevice
        except ImportError as exc:
            raise AudioDeviceUnavailable(
                f"the Python package sounddevice is not installed ({exc}); "
                "reinstall mitalk-p2p with its dependencies (pip install sounddevice)"
            ) from exc
        except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
            raise AudioDeviceUnavailable(
                f"the PortAudio library (Debian package libportaudio2) could not be loaded "
                f"({exc}); " + INSTALL_HINT
            ) from exc
        except Exception as exc:  # PortAudioError: Pa_Initialize failed at import
            raise AudioDeviceUnavailable(f"PortAudio could not be initialised ({exc})") from exc
        _sd = sounddevice
    return _sd


def refresh_devices() -> None:
    """Make PortAudio enumerate the devices again (it lists them only at start-up).

    Needed after a device is plugged in or a sound server starts.  Every open stream
    must be closed first: PortAudio is shut down and started again.
    """
    sd = _sounddevice()
    try:
        sd._terminate()
        sd._initialize()
    except sd.PortAudioError as exc:
        raise AudioDeviceError(f"PortAudio could not be restarted ({exc})") from exc


# -- listing and choosing devices ---------------------------------------------------


@attrs.frozen
class DeviceInfo:
    """One device as PortAudio lists it.  ``index`` is valid until the next refresh."""

    index: int
    name: str
    host_api: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    is_default_input: bool = False
    is_default_output: bool = False

    def channels(self, kind: Kind) -> int:
        """The most channels the device offers in direction ``kind``."""
        return self.max_input_channels if kind == "input" else self.max_output_channels

    @property
    def label(self) -> str:
        """How messages name the device: index, quoted name and host API."""
        return f'{self.index} "{self.name}" ({self.host_api})'


def _default_index(sd: Any, kind: Kind) -> int | None:
    try:
        return int(sd.query_devices(kind=kind)["index"])
    except (sd.PortAudioError, ValueError, KeyError, TypeError):
        return None  # PortAudio knows no default device in that direction


def list_devices() -> list[DeviceInfo]:
    """Every device PortAudio currently knows, in index order."""
    sd = _sounddevice()
    try:
        raw = list(sd.query_devices())
        host_apis = [str(api["name"]) for api in sd.query_hostapis()]
    except sd.PortAudioError as exc:
        raise AudioDeviceError(f"PortAudio could not list the devices ({exc})") from exc
    default_in, default_out = _default_index(sd, "input"), _default_index(sd, "output")
    return [
        DeviceInfo(
            index=int(device["index"]),
            name=str(device["name"]),
            host_api=host_apis[int(device["hostapi"])],
            max_input_channels=int(device["max_input_channels"]),
            max_output_channels=int(device["max_output_channels"]),
            default_samplerate=float(device["default_samplerate"]),
            is_default_input=int(device["index"]) == default_in,
            is_default_output=int(device["index"]) == default_out,
        )
        for device in raw
    ]


def format_device_table(devices: Sequence[DeviceInfo]) -> str:
    """A plain-text table of ``devices``, with a legend for the default markers
    (``>`` default input, ``<`` default output, ``*`` both, as PortAudio tools show)."""
    if not devices:
        return "no audio devices found"
    header = ("", "#", "name", "host API", "in", "out", "rate")
    rows = [header]
    for device in devices:
        marker = {(True, True): "*", (True, False): ">", (False, True): "<"}.get(
            (device.is_default_input, device.is_default_output), ""
        )
        rows.append(
            (
                marker,
                str(device.index),
                device.name,
                device.host_api,
                str(device.max_input_channels),
                str(device.max_output_channels),
                f"{device.default_samplerate:g}",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    right = {1, 4, 5, 6}
    lines = [
        "  ".join(
            cell.rjust(width) if column in right else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.append("> default input, < default output, * both")
    return "\n".join(lines)


def _candidates(devices: Sequence[DeviceInfo]) -> str:
    return ", ".join(device.label for device in devices) or "none"


def find_device(spec: str | None, kind: Kind) -> DeviceInfo | None:
    """The ``kind`` device that ``spec`` names: an index, or a case-insensitive part of
    its name (a whole-name match wins over partial ones).  ``None``, an empty spec or
    ``"default"`` mean the default device, which is ``None`` when there is none.

    An unknown or ambiguous spec raises :class:`AudioDeviceError` whose one line lists
    the candidates.
    """
    if kind not in ("input", "output"):
        raise LocalProtocolError(f"device kind must be 'input' or 'output', not {kind!r}")
    devices = list_devices()
    usable = [device for device in devices if device.channels(kind) > 0]
    text = (spec or "").strip()
    if not text or (text.lower() == "default" and not _by_name(usable, text)[0]):
        flag = "is_default_input" if kind == "input" else "is_default_output"
        return next((device for device in usable if getattr(device, flag)), None)
    if text.isdigit():
        index = int(text)
        for device in usable:
            if device.index == index:
                return device
        raise AudioDeviceError(
            f"no audio {kind} device has index {index}; {kind} devices: {_candidates(usable)}"
        )
    exact, partial = _by_name(usable, text)
    matches = exact or partial
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise AudioDeviceError(
            f"no audio {kind} device matches {text!r}; {kind} devices: {_candidates(usable)}"
        )
    raise AudioDeviceError(
        f"audio {kind} device {text!r} is ambiguous, it matches: {_candidates(matches)} "
        "(give an index or more of the name)"
    )


def _by_name(devices: Sequence[DeviceInfo], text: str) -> tuple[list[DeviceInfo], list[DeviceInfo]]:
    """The devices whose whole name is ``text``, and those whose name contains it."""
    wanted = text.lower()
    exact = [device for device in devices if device.name.lower() == wanted]
    partial = [device for device in devices if wanted in device.name.lower()]
    return exact, partial


def _resolve(device: str | int | DeviceInfo | None, kind: Kind) -> DeviceInfo:
    if isinstance(device, DeviceInfo):
        return device
    found = find_device(None if device is None else str(device), kind)
    if found is None:
        usable = [info for info in list_devices() if info.channels(kind) > 0]
        raise AudioDeviceError(
            f"there is no default audio {kind} device; name one of: {_candidates(usable)}"
        )
    return found


# -- building blocks ----------------------------------------------------------------

T = TypeVar("T")


@attrs.define
class DropOldestQueue(Generic[T]):
    """A bounded FIFO between exactly one producer thread and one consumer thread.

    :meth:`push` never waits: when the queue is over ``capacity`` it discards the
    oldest items and counts them in ``dropped``.  Only the producer writes ``dropped``
    and both sides use single atomic :class:`collections.deque` operations, so no
    lock is needed, and the count is exactly the number of items discarded.
    """

    capacity: int = attrs.field(validator=attrs.validators.ge(1))
    dropped: int = attrs.field(default=0, init=False)
    _items: collections.deque[T] = attrs.field(factory=collections.deque, init=False)

    def push(self, item: T) -> None:
        """Append ``item`` (producer side), dropping the oldest items beyond capacity."""
        self._items.append(item)
        while len(self._items) > self.capacity:
            try:
                self._items.popleft()
            except IndexError:  # the consumer emptied it meanwhile
                break
            self.dropped += 1

    def pop(self) -> T | None:
        """The oldest item, or ``None`` when empty (consumer side)."""
        try:
            return self._items.popleft()
        except IndexError:
            return None

    def __len__(self) -> int:
        return len(self._items)


@attrs.define
class LinearResampler:
    """A streaming sample-rate converter by linear interpolation.

    Output sample ``j`` lies exactly at input position ``j * in_rate / out_rate``,
    kept as an integer numerator, and the last input sample of each block is held
    to interpolate towards the first of the next: feeding a signal in blocks of any
    sizes gives the same samples as feeding it whole.  There is no anti-alias
    filter, which suits speech but not music.
    """

    in_rate: int = attrs.field(validator=attrs.validators.ge(1))
    out_rate: int = attrs.field(validator=attrs.validators.ge(1))
    _step: int = attrs.field(init=False)
    """Input advance per output sample, in units of 1 / ``_unit`` input samples."""
    _unit: int = attrs.field(init=False)
    _position: int = attrs.field(default=0, init=False)
    """The next output's position after the held sample, in 1 / ``_unit`` samples."""
    _held: int | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        common = math.gcd(self.in_rate, self.out_rate)
        self._step, self._unit = self.in_rate // common, self.out_rate // common

    def process(self, samples: Sequence[int]) -> array.array[int]:
        """The output samples that ``samples`` (following earlier calls) complete."""
        if self._step == self._unit:
            return array.array("h", samples)
        held = array.array("h") if self._held is None else array.array("h", [self._held])
        buffer = held + array.array("h", samples)
        if not buffer:
            return array.array("h")
        unit, step = self._unit, self._step
        limit = (len(buffer) - 1) * unit
        positions = range(self._position, limit, step)
        out = array.array("h", bytes(2 * len(positions)))
        for slot, position in enumerate(positions):
            index, fraction = divmod(position, unit)
            left = buffer[index]
            out[slot] = left + (buffer[index + 1] - left) * fraction // unit
        self._position += len(positions) * step - limit
        self._held = buffer[-1]
        return out


def _native_samples(raw: bytes) -> array.array[int]:
    """PortAudio's int16 samples (host byte order) as an array."""
    samples = array.array("h")
    samples.frombytes(raw)
    return samples


def _native_bytes(samples: array.array[int]) -> bytes:
    """``samples`` in host byte order, as PortAudio takes int16."""
    return samples.tobytes()


def _spread(samples: array.array[int], channels: int) -> array.array[int]:
    """Mono ``samples`` copied into each of ``channels`` interleaved channels."""
    if channels == 1:
        return samples
    out = array.array("h", bytes(2 * len(samples) * channels))
    for channel in range(channels):
        out[channel::channels] = samples
    return out


@attrs.frozen
class StreamFormat:
    """How a device stream was opened."""

    samplerate: int
    """The device's rate; audio is resampled when it is not :data:`SAMPLE_RATE`."""
    channels: int
    blocksize: int
    """Device samples per callback: one frame's duration at ``samplerate``."""


def choose_format(
    info: DeviceInfo,
    kind: Kind,
    samplerate: int | None = None,
    frame_samples: int = DEFAULT_FRAME_SAMPLES,
) -> StreamFormat:
    """The format to open ``info`` with: :data:`SAMPLE_RATE` when the device takes it,
    so nothing is resampled, else the device's default rate (or exactly ``samplerate``
    when given); mono when the device takes it, else two channels.

    PortAudio reports 44.1 kHz as the default of nearly every ALSA device, even those
    that run at 48 kHz, which is why 48 kHz is tried first.  Probing opens the device,
    so this blocks for a moment.
    """
    sd = _sounddevice()
    most = info.channels(kind)
    if most < 1:
        raise AudioDeviceError(f"audio device {info.label} has no {kind} channels")
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    rates = (
        [samplerate]
        if samplerate is not None
        else list(dict.fromkeys([SAMPLE_RATE, round(info.default_samplerate)]))
    )
    for channels in sorted({1, min(2, most)}):
        for rate in rates:
            try:
                check(device=info.index, channels=channels, dtype=_DTYPE, samplerate=rate)
            except (sd.PortAudioError, ValueError):
                continue
            blocksize = max(1, round(frame_samples * rate / SAMPLE_RATE))
            return StreamFormat(rate, channels, blocksize)
    tried = " or ".join(f"{rate} Hz" for rate in rates)
    raise AudioDeviceError(
        f"audio {kind} device {info.label} accepts neither mono nor stereo 16-bit audio at {tried}"
    )


def _prepare(
    device: str | int | DeviceInfo | None,
    kind: Kind,
    samplerate: int | None,
    frame_samples: int,
) -> tuple[DeviceInfo, StreamFormat]:
    """The device to open and its format (blocking: PortAudio may probe devices)."""
    info = _resolve(device, kind)
    return info, choose_format(info, kind, samplerate, frame_samples)


def _check_frame_samples(frame_samples: int) -> None:
    if isinstance(frame_samples, bool) or not isinstance(frame_samples, int) or frame_samples < 1:
        raise LocalProtocolError(f"frame_samples must be a positive integer, not {frame_samples!r}")


def _open_error(kind: Kind, info: DeviceInfo, exc: Exception) -> AudioDeviceError:
    return AudioDeviceError(f"cannot open audio {kind} device {info.label}: {exc}")


def _wake_soon(token: trio.lowlevel.TrioToken, wake: Callable[[], None]) -> None:
    """Have Trio call ``wake`` soon, from any thread, without ever blocking; repeated
    requests before it runs collapse into one."""
    with suppress(trio.RunFinishedError):  # the run is over: nobody is left to wake
        token.run_sync_soon(wake, idempotent=True)


async def _close_stream(stream: Any) -> None:
    """Close a PortAudio stream (discarding what it still buffers) off the Trio thread,
    shielded, so that a cancelled task still releases the device."""
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(stream.close)


# -- capture ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class InputStatistics:
    """What capture has done so far."""

    frames_captured: int
    """Device blocks (each one frame long) the callback received."""
    frames_dropped: int
    """Blocks discarded, oldest first, because the reader fell more than a queue behind."""
    overflows: int
    """Callbacks PortAudio flagged with an input overflow (audio lost in the driver)."""


@attrs.define(eq=False)
class DeviceInput:
    """A microphone delivering frames of ``frame_samples`` samples, in real time.

    Open it with :func:`open_device_input`.  It satisfies :class:`~.io.FrameInput`.
    """

    device: DeviceInfo
    format: StreamFormat
    frame_samples: int = DEFAULT_FRAME_SAMPLES
    queue_frames: int = DEFAULT_INPUT_QUEUE_FRAMES
    _token: trio.lowlevel.TrioToken = attrs.field(
        factory=trio.lowlevel.current_trio_token, init=False
    )
    _queue: DropOldestQueue[bytes] = attrs.field(init=False)
    _resampler: LinearResampler = attrs.field(init=False)
    _pending: array.array[int] = attrs.field(factory=lambda: array.array("h"), init=False)
    _stream: Any = attrs.field(default=None, init=False)
    _wakeup: trio.Event = attrs.field(factory=trio.Event, init=False)
    _ended: bool = attrs.field(default=False, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    _reading: bool = attrs.field(default=False, init=False)
    _captured: int = attrs.field(default=0, init=False)
    _overflows: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._queue = DropOldestQueue(self.queue_frames)
        self._resampler = LinearResampler(self.format.samplerate, SAMPLE_RATE)

    @property
    def closed(self) -> bool:
        return self._closed

    def statistics(self) -> InputStatistics:
        return InputStatistics(
            frames_captured=self._captured,
            frames_dropped=self._queue.dropped,
            overflows=self._overflows,
        )

    def _open(self, latency: float | str | None) -> None:
        """Open and start the stream (blocking; run on a worker thread)."""
        sd = _sounddevice()
        fmt = self.format
        try:
            stream = sd.RawInputStream(
                device=self.device.index,
                samplerate=fmt.samplerate,
                channels=fmt.channels,
                dtype=_DTYPE,
                blocksize=fmt.blocksize,
                latency=latency,
                callback=self._callback,
                finished_callback=self._finished,
            )
        except sd.PortAudioError as exc:
            raise _open_error("input", self.device, exc) from exc
        try:
            stream.start()
        except BaseException as exc:
            stream.close()
            if isinstance(exc, sd.PortAudioError):
                raise _open_error("input", self.device, exc) from exc
            raise
        self._stream = stream

    # PortAudio's thread: only counters, one queue push and a non-blocking wake-up.
    def _callback(self, indata: Any, frames: int, time: Any, status: Any) -> None:
        if status.input_overflow:
            self._overflows += 1
        self._queue.push(bytes(indata))
        self._captured += 1
        self._notify()

    def _finished(self) -> None:
        self._ended = True
        self._notify()

    def _notify(self) -> None:
        _wake_soon(self._token, self._wake)

    def _wake(self) -> None:
        self._wakeup.set()

    # The Trio side.
    async def read_frame(self) -> bytes | None:
        """The next captured frame (``2 * frame_samples`` bytes), waiting for it;
        ``None`` once the input is closed or the device stopped on its own."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._reading:
            raise trio.BusyResourceError("another task is already reading this input")
        self._reading = True
        try:
            while True:
                if self._closed:
                    frame = None
                    break
                frame = self._take_frame()
                if frame is not None:
                    break
                block = self._queue.pop()
                if block is not None:
                    self._absorb(block)
                    continue
                if self._ended:
                    break
                # A block pushed from here on schedules _wake after this point.
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
        finally:
            self._reading = False
        await trio.lowlevel.cancel_shielded_checkpoint()
        return frame

    def _absorb(self, block: bytes) -> None:
        samples = _native_samples(block)
        if self.format.channels > 1:
            samples = _downmix(samples, self.format.channels)
        self._pending.extend(self._resampler.process(samples))

    def _take_frame(self) -> bytes | None:
        if len(self._pending) < self.frame_samples:
            return None
        frame = self._pending[: self.frame_samples]
        del self._pending[: self.frame_samples]
        return samples_to_pcm(frame)

    async def aclose(self) -> None:
        """Stop capturing and release the device; a blocked :meth:`read_frame` returns
        ``None``.  Closing twice does nothing."""
        self._closed = True
        self._wakeup.set()
        stream, self._stream = self._stream, None
        if stream is None:
            await trio.lowlevel.checkpoint()
            return
        await _close_stream(stream)


@asynccontextmanager
async def open_device_input(
    device: str | int | DeviceInfo | None = None,
    *,
    frame_samples: int = DEFAULT_FRAME_SAMPLES,
    samplerate: int | None = None,
    queue_frames: int = DEFAULT_INPUT_QUEUE_FRAMES,
    latency: float | str | None = None,
) -> AsyncIterator[DeviceInput]:
    """Capture from ``device`` (see :func:`find_device`; ``None`` is the default input)
    for the duration of the block; the stream is closed on the way out, cancelled or not.

    ``samplerate`` forces the device rate (else :data:`SAMPLE_RATE` if the device takes
    it, or its default); ``latency`` is PortAudio's (seconds, ``"low"`` or ``"high"``).
    """
    _check_frame_samples(frame_samples)
    info, fmt = await trio.to_thread.run_sync(_prepare, device, "input", samplerate, frame_samples)
    mic = DeviceInput(info, fmt, frame_samples, queue_frames)
    await trio.to_thread.run_sync(mic._open, latency)
    try:
        yield mic
    finally:
        await mic.aclose()


# -- playback -----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class OutputStatistics:
    """What playback has done so far."""

    frames_written: int
    """Frames accepted by :meth:`DeviceOutput.write_frame`."""
    frames_dropped: int
    """Queued frames discarded, oldest first, because the writer ran too far ahead."""
    underruns: int
    """Times playback ran out of queued audio and later resumed: each is an audible
    gap filled with silence.  Running dry at the end of the audio is not counted."""
    underflows: int
    """Callbacks PortAudio flagged with an output underflow (the driver ran dry)."""


@attrs.define(eq=False)
class DeviceOutput:
    """A speaker playing frames of ``frame_samples`` samples as they are written.

    Open it with :func:`open_device_output`.  It satisfies :class:`~.io.FrameOutput`.
    Playback starts once ``prebuffer_frames`` frames are queued (and again after the
    queue runs dry), so the writer's timer jitter does not turn into gaps.
    """

    device: DeviceInfo
    format: StreamFormat
    frame_samples: int = DEFAULT_FRAME_SAMPLES
    queue_frames: int = DEFAULT_OUTPUT_QUEUE_FRAMES
    prebuffer_frames: int = attrs.field(
        default=DEFAULT_PREBUFFER_FRAMES, validator=attrs.validators.ge(0)
    )
    _token: trio.lowlevel.TrioToken = attrs.field(
        factory=trio.lowlevel.current_trio_token, init=False
    )
    _queue: DropOldestQueue[bytes] = attrs.field(init=False)
    _resampler: LinearResampler = attrs.field(init=False)
    _stream: Any = attrs.field(default=None, init=False)
    _wakeup: trio.Event = attrs.field(factory=trio.Event, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    _written: int = attrs.field(default=0, init=False)
    # Owned by the callback thread (the Trio side only reads them):
    _chunk: memoryview = attrs.field(factory=lambda: memoryview(b""), init=False)
    _chunk_offset: int = attrs.field(default=0, init=False)
    _playing: bool = attrs.field(default=False, init=False)
    _in_gap: bool = attrs.field(default=False, init=False)
    _audible: bool = attrs.field(default=False, init=False)
    """The previous callback played queued audio to its end."""
    _idle: bool = attrs.field(default=True, init=False)
    _zeros: memoryview = attrs.field(factory=lambda: memoryview(b""), init=False)
    _underruns: int = attrs.field(default=0, init=False)
    _underflows: int = attrs.field(default=0, init=False)
    # Set by the Trio side, read by the callback:
    _draining: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        if self.prebuffer_frames > self.queue_frames:
            raise LocalProtocolError(
                f"prebuffer_frames ({self.prebuffer_frames}) cannot exceed "
                f"queue_frames ({self.queue_frames})"
            )
        self._queue = DropOldestQueue(self.queue_frames)
        self._resampler = LinearResampler(SAMPLE_RATE, self.format.samplerate)
        self._zeros = memoryview(bytes(2 * self.format.channels * self.format.blocksize))

    @property
    def closed(self) -> bool:
        return self._closed

    def statistics(self) -> OutputStatistics:
        return OutputStatistics(
            frames_written=self._written,
            frames_dropped=self._queue.dropped,
            underruns=self._underruns,
            underflows=self._underflows,
        )

    def write_frame(self, pcm: bytes) -> None:
        """Queue one frame for playback; never waits.  When the queue is full the
        oldest queued frame is dropped."""
        if self._closed:
            raise LocalProtocolError(f"audio output {self.device.label}: written after close")
        if len(pcm) != 2 * self.frame_samples:
            raise LocalProtocolError(
                f"a frame is {2 * self.frame_samples} bytes of PCM, not {len(pcm)}"
            )
        samples = self._resampler.process(pcm_to_samples(pcm))
        self._queue.push(_native_bytes(_spread(samples, self.format.channels)))
        self._written += 1

    def close(self) -> None:
        """Accept no more frames.  What is queued still plays when the block of
        :func:`open_device_output` ends normally; the device is released there."""
        self._closed = True

    def _open(self, latency: float | str | None) -> None:
        """Open and start the stream (blocking; run on a worker thread)."""
        sd = _sounddevice()
        fmt = self.format
        try:
            stream = sd.RawOutputStream(
                device=self.device.index,
                samplerate=fmt.samplerate,
                channels=fmt.channels,
                dtype=_DTYPE,
                blocksize=fmt.blocksize,
                latency=latency,
                callback=self._callback,
            )
        except sd.PortAudioError as exc:
            raise _open_error("output", self.device, exc) from exc
        try:
            stream.start()
        except BaseException as exc:
            stream.close()
            if isinstance(exc, sd.PortAudioError):
                raise _open_error("output", self.device, exc) from exc
            raise
        self._stream = stream

    # PortAudio's thread: copies queued bytes out, pads with silence, never waits.
    def _callback(self, outdata: Any, frames: int, time: Any, status: Any) -> None:
        if status.output_underflow:
            self._underflows += 1
        size = len(outdata)
        filled = 0
        if not self._playing and (len(self._queue) >= self.prebuffer_frames or self._draining):
            self._playing = True
        if self._playing:
            filled = self._fill(outdata, size)
            if filled and self._in_gap:
                self._underruns += 1
                self._in_gap = False
            if filled < size:
                self._playing = False
                # A gap has begun if audio was flowing; it counts once audio resumes.
                self._in_gap = self._in_gap or filled > 0 or self._audible
        if filled < size:
            gap = size - filled
            outdata[filled:size] = self._zeros[:gap] if gap <= len(self._zeros) else bytes(gap)
        self._idle = filled < size
        self._audible = filled == size
        if self._idle and self._draining:
            _wake_soon(self._token, self._wake)

    def _fill(self, outdata: Any, size: int) -> int:
        """Copy queued audio into ``outdata``; the number of bytes copied."""
        filled = 0
        while filled < size:
            if self._chunk_offset >= len(self._chunk):
                chunk = self._queue.pop()
                if chunk is None:
                    break
                self._chunk, self._chunk_offset = memoryview(chunk), 0
            take = min(size - filled, len(self._chunk) - self._chunk_offset)
            outdata[filled : filled + take] = self._chunk[
                self._chunk_offset : self._chunk_offset + take
            ]
            filled += take
            self._chunk_offset += take
        return filled

    def _wake(self) -> None:
        self._wakeup.set()

    async def drain(self) -> None:
        """Play what is queued, even below the prebuffer threshold, and return once the
        callback has taken all of it.  Bound it with :func:`trio.move_on_after`."""
        self._draining = True
        # The callback wakes us every time it runs dry while draining.
        while len(self._queue) or not self._idle:
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        await trio.lowlevel.checkpoint()

    async def _play_out(self) -> None:
        """Stop the stream after the device has played what it buffers."""
        stream = self._stream
        if stream is not None:
            await trio.to_thread.run_sync(stream.stop)

    async def aclose(self) -> None:
        """Release the device at once, discarding what has not been played.  Closing
        twice does nothing."""
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is None:
            await trio.lowlevel.checkpoint()
            return
        await _close_stream(stream)


@asynccontextmanager
async def open_device_output(
    device: str | int | DeviceInfo | None = None,
    *,
    frame_samples: int = DEFAULT_FRAME_SAMPLES,
    samplerate: int | None = None,
    queue_frames: int = DEFAULT_OUTPUT_QUEUE_FRAMES,
    prebuffer_frames: int = DEFAULT_PREBUFFER_FRAMES,
    drain_seconds: float = DEFAULT_DRAIN_SECONDS,
    latency: float | str | None = None,
) -> AsyncIterator[DeviceOutput]:
    """Play on ``device`` (see :func:`find_device`; ``None`` is the default output) for
    the duration of the block.

    When the block ends normally, queued audio gets up to ``drain_seconds`` to play
    out (so a short clip is not cut off), then the device's own buffer is played and
    the stream stopped.  When it ends with an exception or cancellation, the stream is
    closed at once.  ``samplerate`` and ``latency`` are as for :func:`open_device_input`.
    """
    _check_frame_samples(frame_samples)
    info, fmt = await trio.to_thread.run_sync(_prepare, device, "output", samplerate, frame_samples)
    speaker = DeviceOutput(info, fmt, frame_samples, queue_frames, prebuffer_frames)
    await trio.to_thread.run_sync(speaker._open, latency)
    try:
        yield speaker
        with trio.move_on_after(drain_seconds):
            await speaker.drain()
        await speaker._play_out()
    finally:
        await speaker.aclose()
