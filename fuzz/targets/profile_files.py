"""The files of a profile: the identity key file, ``profile.toml`` and saved room files."""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

from mitalk_p2p import cli
from mitalk_p2p.core.errors import MitalkError
from mitalk_p2p.profile import (
    KEY_FILE_HEADER,
    ProfileError,
    key_path,
    load_identity,
    load_or_create_identity,
    profile_path,
)

from . import Target, expect, scratch_dir

ROOM_HEX = bytes(range(16)).hex()


@functools.cache
def profile_dir() -> Path:
    """A profile made once per run, removed at exit; each input rewrites one of its files."""
    directory = scratch_dir() / "profile"
    load_or_create_identity(directory, display_name="fuzz")
    (directory / "rooms").mkdir(mode=0o700)
    return directory


@functools.cache
def good_files() -> tuple[bytes, bytes]:
    directory = profile_dir()
    return key_path(directory).read_bytes(), profile_path(directory).read_bytes()


def _load_with(path: Path, data: bytes) -> None:
    """Load the profile with ``data`` in ``path``: an identity, or a one-line ProfileError."""
    key, settings = good_files()
    directory = profile_dir()
    _write(key_path(directory), key)
    _write(profile_path(directory), settings)
    _write(path, data)
    try:
        identity = load_identity(directory)
    except ProfileError as error:
        expect("\n" not in str(error), "a profile error of more than one line")
        return
    expect(bool(identity.display_name), "an identity without a name was loaded")


_written: dict[Path, bytes] = {}


def _write(path: Path, data: bytes) -> None:
    """Put ``data`` in ``path`` (mode 0600) unless it is there already."""
    if _written.get(path) != data:
        path.write_bytes(data)
        os.chmod(path, 0o600)
        _written[path] = data


def check_key_file(data: bytes) -> None:
    _load_with(key_path(profile_dir()), data)


def check_settings(data: bytes) -> None:
    _load_with(profile_path(profile_dir()), data)


@functools.cache
def invite_command() -> tuple[argparse.Namespace, cli.Context]:
    """``mitalk invite --room ROOM``, parsed once (building the parser is the slow part)."""
    directory = profile_dir()
    args = cli.build_parser().parse_args(["--profile", str(directory), "invite", "--room",
                                          ROOM_HEX])
    return args, cli.Context(profile_override=directory, env=os.environ, out=io.StringIO())


def check_room_file(data: bytes) -> None:
    """``mitalk invite`` on a damaged saved room file: an invite, or one error line."""
    _load_with(profile_path(profile_dir()), good_files()[1])
    _write(profile_dir() / "rooms" / f"{ROOM_HEX}.json", data)
    args, context = invite_command()
    try:
        status = args.handler(args, context)
    except MitalkError as error:  # what `mitalk` prints as its one error line
        expect("\n" not in str(error), "an invite error of more than one line")
        return
    expect(status == 0, f"invite exited with {status} and no error")


def seeds() -> Iterator[tuple[str, bytes]]:
    key, settings = good_files()
    yield "key-file", key
    yield "key-file", key.replace(b"\n", b"\r\n")
    yield "key-file", KEY_FILE_HEADER + b"\n"
    yield "settings", settings
    yield "settings", b'display_name = "Ann \\u00e9"\n[audio]\ninput = "mic"\n'
    room = {"room_id": ROOM_HEX, "name": "Standup", "addresses": ["127.0.0.1:7000"],
            "saved_at": 1_700_000_000.0}
    yield "room-file", json.dumps(room, indent=2).encode()


TARGET = Target(
    "profile-files",
    "a profile's identity key file, its profile.toml, and the room files `mitalk invite` reads",
    (("key-file", check_key_file), ("settings", check_settings), ("room-file", check_room_file)),
    seeds,
    dictionary="text.dict",
)
