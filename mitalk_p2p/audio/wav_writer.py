"""Recording to a WAV file that stays playable even if the process dies mid-way.

The header of a WAV file holds the length of the audio, which a streaming
writer only knows at the end; the stdlib ``wave`` writer patches it on close,
so a killed process leaves a file that players read as empty.  :class:`WavWriter`
writes the canonical 44-byte header itself and rewrites its two size fields
every ``patch_seconds`` of audio (and on close), flushing to the operating
system each time: after a crash at most that much audio is missing from the
header's count, and everything before it plays.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Final

import attrs

from ..core.errors import LocalProtocolError
from .io import AudioOutputError
from .sources import SAMPLE_RATE

_CHANNELS: Final = 1
_SAMPLE_WIDTH: Final = 2
_HEADER_BYTES: Final = 44
_RIFF_SIZE_OFFSET: Final = 4
_DATA_SIZE_OFFSET: Final = 40
MAX_DATA_BYTES: Final = 0xFFFFFFFF - (_HEADER_BYTES - 8)
"""The most audio a RIFF file can describe (about 12.4 hours at 48 kHz mono 16-bit)."""


def _header(data_bytes: int) -> bytes:
    block_align = _CHANNELS * _SAMPLE_WIDTH
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", _HEADER_BYTES - 8 + data_bytes),
            b"WAVEfmt ",
            struct.pack(
                "<IHHIIHH",
                16,  # fmt chunk size
                1,  # integer PCM
                _CHANNELS,
                SAMPLE_RATE,
                SAMPLE_RATE * block_align,
                block_align,
                8 * _SAMPLE_WIDTH,
            ),
            b"data",
            struct.pack("<I", data_bytes),
        )
    )


@attrs.define
class WavWriter:
    """A :class:`~.io.FrameOutput` appending 48 kHz mono 16-bit PCM to a WAV file.

    ``file`` must be seekable and positioned where the file starts.  Audio beyond
    :data:`MAX_DATA_BYTES` cannot be described by the header, so it is dropped and
    counted in ``frames_dropped`` rather than corrupting the file.
    """

    file: BinaryIO
    name: str = "<wav>"
    """How errors refer to the file (its path)."""
    patch_seconds: float = attrs.field(default=1.0, validator=attrs.validators.gt(0.0))
    data_bytes: int = attrs.field(default=0, init=False)
    frames_written: int = attrs.field(default=0, init=False)
    frames_dropped: int = attrs.field(default=0, init=False)
    _patched_bytes: int = attrs.field(default=0, init=False)
    _closed: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        self._io(lambda: self.file.write(_header(0)))
        self._flush()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def duration_seconds(self) -> float:
        return self.data_bytes / (_SAMPLE_WIDTH * SAMPLE_RATE)

    def write_frame(self, pcm: bytes) -> None:
        """Append one frame; the header is brought up to date every ``patch_seconds``."""
        self._check_open()
        if len(pcm) % _SAMPLE_WIDTH:
            raise LocalProtocolError(f"16-bit PCM has an even number of bytes, not {len(pcm)}")
        if self.data_bytes + len(pcm) > MAX_DATA_BYTES:
            self.frames_dropped += 1
            return
        self._io(lambda: self.file.write(pcm))
        self.data_bytes += len(pcm)
        self.frames_written += 1
        self._maybe_patch()

    def write_silence(self, samples: int) -> None:
        """Append ``samples`` samples of silence by extending the file, without writing
        them one by one (on most file systems the zeros take no disk space)."""
        self._check_open()
        size = _SAMPLE_WIDTH * max(0, samples)
        if self.data_bytes + size > MAX_DATA_BYTES:
            self.frames_dropped += 1
            return
        self._flush()
        end = _HEADER_BYTES + self.data_bytes + size
        self._io(lambda: self.file.truncate(end))
        self._io(lambda: self.file.seek(end))
        self.data_bytes += size
        self._maybe_patch()

    def close(self) -> None:
        """Write the final header and close the file; closing twice does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._patch()
        finally:
            self.file.close()

    def _maybe_patch(self) -> None:
        interval = self.patch_seconds * SAMPLE_RATE * _SAMPLE_WIDTH
        if self.data_bytes - self._patched_bytes >= interval:
            self._patch()

    def _patch(self) -> None:
        """Rewrite the size fields for the audio written so far, then flush."""
        size = self.data_bytes

        def rewrite() -> None:
            end = self.file.tell()
            self.file.seek(_RIFF_SIZE_OFFSET)
            self.file.write(struct.pack("<I", _HEADER_BYTES - 8 + size))
            self.file.seek(_DATA_SIZE_OFFSET)
            self.file.write(struct.pack("<I", size))
            self.file.seek(end)

        self._io(rewrite)
        self._flush()
        self._patched_bytes = size

    def _flush(self) -> None:
        self._io(self.file.flush)

    def _check_open(self) -> None:
        if self._closed:
            raise LocalProtocolError(f"{self.name}: written to after it was closed")

    def _io(self, action: Callable[[], object]) -> None:
        """Run a file operation, turning an OSError into a one-line :class:`AudioOutputError`."""
        try:
            action()
        except OSError as exc:
            raise AudioOutputError(
                f"{self.name}: cannot write the recording ({exc.strerror or exc})"
            ) from exc


def open_wav_writer(path: str | Path, *, patch_seconds: float = 1.0) -> WavWriter:
    """A :class:`WavWriter` for a new file at ``path``, creating missing parent
    directories.  An existing file at ``path`` is overwritten, whatever it holds.
    Raises :class:`~.io.AudioOutputError` when the file cannot be created."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file = path.open("wb")
    except IsADirectoryError:
        raise AudioOutputError(f"{path}: is a directory, not a file to record to") from None
    except FileExistsError:
        raise AudioOutputError(
            f"{path}: cannot create its folder {path.parent} (a file is in the way)"
        ) from None
    except OSError as exc:
        reason = exc.strerror or exc
        raise AudioOutputError(f"{path}: cannot create the recording ({reason})") from exc
    try:
        return WavWriter(file, str(path), patch_seconds)
    except BaseException:
        file.close()
        raise
