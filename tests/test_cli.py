"""The ``mitalk`` command line, run in-process through ``main()`` and once for real."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, TextIO

import pytest

from mitalk_p2p import cli, profile
from mitalk_p2p.core.errors import LocalProtocolError, RemoteProtocolError


@pytest.fixture(autouse=True)
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default profile at a temporary directory for every test."""
    config = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.setenv("LOGNAME", "tester")
    return config


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert cli.main([*argv, "--json"]) == 0
    out = capsys.readouterr().out
    data: dict[str, Any] = json.loads(out)
    return data


# -- mitalk id ----------------------------------------------------------------------


def test_id_creates_then_reuses_the_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile_dir = tmp_path / "p"
    assert cli.main(["--profile", str(profile_dir), "id"]) == 0
    first = capsys.readouterr()
    assert first.err == ""
    assert "created just now" in first.out
    assert "display name: tester" in first.out
    assert f"profile:      {profile_dir}" in first.out

    assert cli.main(["--profile", str(profile_dir), "id"]) == 0
    second = capsys.readouterr().out
    assert "existing" in second
    identity = profile.load_identity(profile_dir)
    for out in (first.out, second):
        assert identity.fingerprint in out
        assert identity.public_key.raw.hex() in out
        assert identity.secret_seed().hex() not in out


def test_id_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile_dir = tmp_path / "p"
    first = run_json(capsys, "--profile", str(profile_dir), "id")
    second = run_json(capsys, "--profile", str(profile_dir), "id")
    identity = profile.load_identity(profile_dir)
    assert first == {
        "display_name": "tester",
        "fingerprint": identity.fingerprint,
        "public_key": identity.public_key.raw.hex(),
        "profile": str(profile_dir),
        "created": True,
    }
    assert second == {**first, "created": False}


def test_id_uses_the_xdg_config_dir_by_default(
    isolated_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = run_json(capsys, "id")
    assert data["profile"] == str(isolated_config / "mitalk")
    assert stat.S_IMODE((isolated_config / "mitalk" / "identity.key").stat().st_mode) == 0o600


def test_id_name_sets_the_display_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile_dir = str(tmp_path / "p")
    created = run_json(capsys, "--profile", profile_dir, "id", "--name", "Alice")
    assert created["display_name"] == "Alice"
    assert created["created"] is True
    renamed = run_json(capsys, "--profile", profile_dir, "id", "--name", 'Zoë "Z" \\')
    assert renamed["display_name"] == 'Zoë "Z" \\'
    assert renamed["fingerprint"] == created["fingerprint"]
    assert run_json(capsys, "--profile", profile_dir, "id")["display_name"] == 'Zoë "Z" \\'


def test_global_options_work_after_the_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile_dir = tmp_path / "after"
    data = run_json(capsys, "id", "--profile", str(profile_dir))
    assert data["profile"] == str(profile_dir)
    before = tmp_path / "before"
    assert run_json(capsys, "--profile", str(before), "id", "-v")["profile"] == str(before)


def test_profile_option_expands_tilde(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    data = run_json(capsys, "--profile", "~/prof", "id")
    assert data["profile"] == str(tmp_path / "prof")


def test_verbose_logs_to_stderr_without_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile_dir = tmp_path / "p"
    assert cli.main(["-vv", "--profile", str(profile_dir), "id"]) == 0
    err = capsys.readouterr().err
    identity = profile.load_identity(profile_dir)
    assert "INFO mitalk_p2p.profile: created identity" in err
    assert identity.fingerprint in err
    assert identity.secret_seed().hex() not in err


def test_quiet_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--profile", str(tmp_path / "p"), "id"]) == 0
    assert capsys.readouterr().err == ""


# -- errors -------------------------------------------------------------------------


def assert_error(capsys: pytest.CaptureFixture[str], status: int, *fragments: str) -> str:
    assert status == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "mitalk: error: " in captured.err
    assert "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in captured.err
    return captured.err


def test_invalid_name_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["--profile", str(tmp_path / "p"), "id", "--name", "x" * 41])
    assert_error(capsys, status, "display name")
    assert not (tmp_path / "p").exists()


def test_loose_key_permissions_are_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile_dir = tmp_path / "p"
    profile.load_or_create_identity(profile_dir)
    key = profile.key_path(profile_dir)
    key.chmod(0o644)
    status = cli.main(["--profile", str(profile_dir), "id"])
    err = assert_error(capsys, status, str(key), "0644", f"chmod 600 {key}")
    assert err.startswith("mitalk: error: ")


def test_corrupt_key_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile_dir = tmp_path / "p"
    profile_dir.mkdir()
    key = profile.key_path(profile_dir)
    key.write_bytes(b"garbage")
    key.chmod(0o600)
    assert_error(capsys, cli.main(["--profile", str(profile_dir), "id"]), "corrupt", str(key))
    assert key.read_bytes() == b"garbage"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ([], "required: COMMAND"),
        (["no-such-command"], "invalid choice"),
        (["id", "--bogus"], "unrecognized arguments: --bogus"),
        (["--profile"], "expected one argument"),
        (["id", "--name"], "expected one argument"),
    ],
)
def test_bad_usage(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = assert_error(capsys, cli.main(argv), fragment)
    assert err.startswith("usage: mitalk")


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "id" in out and "demo" in out and "--profile" in out


def test_missing_home_is_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.delenv("HOME", raising=False)
    assert_error(capsys, cli.main(["id"]), "--profile DIR")


def test_ctrl_c_exits_130_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(profile, "load_or_create_identity", interrupted)
    assert cli.main(["--profile", str(tmp_path / "p"), "id"]) == 130
    assert capsys.readouterr() == ("", "")


def test_errors_from_a_nursery_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failed(*args: object, **kwargs: object) -> Any:
        raise ExceptionGroup(
            "", [LocalProtocolError("first problem"), RemoteProtocolError("second problem")]
        )

    monkeypatch.setattr(profile, "load_or_create_identity", failed)
    status = cli.main(["--profile", str(tmp_path / "p"), "id"])
    assert_error(capsys, status, "mitalk: error: first problem", "mitalk: error: second problem")


def test_interrupt_inside_a_nursery_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> Any:
        raise BaseExceptionGroup("", [KeyboardInterrupt()])

    monkeypatch.setattr(profile, "load_or_create_identity", interrupted)
    assert cli.main(["--profile", str(tmp_path / "p"), "id"]) == 130
    assert capsys.readouterr() == ("", "")


def test_unexpected_errors_are_not_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(profile, "load_or_create_identity", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["--profile", str(tmp_path / "p"), "id"])


# -- mitalk demo --------------------------------------------------------------------


def install_walkthrough(monkeypatch: pytest.MonkeyPatch, run: Any) -> None:
    module = types.ModuleType("mitalk_p2p.walkthrough")
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mitalk_p2p.walkthrough", module)


def test_demo_runs_the_walkthrough(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(out: TextIO) -> int:
        out.write("walkthrough output\n")
        return 0

    install_walkthrough(monkeypatch, run)
    assert cli.main(["demo", "--walkthrough"]) == 0
    assert capsys.readouterr().out == "walkthrough output\n"


def test_demo_passes_the_exit_status_through(monkeypatch: pytest.MonkeyPatch) -> None:
    install_walkthrough(monkeypatch, lambda out: 1)
    assert cli.main(["demo", "--walkthrough"]) == 1


def test_demo_errors_are_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(out: TextIO) -> int:
        raise LocalProtocolError("no room for the demo")

    install_walkthrough(monkeypatch, run)
    assert_error(capsys, cli.main(["demo", "--walkthrough"]), "no room for the demo")


def test_demo_without_walkthrough_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "mitalk_p2p.walkthrough", None)
    assert_error(capsys, cli.main(["demo", "--walkthrough"]), "walkthrough")


# -- a real process -----------------------------------------------------------------


def test_python_dash_m_id(tmp_path: Path) -> None:
    profile_dir = tmp_path / "profile"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "PYTHONWARNINGS": "error"}
    command = [sys.executable, "-m", "mitalk_p2p", "--profile", str(profile_dir), "id"]
    first = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert (first.returncode, first.stderr) == (0, "")
    assert "created just now" in first.stdout
    second = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert (second.returncode, second.stderr) == (0, "")
    data = json.loads(second.stdout)
    identity = profile.load_identity(profile_dir)
    assert data["fingerprint"] == identity.fingerprint
    assert data["created"] is False
    assert identity.fingerprint in first.stdout
    assert stat.S_IMODE(profile.key_path(profile_dir).stat().st_mode) == 0o600
    assert stat.S_IMODE(profile_dir.stat().st_mode) == 0o700

    bad = subprocess.run(
        [sys.executable, "-m", "mitalk_p2p", "--profile", str(profile_dir), "id", "--name", ""],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("mitalk: error: display name")
    assert "Traceback" not in bad.stderr


def test_demo_runs_the_live_room_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mitalk_p2p import live_demo

    calls: list[Path] = []

    def run(out: TextIO, output: Path) -> int:
        calls.append(output)
        return 0

    monkeypatch.setattr(live_demo, "run", run)
    assert cli.main(["demo", "--output", str(tmp_path / "heard")]) == 0
    assert calls == [tmp_path / "heard"]
