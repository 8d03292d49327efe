"""Parsers outside the protocol core: profile files and typed-in names give only typed errors."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from mitalk_p2p.core.errors import WireError
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.roles import Role
from mitalk_p2p.profile import (
    ProfileError,
    key_path,
    load_identity,
    load_or_create_identity,
    profile_path,
    validate_display_name,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fresh_profile(root: Path, tag: str) -> Path:
    directory = root / tag
    identity, created = load_or_create_identity(directory, display_name="ann")
    assert created and identity.display_name == "ann"
    return directory


@FUZZ
@given(data=st.binary(max_size=200))
def test_random_key_file_contents_are_refused_and_left_untouched(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    directory = _fresh_profile(tmp_path_factory.mktemp("p"), "random")
    path = key_path(directory)
    path.write_bytes(data)
    os.chmod(path, 0o600)
    try:
        load_identity(directory)
    except ProfileError as exc:
        assert str(path) in str(exc)
    assert path.read_bytes() == data


@FUZZ
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_mutated_key_files_never_raise_anything_but_profile_error(
    tmp_path_factory: pytest.TempPathFactory, position: int, value: int
) -> None:
    directory = _fresh_profile(tmp_path_factory.mktemp("p"), "mutated")
    path = key_path(directory)
    original = bytearray(path.read_bytes())
    original[position % len(original)] = value
    path.write_bytes(bytes(original))
    with contextlib.suppress(ProfileError):
        load_identity(directory)
    assert path.read_bytes() == bytes(original)


@FUZZ
@given(text=st.text(max_size=200))
def test_random_profile_settings_give_only_profile_errors(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    directory = _fresh_profile(tmp_path_factory.mktemp("p"), "settings")
    profile_path(directory).write_text(text, encoding="utf-8")
    try:
        identity = load_identity(directory)
    except ProfileError:
        return
    assert validate_display_name(identity.display_name) == identity.display_name


@FUZZ
@given(name=st.text(max_size=80))
def test_display_names_are_accepted_or_refused_with_a_profile_error(name: str) -> None:
    try:
        cleaned = validate_display_name(name)
    except ProfileError:
        return
    assert 1 <= len(cleaned) <= 40 and cleaned.isprintable()


@FUZZ
@given(text=st.text(max_size=64))
def test_room_id_hex_gives_only_wire_errors(text: str) -> None:
    try:
        room = RoomId.from_hex(text)
    except WireError:
        return
    assert RoomId.from_hex(room.hex) == room


@FUZZ
@given(text=st.text(max_size=20))
def test_role_names_give_only_value_errors(text: str) -> None:
    try:
        role = Role.parse(text)
    except ValueError as exc:
        assert "expected one of" in str(exc)
        return
    assert Role.parse(role.label) is role
