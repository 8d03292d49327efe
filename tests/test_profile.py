"""The on-disk identity profile: creation, permissions, corruption and secrecy."""

from __future__ import annotations

import base64
import logging
import os
import re
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mitalk_p2p import profile
from mitalk_p2p.core.errors import LocalProtocolError
from mitalk_p2p.core.identity import Identity
from mitalk_p2p.profile import ProfileError


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def secret_renderings(identity: Identity) -> list[str]:
    """Every way the secret seed might leak into text."""
    seed = identity.secret_seed()
    return [
        seed.hex(),
        seed.hex().upper(),
        base64.b64encode(seed).decode(),
        base64.b64encode(seed).decode().rstrip("="),
        base64.urlsafe_b64encode(seed).decode().rstrip("="),
        base64.b32encode(seed).decode().rstrip("="),
        repr(seed),
    ]


def assert_no_secret(text: str, identity: Identity) -> None:
    for rendering in secret_renderings(identity):
        assert rendering not in text


@pytest.fixture
def profile_dir(tmp_path: Path) -> Path:
    return tmp_path / "config" / "mitalk"


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# -- creation and reloading ---------------------------------------------------------


def test_first_use_creates_profile(profile_dir: Path) -> None:
    identity, created = profile.load_or_create_identity(profile_dir, display_name="Alice")
    assert created
    assert identity.display_name == "Alice"
    assert profile.key_path(profile_dir).is_file()
    settings = tomllib.loads(profile.profile_path(profile_dir).read_text(encoding="utf-8"))
    assert settings["display_name"] == "Alice"
    assert sorted(p.name for p in profile_dir.iterdir()) == ["identity.key", "profile.toml"]


def test_key_file_is_0600_and_directory_0700(profile_dir: Path) -> None:
    profile.load_or_create_identity(profile_dir)
    assert mode_of(profile.key_path(profile_dir)) == 0o600
    assert mode_of(profile_dir) == 0o700


def test_modes_hold_under_a_permissive_umask(profile_dir: Path, permissive_umask: None) -> None:
    profile.load_or_create_identity(profile_dir)
    assert mode_of(profile.key_path(profile_dir)) == 0o600
    assert mode_of(profile_dir) == 0o700


def test_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    profile.load_or_create_identity(tmp_path)
    assert mode_of(tmp_path) == 0o755
    assert mode_of(profile.key_path(tmp_path)) == 0o600


def test_reload_gives_the_same_key(profile_dir: Path) -> None:
    first, created = profile.load_or_create_identity(profile_dir, display_name="Alice")
    again, created_again = profile.load_or_create_identity(profile_dir)
    loaded = profile.load_identity(profile_dir)
    assert created and not created_again
    assert first.secret_seed() == again.secret_seed() == loaded.secret_seed()
    assert first.public_key == again.public_key == loaded.public_key
    assert loaded.display_name == "Alice"


def test_load_identity_without_profile_fails(profile_dir: Path) -> None:
    with pytest.raises(ProfileError, match=r"no identity in .*mitalk id"):
        profile.load_identity(profile_dir)
    assert not profile_dir.exists()


def test_profile_error_is_a_local_protocol_error() -> None:
    assert issubclass(ProfileError, LocalProtocolError)


def test_an_existing_key_is_never_replaced(profile_dir: Path) -> None:
    identity, _ = profile.load_or_create_identity(profile_dir)
    path = profile.key_path(profile_dir)
    before = path.read_bytes()
    other = Identity.generate("other")
    # A second writer that lost the race must neither replace the key nor fail.
    assert profile._write_new_key(path, other.secret_seed()) is False
    assert path.read_bytes() == before
    assert sorted(p.name for p in profile_dir.iterdir()) == ["identity.key", "profile.toml"]
    assert profile.load_identity(profile_dir).public_key == identity.public_key


def test_profile_toml_missing_falls_back_to_default_name(
    profile_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGNAME", "carol")
    profile.load_or_create_identity(profile_dir, display_name="Alice")
    profile.profile_path(profile_dir).unlink()
    assert profile.load_identity(profile_dir).display_name == "carol"


# -- permissions --------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o604, 0o640, 0o644, 0o660, 0o666, 0o602, 0o620, 0o601])
def test_looser_permissions_are_refused(profile_dir: Path, mode: int) -> None:
    identity, _ = profile.load_or_create_identity(profile_dir)
    path = profile.key_path(profile_dir)
    before = path.read_bytes()
    path.chmod(mode)
    with pytest.raises(ProfileError) as info:
        profile.load_identity(profile_dir)
    message = str(info.value)
    assert str(path) in message
    assert f"{mode:04o}" in message
    assert f"chmod 600 {path}" in message
    assert_no_secret(message, identity)
    with pytest.raises(ProfileError, match="chmod 600"):
        profile.load_or_create_identity(profile_dir, display_name="Mallory")
    assert path.read_bytes() == before
    assert mode_of(path) == mode


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_owner_only_permissions_are_accepted(profile_dir: Path, mode: int) -> None:
    identity, _ = profile.load_or_create_identity(profile_dir)
    profile.key_path(profile_dir).chmod(mode)
    assert profile.load_identity(profile_dir).public_key == identity.public_key


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_key_file_owned_by_someone_else_is_refused(profile_dir: Path) -> None:
    profile.load_or_create_identity(profile_dir)
    path = profile.key_path(profile_dir)
    os.chown(path, 65534, -1)
    with pytest.raises(ProfileError, match="belongs to uid 65534"):
        profile.load_identity(profile_dir)


def test_key_path_that_is_a_directory_is_refused(profile_dir: Path) -> None:
    profile.key_path(profile_dir).mkdir(parents=True)
    with pytest.raises(ProfileError, match="not a regular file"):
        profile.load_or_create_identity(profile_dir)


def test_profile_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "not-a-dir"
    target.write_text("hello", encoding="utf-8")
    with pytest.raises(ProfileError, match=r"(?i)not a directory"):
        profile.load_or_create_identity(target)
    assert target.read_text(encoding="utf-8") == "hello"


# -- corruption ---------------------------------------------------------------------


def _valid_key_file(seed: bytes) -> bytes:
    return profile.KEY_FILE_HEADER + b"\n" + base64.b64encode(seed) + b"\n"


CORRUPT_CONTENTS = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\x00" * 32, id="raw-bytes"),
    pytest.param(b"hello world\n", id="no-header"),
    pytest.param(profile.KEY_FILE_HEADER + b"\n", id="no-key"),
    pytest.param(profile.KEY_FILE_HEADER + b"\nnot base64!!\n", id="bad-base64"),
    pytest.param(profile.KEY_FILE_HEADER + b"\n" + base64.b64encode(b"x" * 31) + b"\n", id="short"),
    pytest.param(_valid_key_file(b"k" * 32) + b"trailing\n", id="trailing-line"),
    pytest.param(b"\xff\xfe" * 5000, id="huge-binary"),
]


@pytest.mark.parametrize("contents", CORRUPT_CONTENTS)
def test_corrupt_key_file_is_an_error_and_left_untouched(
    profile_dir: Path, contents: bytes
) -> None:
    profile_dir.mkdir(parents=True)
    path = profile.key_path(profile_dir)
    path.write_bytes(contents)
    path.chmod(0o600)
    for attempt in (
        lambda: profile.load_identity(profile_dir),
        lambda: profile.load_or_create_identity(profile_dir),
        lambda: profile.load_or_create_identity(profile_dir, display_name="Alice"),
        lambda: profile.set_display_name(profile_dir, "Alice"),
    ):
        with pytest.raises(ProfileError, match="corrupt") as info:
            attempt()
        assert str(path) in str(info.value)
        assert path.read_bytes() == contents
    assert sorted(p.name for p in profile_dir.iterdir()) == ["identity.key"]


def test_corrupt_error_does_not_echo_key_material(profile_dir: Path) -> None:
    identity, _ = profile.load_or_create_identity(profile_dir)
    path = profile.key_path(profile_dir)
    path.write_bytes(path.read_bytes() + b"junk\n")
    with pytest.raises(ProfileError, match="corrupt") as info:
        profile.load_identity(profile_dir)
    assert_no_secret(str(info.value), identity)
    assert_no_secret(repr(info.value), identity)


def test_corrupt_profile_toml_is_an_error_and_left_untouched(profile_dir: Path) -> None:
    profile.load_or_create_identity(profile_dir, display_name="Alice")
    path = profile.profile_path(profile_dir)
    path.write_text('display_name = "unterminated\n', encoding="utf-8")
    with pytest.raises(ProfileError, match=re.escape(f"{path} is corrupt")):
        profile.load_identity(profile_dir)
    with pytest.raises(ProfileError, match="corrupt"):
        profile.set_display_name(profile_dir, "Bob")
    assert path.read_text(encoding="utf-8") == 'display_name = "unterminated\n'


def test_display_name_of_wrong_type_in_profile_toml(profile_dir: Path) -> None:
    profile.load_or_create_identity(profile_dir)
    profile.profile_path(profile_dir).write_text("display_name = 42\n", encoding="utf-8")
    with pytest.raises(ProfileError, match="must be a string"):
        profile.load_identity(profile_dir)


# -- display names ------------------------------------------------------------------


def test_set_display_name_persists(profile_dir: Path) -> None:
    identity, _ = profile.load_or_create_identity(profile_dir, display_name="Alice")
    assert profile.set_display_name(profile_dir, "  Bob  ") == "Bob"
    reloaded = profile.load_identity(profile_dir)
    assert reloaded.display_name == "Bob"
    assert reloaded.public_key == identity.public_key


def test_load_or_create_with_name_renames_existing_profile(profile_dir: Path) -> None:
    first, _ = profile.load_or_create_identity(profile_dir, display_name="Alice")
    renamed, created = profile.load_or_create_identity(profile_dir, display_name="Alicia")
    assert not created
    assert renamed.display_name == "Alicia"
    assert renamed.public_key == first.public_key


def test_set_display_name_needs_an_existing_profile(profile_dir: Path) -> None:
    with pytest.raises(ProfileError, match="no identity"):
        profile.set_display_name(profile_dir, "Bob")


@pytest.mark.parametrize(
    "name",
    [
        'Zoë "the voice"',
        "back\\slash",
        "C:\\new\\table",
        "'single' quotes",
        "x = 1 # not a comment",
        "[section]",
        "日本語の名前",
        "emoji 🎙️",
        '"""',
        "a" * 40,
    ],
)
def test_display_name_round_trips_through_toml(profile_dir: Path, name: str) -> None:
    profile.load_or_create_identity(profile_dir, display_name=name)
    assert profile.load_identity(profile_dir).display_name == name
    text = profile.profile_path(profile_dir).read_text(encoding="utf-8")
    assert tomllib.loads(text)["display_name"] == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "a" * 41,
        "line\nbreak",
        "tab\there",
        "nul\x00",
        "bell\x07",
        "del\x7f",
        "bidi\u202eevil",
        "zero\u200bwidth",
        "lone\ud800surrogate",
    ],
)
def test_invalid_display_names_are_refused(profile_dir: Path, name: str) -> None:
    with pytest.raises(ProfileError, match="display name"):
        profile.validate_display_name(name)
    with pytest.raises(ProfileError, match="display name"):
        profile.load_or_create_identity(profile_dir, display_name=name)
    assert not profile_dir.exists()


def test_invalid_rename_leaves_profile_untouched(profile_dir: Path) -> None:
    profile.load_or_create_identity(profile_dir, display_name="Alice")
    before = profile.profile_path(profile_dir).read_bytes()
    with pytest.raises(ProfileError):
        profile.set_display_name(profile_dir, "x" * 41)
    assert profile.profile_path(profile_dir).read_bytes() == before


def test_display_name_is_normalised_to_nfc() -> None:
    assert profile.validate_display_name("Zoe\u0308") == "Zo\u00eb"


def test_unknown_settings_survive_a_rename(profile_dir: Path) -> None:
    profile.load_or_create_identity(profile_dir, display_name="Alice")
    path = profile.profile_path(profile_dir)
    path.write_text(
        'display_name = "Alice"\ncolour = "blue"\nvolume = 0.5\nmuted = false\n'
        'hints = ["a", "b"]\n"odd key" = 3\n',
        encoding="utf-8",
    )
    profile.set_display_name(profile_dir, "Bob")
    assert tomllib.loads(path.read_text(encoding="utf-8")) == {
        "display_name": "Bob",
        "colour": "blue",
        "volume": 0.5,
        "muted": False,
        "hints": ["a", "b"],
        "odd key": 3,
    }


def test_settings_that_cannot_be_written_back_are_not_dropped(profile_dir: Path) -> None:
    profile.load_or_create_identity(profile_dir, display_name="Alice")
    path = profile.profile_path(profile_dir)
    original = 'display_name = "Alice"\n[audio]\ndevice = "hw:1"\n'
    path.write_text(original, encoding="utf-8")
    with pytest.raises(ProfileError, match="audio"):
        profile.set_display_name(profile_dir, "Bob")
    assert path.read_text(encoding="utf-8") == original


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LOGNAME": "alice", "USER": "bob"}, "alice"),
        ({"USER": "bob"}, "bob"),
        ({"USERNAME": "win"}, "win"),
        ({}, "anonymous"),
        ({"USER": ""}, "anonymous"),
        ({"USER": "x" * 41}, "anonymous"),
        ({"LOGNAME": "bad\nname", "USER": "bob"}, "bob"),
    ],
)
def test_default_display_name(env: dict[str, str], expected: str) -> None:
    assert profile.default_display_name(env) == expected


def test_new_profile_without_name_uses_login_name(
    profile_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGNAME", "dora")
    identity, _ = profile.load_or_create_identity(profile_dir)
    assert identity.display_name == "dora"
    monkeypatch.setenv("LOGNAME", "someone-else")
    assert profile.load_identity(profile_dir).display_name == "dora"


# -- locating the profile -----------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"XDG_CONFIG_HOME": "/xdg", "HOME": "/home/u"}, "/xdg/mitalk"),
        ({"HOME": "/home/u"}, "/home/u/.config/mitalk"),
        ({"XDG_CONFIG_HOME": "", "HOME": "/home/u"}, "/home/u/.config/mitalk"),
        # The XDG spec says relative paths are invalid and must be ignored.
        ({"XDG_CONFIG_HOME": "relative/dir", "HOME": "/home/u"}, "/home/u/.config/mitalk"),
        ({"XDG_CONFIG_HOME": "/xdg"}, "/xdg/mitalk"),
    ],
)
def test_default_profile_dir(env: dict[str, str], expected: str) -> None:
    assert profile.default_profile_dir(env) == Path(expected)


@pytest.mark.parametrize("env", [{}, {"HOME": ""}, {"HOME": "relative"}])
def test_default_profile_dir_needs_a_home(env: dict[str, str]) -> None:
    with pytest.raises(ProfileError, match="--profile"):
        profile.default_profile_dir(env)


# -- secrecy ------------------------------------------------------------------------


def test_secret_never_in_repr_str_or_logs(
    profile_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        identity, _ = profile.load_or_create_identity(profile_dir, display_name="Alice")
        loaded = profile.load_identity(profile_dir)
        profile.set_display_name(profile_dir, "Bob")
    assert caplog.records, "creating a profile logs what it did"
    for text in (repr(identity), str(identity), repr(loaded), str(loaded), caplog.text):
        assert_no_secret(text, identity)
    assert identity.fingerprint in caplog.text


def test_secret_never_in_error_messages(profile_dir: Path) -> None:
    identity, _ = profile.load_or_create_identity(profile_dir)
    path = profile.key_path(profile_dir)
    errors: list[ProfileError] = []
    path.chmod(0o644)
    with pytest.raises(ProfileError) as loose:
        profile.load_identity(profile_dir)
    errors.append(loose.value)
    path.chmod(0o600)
    path.write_bytes(path.read_bytes()[:-5] + b"!!!!\n")
    with pytest.raises(ProfileError) as corrupt:
        profile.load_identity(profile_dir)
    errors.append(corrupt.value)
    for error in errors:
        assert_no_secret(str(error), identity)
        assert_no_secret(repr(error), identity)
        assert error.__cause__ is None
