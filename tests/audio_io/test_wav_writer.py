"""Recording to WAV: a round trip through the stdlib reader, and a file that survives a crash."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import pytest

from mitalk_p2p.audio.io import AudioOutputError
from mitalk_p2p.audio.sources import ToneSource
from mitalk_p2p.audio.wav_writer import MAX_DATA_BYTES, WavWriter, open_wav_writer
from mitalk_p2p.core.errors import LocalProtocolError, MitalkError

SECOND = 48000


def tone(frames: int) -> list[bytes]:
    source = ToneSource(330.0)
    return [source.read_frame() for _ in range(frames)]


def read_wav(path: Path) -> tuple[tuple[int, int, int], bytes]:
    with wave.open(str(path), "rb") as reader:
        shape = (reader.getnchannels(), reader.getsampwidth(), reader.getframerate())
        return shape, reader.readframes(reader.getnframes())


def test_round_trip_through_the_wave_module(tmp_path: Path) -> None:
    frames = tone(73)
    path = tmp_path / "out.wav"
    writer = open_wav_writer(path)
    for frame in frames:
        writer.write_frame(frame)
    assert writer.frames_written == 73
    assert writer.duration_seconds == pytest.approx(73 * 0.020)
    writer.close()
    writer.close()  # idempotent
    assert writer.closed
    assert read_wav(path) == ((1, 2, SECOND), b"".join(frames))
    assert path.stat().st_size == 44 + 73 * 1920


def test_the_file_is_playable_before_close(tmp_path: Path) -> None:
    path = tmp_path / "live.wav"
    writer = open_wav_writer(path, patch_seconds=1.0)
    assert read_wav(path) == ((1, 2, SECOND), b"")  # a valid, empty file from the start
    frames = tone(125)  # 2.5 s
    for frame in frames:
        writer.write_frame(frame)
    shape, audio = read_wav(path)  # the header covers every whole second written
    assert shape == (1, 2, SECOND)
    assert audio == b"".join(frames[:100])
    writer.close()
    assert read_wav(path)[1] == b"".join(frames)


def test_a_killed_recorder_leaves_a_playable_file(tmp_path: Path) -> None:
    path = tmp_path / "killed.wav"
    script = textwrap.dedent(
        f"""
        import os, signal
        from mitalk_p2p.audio.wav_writer import open_wav_writer
        writer = open_wav_writer({str(path)!r})
        for _ in range(80):  # 1.6 s
            writer.write_frame(b"\\x01\\x02" * 960)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert result.returncode == -signal.SIGKILL
    assert read_wav(path) == ((1, 2, SECOND), b"\x01\x02" * SECOND)


def test_silence_extends_the_file_without_writing_it(tmp_path: Path) -> None:
    path = tmp_path / "gap.wav"
    writer = open_wav_writer(path)
    writer.write_frame(b"\x07\x00" * 960)
    writer.write_silence(3 * SECOND)
    writer.write_frame(b"\x09\x00" * 960)
    _, audio = read_wav(path)  # patched: the silence alone was over a second
    assert len(audio) == 2 * (960 + 3 * SECOND)
    writer.close()
    _, audio = read_wav(path)
    assert audio == b"\x07\x00" * 960 + bytes(6 * SECOND) + b"\x09\x00" * 960


def test_writing_after_close_or_odd_bytes_is_a_bug() -> None:
    writer = WavWriter(io.BytesIO(), "memory")
    with pytest.raises(LocalProtocolError, match="even number"):
        writer.write_frame(b"abc")
    writer.close()
    with pytest.raises(LocalProtocolError, match="memory: written to after it was closed"):
        writer.write_frame(b"ab")


def test_audio_beyond_what_a_riff_header_can_count_is_dropped() -> None:
    file = io.BytesIO()
    writer = WavWriter(file)
    writer.data_bytes = MAX_DATA_BYTES - 1000  # as if 12 hours had been written
    writer.write_frame(bytes(1920))
    writer.write_silence(960)
    assert writer.frames_dropped == 2
    assert writer.frames_written == 0


def test_open_creates_parent_folders_and_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "track.wav"
    open_wav_writer(path).close()
    assert read_wav(path)[1] == b""
    path.write_text("an old file that is not audio")
    writer = open_wav_writer(path)
    writer.write_frame(bytes(1920))
    writer.close()
    assert read_wav(path)[1] == bytes(1920)


def test_an_unwritable_path_fails_with_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    cases = {
        tmp_path: "is a directory",
        tmp_path / "file" / "track.wav": "cannot create",
    }
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases[locked / "track.wav"] = "Permission denied"
    for path, reason in cases.items():
        with pytest.raises(AudioOutputError, match=reason) as caught:
            open_wav_writer(path)
        assert str(path) in str(caught.value)
        assert "\n" not in str(caught.value)
        assert isinstance(caught.value, MitalkError)


def test_a_failing_disk_is_reported_as_an_output_error() -> None:
    class Full(io.BytesIO):
        def write(self, data: object) -> int:
            if self.tell() >= 44:
                raise OSError(28, "No space left on device")
            return super().write(data)  # type: ignore[arg-type]

    writer = WavWriter(Full(), "disk.wav")
    with pytest.raises(AudioOutputError, match=r"disk\.wav: cannot write the recording.*No space"):
        writer.write_frame(bytes(1920))
