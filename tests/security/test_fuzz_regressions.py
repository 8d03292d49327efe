"""Inputs that once crashed a parser, kept byte for byte; and the fuzz harnesses themselves.

Each input below escaped its parser as an undocumented exception (a traceback where
one error line was due, or a network task's crash) before the fix named with it.
They were found by the coverage-guided fuzzer (``make fuzz``, targets in ``fuzz/``)
and by the property tests of ``test_parser_properties.py``.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
from pathlib import Path

import pytest

from bootstrap import command as bootstrap_command
from bootstrap.announcement import Announcement
from bootstrap.protocol import decode_request, decode_response
from fuzz import run as fuzz_run
from fuzz import targets as fuzz_targets
from mitalk_p2p import cli
from mitalk_p2p.audio.sources import AudioSourceError, WavSource
from mitalk_p2p.core.errors import WireError
from mitalk_p2p.profile import ProfileError, load_identity, load_or_create_identity, profile_path
from mitalk_p2p.runtime.addresses import AddressError, parse_address
from mitalk_p2p.runtime.contacts import decode_contacts
from mitalk_p2p.sim.scenario import ScenarioError, parse_scenario

# --- a port of non-ASCII digits ---------------------------------------------------------------
# str.isdigit() is true for "²", which int() refuses: parse_address raised a bare ValueError.
# From the network that killed the contact-directory handler (a link's task) and the
# bootstrap node's and client's decoding of an announcement.  Fixed in parse_address:
# ASCII digits only.  Found by the property tests, and by the fuzzer (target link) once
# it had its dictionary of text edge cases.

CONTACTS_WITH_A_SUPERSCRIPT_PORT = (
    b"\x00\x01" + bytes(32) + b"\x00\x0c127.0.0.1:\xc2\xb2"
)
"""A contact list of one entry whose address is ``127.0.0.1:²``."""

ANNOUNCEMENT_WITH_A_SUPERSCRIPT_PORT = (
    b'\x01\x00\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f\x00\x0fLate '
    b'Night Jazz\x00\x0csmooth tunes'
    b'\x8a\x88\xe3\xddt\t\xf1\x95\xfdR\xdb-<\xba]r\xcag\t\xbf\x1d\x94\x12\x1b'
    b'\xf3t\x88\x01\xb4\x0fo\\\x8a\x88\xe3\xddt\t\xf1\x95\xfdR\xdb-<\xba]r'
    b'\xcag\t\xbf\x1d\x94\x12\x1b\xf3t\x88\x01\xb4\x0fo\\\x00\x00\x00\x01\x00\x00\x00\x00'
    b'\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x00eS\xf1\x00\x00\x00\x00\x00eS\xf3'
    b'X\x01\x00\x0e192.0.2.1:\xc2\xb2\xc2\xb2\xafK\xfd\xb4$\xc8'
    b'\xad\xab\x04\xcaO\xc2\x82+#G\xe2-\x0e\xe8\x8f\x1e\xf6\xd5\xfe\x85\x1c}FQ'
    b':fs\xa9\xed\x04\xe9x\xb5p\x91\xfd\xc3\x99f\x83\x0e\xca\xcax\xfd\x7f\x10\xfb'
    b"Q\x84b\xd8\x8e2\xfa\xda'\t"
)
"""A room announcement whose one address is ``192.0.2.1:²²``."""


def test_a_contact_whose_port_is_a_superscript_digit_is_skipped() -> None:
    assert decode_contacts(CONTACTS_WITH_A_SUPERSCRIPT_PORT) == []


def test_an_announcement_whose_port_is_a_superscript_digit_is_a_wire_error() -> None:
    with pytest.raises(WireError, match="port must be"):
        Announcement.from_bytes(ANNOUNCEMENT_WITH_A_SUPERSCRIPT_PORT)
    with pytest.raises(WireError):  # what a node decodes
        decode_request(b"\x01\x01" + ANNOUNCEMENT_WITH_A_SUPERSCRIPT_PORT)
    with pytest.raises(WireError):  # what a client decodes from a node
        decode_response(b"\x01\x82\x00\x01\x00\xe2" + ANNOUNCEMENT_WITH_A_SUPERSCRIPT_PORT)


@pytest.mark.parametrize("port", ["²", "٣", "１", "9" * 5000])
def test_ports_of_other_digits_or_thousands_of_them_are_address_errors(port: str) -> None:
    with pytest.raises(AddressError, match="port must be"):
        parse_address(f"127.0.0.1:{port}")


# --- TOML numbers no float can hold -----------------------------------------------------------
# A scenario's number field converted a TOML integer with float(), which overflows on
# 400 digits; tomllib itself raises a bare ValueError on an integer of more than 4300
# digits (Python's conversion limit), in scenario files and profile.toml alike; and
# ``inf`` passed as a duration.  Fixed in parse_scenario, _Reader.take and _read_settings.
# Found by the property tests (the fuzzer does not build numbers that long).


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"duration = 1" + b"0" * 400, "duration: is far too large"),
        (b"duration = 1" + b"0" * 5000, "not valid TOML: Exceeds the limit"),
        (b"duration = inf", "duration: must be a finite number"),
        (b"[network]\nlatency_ms = nan", "latency_ms: must be a finite number"),
    ],
)
def test_numbers_beyond_a_float_are_scenario_errors(text: bytes, reason: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text.decode(), file="fuzz.toml")
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_profile_file_with_a_5000_digit_number_is_a_profile_error(tmp_path: Path) -> None:
    directory = tmp_path / "profile"
    load_or_create_identity(directory, display_name="ann")
    profile_path(directory).write_bytes(b"display_name = 1" + b"0" * 5000 + b"\n")
    with pytest.raises(ProfileError, match="is corrupt"):
        load_identity(directory)


# --- a WAV chunk that runs past its container -------------------------------------------------
# The wave module's chunk reader raises a bare RuntimeError when a chunk's size runs past
# the RIFF chunk holding it: here one byte inserted after "WAVE" shifts every chunk.
# Fixed in _read_wav.  Found by the property tests and the fuzzer (target audio).

WAV_WITH_AN_OVERRUNNING_CHUNK = (
    b"RIFF\xec\x00\x00\x00WAVE\x00fmt \x10\x00\x00\x00\x01\x00\x01\x00@\x1f\x00\x00@\x1f\x00\x00"
    b"\x01\x00\x08\x00data\xc8\x00\x00\x00" + bytes(range(200))
)


def test_a_wav_file_whose_chunk_overruns_its_container_is_an_audio_source_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "damaged.wav"
    path.write_bytes(WAV_WITH_AN_OVERRUNNING_CHUNK)
    with pytest.raises(AudioSourceError, match="not a valid WAV file") as caught:
        WavSource.open(path)
    assert str(path) in str(caught.value)


# --- a saved room file of the wrong shape -----------------------------------------------------
# `mitalk invite` read the room file's "addresses" without checking it was a list of text:
# a TypeError traceback.  Fixed in room_cli._load_room_file.  Found by the fuzzer (target
# profile-files) and the property tests.

ROOM_FILE_WITH_A_NUMBER_FOR_ADDRESSES = (
    b'{"room_id": "000102030405060708090a0b0c0d0e0f", "name": "Standup", "addresses": 5}'
)


def test_a_room_file_of_the_wrong_shape_is_one_error_line(tmp_path: Path) -> None:
    directory = tmp_path / "profile"
    load_or_create_identity(directory, display_name="ann")
    (directory / "rooms").mkdir()
    room = "000102030405060708090a0b0c0d0e0f"
    (directory / "rooms" / f"{room}.json").write_bytes(ROOM_FILE_WITH_A_NUMBER_FOR_ADDRESSES)
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        status = cli.main(["--profile", str(directory), "invite", "--room", room])
    assert status == cli.EXIT_ERROR
    assert err.getvalue().count("\n") == 1 and "is damaged" in err.getvalue()


# --- an invite file that is not text -------------------------------------------------------
# `mitalk join @FILE` caught OSError only, so a file that is not UTF-8 (a binary, or a
# token saved as UTF-16) gave a UnicodeDecodeError traceback.  Fixed in room_cli.cmd_join.

INVITE_FILE_IN_UTF_16 = b"\xff\xfem\x00i\x00t\x00a\x00l\x00k\x00:\x00"


def test_an_invite_file_that_is_not_utf_8_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "invite.txt"
    path.write_bytes(INVITE_FILE_IN_UTF_16)
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        status = cli.main(["--profile", str(tmp_path / "p"), "join", f"@{path}"])
    assert status == cli.EXIT_ERROR
    assert err.getvalue().count("\n") == 1 and "it is not text" in err.getvalue()


# --- an argument error of two lines -----------------------------------------------------------
# The bootstrap node's seconds options echoed the argument unquoted, so "0\n" gave an
# error message of two lines.  Found by the fuzzer (target cli-args, crash-a34df057...).

CLI_ARGS_CRASH = b"/0\n"
"""The fuzzer's input: the selector byte "/" picks the node's seconds option, then "0\\n"."""


def test_an_out_of_range_argument_with_a_newline_is_one_error_line() -> None:
    with pytest.raises(Exception, match="out of range") as caught:
        bootstrap_command._positive_seconds(CLI_ARGS_CRASH[1:].decode())
    assert "\n" not in str(caught.value)


# --- the fuzz harnesses -----------------------------------------------------------------------


FUZZER_CRASHES = [
    # What the fuzzer itself wrote (then shrank with -minimize_crash=1), as its targets take
    # them: a selector byte, then the parser's input.
    ("link", b"\x00\x00\x03\x00\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f\x10:1]:4"
             b"\xc2\xb21\x00\x01\x00\x00\x1d\x1e\x1f\x00\n[::1]:4\xc2\xb21"),
    ("audio", b"\x01RIFF\xb4\x01\x00\x00WAVEf\x00@\x17<a\x86\xab"),
    ("profile-files",
     b'\x02{"room_id":"000102030405060708090a0b0c0d0e0f","name":"","addresses":0}'),
    ("cli-args", b"\x8a\n" + b"3" * 70),
    ("cli-args", CLI_ARGS_CRASH),
]


@pytest.mark.parametrize(("target", "data"), FUZZER_CRASHES)
def test_what_the_fuzzer_found_is_refused_with_the_documented_error(
    target: str, data: bytes
) -> None:
    fuzz_targets.load(target).run(data)


@pytest.mark.parametrize(
    ("target", "data"),
    [
        ("link", b"\x00" + CONTACTS_WITH_A_SUPERSCRIPT_PORT),
        ("link", b"\x03127.0.0.1:\xc2\xb2"),
        ("bootstrap-node", b"\x02" + ANNOUNCEMENT_WITH_A_SUPERSCRIPT_PORT),
        ("bootstrap-node", b"\x04\x01\x01" + ANNOUNCEMENT_WITH_A_SUPERSCRIPT_PORT),
        ("scenario", b"\x00duration = 1" + b"0" * 400),
        ("profile-files", b"\x01display_name = 1" + b"0" * 5000),
        ("profile-files", b"\x02" + ROOM_FILE_WITH_A_NUMBER_FOR_ADDRESSES),
        ("audio", b"\x01" + WAV_WITH_AN_OVERRUNNING_CHUNK),
    ],
)
def test_the_crashing_inputs_pass_their_fuzz_target_now(target: str, data: bytes) -> None:
    fuzz_targets.load(target).run(data)


@pytest.mark.parametrize("name", fuzz_targets.names())
def test_every_fuzz_target_accepts_its_seeds_and_seeds_every_parser(name: str) -> None:
    target = fuzz_targets.load(name)
    seeds = target.seed_inputs()
    assert {data[0] for data in seeds} == set(range(len(target.parsers)))
    for data in seeds:
        target.run(data)


DICTIONARY_ENTRY = re.compile(r'"(?:[^"\\]|\\\\|\\"|\\x[0-9a-fA-F]{2})*"')
"""A libFuzzer dictionary line: a quoted token whose only escapes are \\\\, \\" and \\xAB."""


@pytest.mark.parametrize(
    "name", sorted({t.dictionary for t in map(fuzz_targets.load, fuzz_targets.names())
                    if t.dictionary})
)
def test_the_fuzz_dictionaries_are_in_libfuzzer_syntax(name: str) -> None:
    lines = (fuzz_run.DICTIONARIES / name).read_text(encoding="ascii").splitlines()
    entries = [line for line in lines if line and not line.startswith("#")]
    assert len(entries) >= 20
    for line in entries:
        assert DICTIONARY_ENTRY.fullmatch(line), line


def test_a_fuzz_check_reports_a_misbehaving_parser() -> None:
    """A check is not a blanket ``except``: a wrong result is a crash for the fuzzer."""
    target = fuzz_targets.load("control")
    with pytest.raises(AssertionError):
        fuzz_targets.expect(False, "a finding")
    with pytest.raises(KeyError, match="no fuzz target"):
        fuzz_targets.load("nonsense")
    assert target.parsers[0][0] == "message"


def test_scratch_directories_of_ended_fuzz_processes_are_removed() -> None:
    """libFuzzer skips atexit, so the next process cleans up after one that has ended."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    first = fuzz_targets.scratch_dir()
    stale = first.parent / f"{fuzz_targets.SCRATCH_PREFIX}{gone.pid}-left"
    stale.mkdir()
    (stale / "key").write_bytes(b"x")
    second = fuzz_targets.scratch_dir()
    assert not stale.exists()
    assert first.is_dir() and second.is_dir()  # this process is alive: its own are kept


def test_the_fuzz_runner_lists_its_targets_and_writes_seed_corpora(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fuzz_run.main(["run", "--list"]) == 0
    assert capsys.readouterr().out.split() == fuzz_targets.names()
    assert fuzz_run.main(["run", "--seed", str(tmp_path / "corpus"), "media"]) == 0
    written = sorted((tmp_path / "corpus").iterdir())
    assert len(written) == len(fuzz_targets.load("media").seed_inputs())
    assert fuzz_run.main(["run", "no-such-target"]) == 2
