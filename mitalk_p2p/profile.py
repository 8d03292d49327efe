"""The on-disk identity profile: one Ed25519 key pair and a display name per directory.

A profile directory holds two files:

``identity.key``
    The 32-byte secret seed, base64-encoded under a one-line header.  The file is
    created atomically with mode 0600 and never replaced once it exists.  A key
    file that group or others can access is refused, and so is one that does
    not parse: it is left exactly as it is, so nothing is ever lost.
``profile.toml``
    Settings that are not secret, such as ``display_name``.  Top-level keys this
    module does not know are kept when the file is rewritten.

The default profile lives in the user's XDG config directory
(``$XDG_CONFIG_HOME/mitalk`` or ``~/.config/mitalk``); ``mitalk --profile DIR``
uses DIR directly.  The secret seed never appears in a log line, a repr or an
error message.
"""

from __future__ import annotations

import base64
import binascii
import errno
import logging
import math
import os
import secrets
import stat
import tomllib
import unicodedata
from collections.abc import Mapping
from pathlib import Path

from .core.errors import LocalProtocolError
from .core.identity import SEED_SIZE, Identity

logger = logging.getLogger(__name__)

APP_DIR_NAME = "mitalk"
KEY_FILE_NAME = "identity.key"
PROFILE_FILE_NAME = "profile.toml"
KEY_FILE_HEADER = b"mitalk ed25519 secret seed v1"
DEFAULT_DISPLAY_NAME = "anonymous"
MAX_DISPLAY_NAME_LENGTH = 40

_KEY_FILE_MODE = 0o600
_PROFILE_DIR_MODE = 0o700
_MAX_KEY_FILE_SIZE = 4096
_MAX_PROFILE_FILE_SIZE = 64 * 1024

_TomlScalar = str | bool | int | float
_TomlValue = _TomlScalar | list[_TomlScalar]


class ProfileError(LocalProtocolError):
    """The profile directory or one of its files can't be used as it is.

    Messages name the file and say how to fix it; they never contain key material.
    """


# -- locating profiles --------------------------------------------------------------


def default_profile_dir(env: Mapping[str, str]) -> Path:
    """The default profile directory for the environment ``env`` (e.g. ``os.environ``).

    Follows the XDG base directory spec: ``$XDG_CONFIG_HOME/mitalk`` when that
    variable holds an absolute path, otherwise ``$HOME/.config/mitalk``.
    """
    xdg = env.get("XDG_CONFIG_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / APP_DIR_NAME
    home = env.get("HOME", "")
    if home and os.path.isabs(home):
        return Path(home) / ".config" / APP_DIR_NAME
    raise ProfileError(
        "can't locate the config directory: neither XDG_CONFIG_HOME nor HOME is set "
        "to an absolute path; set one of them or pass --profile DIR"
    )


def key_path(profile_dir: Path) -> Path:
    """Where the secret key of the profile in ``profile_dir`` lives."""
    return profile_dir / KEY_FILE_NAME


def profile_path(profile_dir: Path) -> Path:
    """Where the settings of the profile in ``profile_dir`` live."""
    return profile_dir / PROFILE_FILE_NAME


# -- display names ------------------------------------------------------------------


def validate_display_name(name: str) -> str:
    """Return ``name`` in canonical form (NFC, outer whitespace stripped) or raise.

    A display name is 1 to 40 printable characters.  Control characters, line
    breaks, tabs and invisible formatting characters (such as bidi overrides)
    are refused, because other peers show the name in their terminals.
    """
    canonical = unicodedata.normalize("NFC", name).strip()
    if not canonical:
        raise ProfileError("display name must not be empty")
    if len(canonical) > MAX_DISPLAY_NAME_LENGTH:
        raise ProfileError(
            f"display name is {len(canonical)} characters long; "
            f"the limit is {MAX_DISPLAY_NAME_LENGTH}"
        )
    for char in canonical:
        if not char.isprintable():
            raise ProfileError(
                f"display name contains the non-printable character U+{ord(char):04X}"
            )
    return canonical


def default_display_name(env: Mapping[str, str]) -> str:
    """The login name from ``env`` if it is a valid display name, else ``"anonymous"``."""
    for variable in ("LOGNAME", "USER", "USERNAME"):
        candidate = env.get(variable, "")
        if candidate:
            try:
                return validate_display_name(candidate)
            except ProfileError:
                continue
    return DEFAULT_DISPLAY_NAME


# -- public API ---------------------------------------------------------------------


def load_identity(profile_dir: Path) -> Identity:
    """Load the identity stored in ``profile_dir``.

    Raises :class:`ProfileError` if there is none, if the key file is readable by
    group or others, or if a file does not parse.
    """
    path = key_path(profile_dir)
    seed = _read_key_file(path)
    if seed is None:
        raise ProfileError(
            f"no identity in {profile_dir} ({path} does not exist); run `mitalk id` to create one"
        )
    settings = _read_settings(profile_path(profile_dir))
    return Identity.from_seed(seed, _stored_display_name(settings, profile_dir))


def load_or_create_identity(
    profile_dir: Path, *, display_name: str | None = None
) -> tuple[Identity, bool]:
    """Load the identity in ``profile_dir``, creating the profile on first use.

    Returns the identity and whether it was created by this call.  When
    ``display_name`` is given it becomes the stored display name, for a new
    profile and an existing one alike; a new profile without one gets
    :func:`default_display_name` of the process environment.

    An existing key file is never replaced, even when two processes create the
    same profile at once: the one that loses the race loads the winner's key.
    """
    name = validate_display_name(display_name) if display_name is not None else None
    path = key_path(profile_dir)
    seed = _read_key_file(path)
    created = False
    if seed is None:
        _ensure_profile_dir(profile_dir)
        candidate = Identity.generate(name or default_display_name(os.environ))
        if _write_new_key(path, candidate.secret_seed()):
            created = True
            logger.info("created identity %s in %s", candidate.fingerprint, profile_dir)
            if name is None:
                name = candidate.display_name
        seed = _read_key_file(path)
        if seed is None:
            raise ProfileError(f"{path} disappeared while the profile was being created")
    if name is not None:
        _update_settings(profile_dir, display_name=name)
    return load_identity(profile_dir), created


def set_display_name(profile_dir: Path, name: str) -> str:
    """Store a new display name in the profile and return it in canonical form.

    The profile must already exist; the key file is checked but not touched.
    """
    canonical = validate_display_name(name)
    load_identity(profile_dir)
    _update_settings(profile_dir, display_name=canonical)
    return canonical


# -- the key file -------------------------------------------------------------------


def _encode_key_file(seed: bytes) -> bytes:
    return KEY_FILE_HEADER + b"\n" + base64.b64encode(seed) + b"\n"


def _decode_key_file(path: Path, data: bytes) -> bytes:
    """Parse key-file contents.  Errors describe the problem, never the bytes."""

    def corrupt(reason: str) -> ProfileError:
        return ProfileError(
            f"identity key file {path} is corrupt ({reason}); it has been left untouched. "
            f"Restore it from a backup, or move it aside to create a new identity."
        )

    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines or lines[0].rstrip(b"\r") != KEY_FILE_HEADER:
        raise corrupt("missing the mitalk key header")
    if len(lines) != 2:
        raise corrupt(f"expected 2 lines, found {len(lines)}")
    try:
        seed = base64.b64decode(lines[1].rstrip(b"\r"), validate=True)
    except (binascii.Error, ValueError):
        raise corrupt("the key is not valid base64") from None
    if len(seed) != SEED_SIZE:
        raise corrupt(f"the key is {len(seed)} bytes, expected {SEED_SIZE}")
    return seed


def _read_key_file(path: Path) -> bytes | None:
    """The seed stored at ``path``, or None if there is no file there."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ProfileError(f"can't open identity key file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        _check_key_file_status(path, info)
        data = b""
        while len(data) <= _MAX_KEY_FILE_SIZE:
            chunk = os.read(fd, _MAX_KEY_FILE_SIZE + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise ProfileError(f"can't read identity key file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE_SIZE:
        raise ProfileError(
            f"identity key file {path} is corrupt (larger than {_MAX_KEY_FILE_SIZE} bytes); "
            f"it has been left untouched"
        )
    return _decode_key_file(path, data)


def _check_key_file_status(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ProfileError(f"identity key file {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise ProfileError(
            f"identity key file {path} has permissions {mode:04o}, so other users may read "
            f"or change it; refusing to use it. Fix with: chmod 600 {path}"
        )
    euid = os.geteuid()
    if info.st_uid != euid:
        raise ProfileError(
            f"identity key file {path} belongs to uid {info.st_uid}, not to you (uid {euid}); "
            f"refusing to use it"
        )


def _ensure_profile_dir(profile_dir: Path) -> None:
    """Create ``profile_dir`` with mode 0700 if it does not exist.

    An existing directory keeps its permissions: it may be one the user chose
    with ``--profile``, and the key file is private on its own.
    """
    try:
        profile_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(profile_dir, _PROFILE_DIR_MODE)
        except FileExistsError:
            if not profile_dir.is_dir():
                raise ProfileError(f"profile path {profile_dir} is not a directory") from None
            return
        os.chmod(profile_dir, _PROFILE_DIR_MODE)
    except OSError as exc:
        raise ProfileError(
            f"can't create profile directory {profile_dir}: {exc.strerror}"
        ) from None
    logger.debug("created profile directory %s", profile_dir)


def _write_new_key(path: Path, seed: bytes) -> bool:
    """Atomically create the key file at ``path`` holding ``seed``.

    The key is written to a fresh temporary file (``O_CREAT | O_EXCL``, mode
    0600), flushed to disk, and then linked into place.  Linking, unlike a plain
    rename, fails when ``path`` already exists, so an existing key is never
    replaced.  Returns False if another key got there first.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, _KEY_FILE_MODE)
        try:
            os.fchmod(fd, _KEY_FILE_MODE)
            _write_all_and_sync(fd, _encode_key_file(seed))
        finally:
            os.close(fd)
        return _link_into_place(tmp, path)
    except OSError as exc:
        raise ProfileError(f"can't create identity key file {path}: {exc.strerror}") from None
    finally:
        _remove_temporary(tmp)


def _write_all_and_sync(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def _remove_temporary(tmp: Path) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("can't remove temporary file %s: %s", tmp, exc.strerror)


def _link_into_place(tmp: Path, path: Path) -> bool:
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # This file system has no hard links: fall back to a rename, after
        # checking that nothing is in the way.
        if os.path.lexists(path):
            return False
        os.rename(tmp, path)
    _fsync_dir(path.parent)
    return True


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- profile.toml -------------------------------------------------------------------


def _read_settings(path: Path) -> dict[str, object]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ProfileError(f"can't read profile file {path}: {exc.strerror}") from None
    if len(data) > _MAX_PROFILE_FILE_SIZE:
        raise ProfileError(f"profile file {path} is too large ({len(data)} bytes)")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except ValueError as exc:  # bad UTF-8, bad TOML, or an integer too long to convert
        raise ProfileError(
            f"profile file {path} is corrupt ({exc}); it has been left untouched. Fix or remove it."
        ) from None


def _stored_display_name(settings: Mapping[str, object], profile_dir: Path) -> str:
    name = settings.get("display_name")
    if name is None:
        return default_display_name(os.environ)
    path = profile_path(profile_dir)
    if not isinstance(name, str):
        raise ProfileError(f"display_name in {path} must be a string")
    try:
        return validate_display_name(name)
    except ProfileError as exc:
        raise ProfileError(f"invalid display_name in {path}: {exc}") from None


def _update_settings(profile_dir: Path, **changes: _TomlValue) -> None:
    """Rewrite ``profile.toml`` atomically with ``changes`` applied."""
    path = profile_path(profile_dir)
    settings = _read_settings(path)
    settings.update(changes)
    text = _dump_settings(path, settings)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(tmp, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            _write_all_and_sync(fd, text.encode("utf-8"))
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise ProfileError(f"can't write profile file {path}: {exc.strerror}") from None
    finally:
        _remove_temporary(tmp)


def _dump_settings(path: Path, settings: Mapping[str, object]) -> str:
    lines = ["# mitalk profile settings; the secret key is in identity.key, not here."]
    for key in sorted(settings):
        lines.append(f"{_toml_key(key)} = {_toml_value(path, key, settings[key])}")
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    if key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key):
        return key
    return _toml_string(key)


def _toml_value(path: Path, key: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list) and not any(isinstance(item, list | dict) for item in value):
        return "[" + ", ".join(_toml_value(path, key, item) for item in value) + "]"
    raise ProfileError(
        f"can't rewrite {path}: the setting {key!r} has a form this version can't "
        f"write back; edit the file by hand instead"
    )


_TOML_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


def _toml_string(value: str) -> str:
    """``value`` as a TOML basic string, escaping quotes, backslashes and controls."""
    out = ['"']
    for char in value:
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        elif 0xD800 <= ord(char) <= 0xDFFF:
            raise ProfileError("text contains a lone surrogate and can't be stored")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)
