"""``mitalk-bootstrap`` and ``mitalk bootstrap``: options, one-line errors, real processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from bootstrap import command, server
from mitalk_p2p import cli
from mitalk_p2p.runtime import bootstrap_client as client
from tests.bootstrap import ROOM, make_announcement

ROOT = Path(__file__).resolve().parents[2]
STARTUP = 30.0
"""Seconds a node process may take to start listening: far above normal, on a busy machine."""


def test_the_console_script_runs_the_same_command() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["mitalk-bootstrap"].partition(":")
    assert (module, name) == ("bootstrap.server", "main")
    assert server.main.__doc__ and "mitalk-bootstrap" in server.main.__doc__


def test_both_commands_take_the_same_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert command.main(["--help"]) == 0
    own = capsys.readouterr().out
    assert cli.main(["bootstrap", "--help"]) == 0
    shared = capsys.readouterr().out
    for option in ("--listen HOST:PORT", "--state FILE", "--max-rooms", "--max-addresses",
                   "--max-connections-per-ip", "--idle-timeout", "--request-rate",
                   "--request-burst"):
        assert option in own and option in shared, option


def test_bad_arguments_are_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert command.main(["--listen", "localhost:4400"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mitalk-bootstrap: error: ") and err.count("\n") == 1
    assert command.main([]) == 2
    err = capsys.readouterr().err
    assert "--listen" in err and err.count("\n") == 1
    assert command.main(["--listen", "127.0.0.1:0", "--max-addresses", "9"]) == 2
    assert "out of range (1 to 8)" in capsys.readouterr().err


def test_a_busy_port_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert command.main(["--listen", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mitalk-bootstrap: error: cannot listen on 127.0.0.1:{port}: ")
    assert err.count("\n") == 1


def test_a_corrupt_state_file_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "node.sqlite"
    state.write_bytes(b"garbage, not SQLite " * 100)
    assert command.main(["--listen", "127.0.0.1:0", "--state", str(state)]) == 2
    assert cli.main(["bootstrap", "--listen", "127.0.0.1:0", "--state", str(state)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith(f"mitalk-bootstrap: error: the state file {state} is not ")
    assert err[1].startswith(f"mitalk: error: the state file {state} is not ")
    assert "Traceback" not in "".join(err)


# --- real processes -----------------------------------------------------------------------------


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            break
        data += chunk
    return data.decode()


async def _read_all(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data.decode()


@asynccontextmanager
async def node_process(*argv: str) -> AsyncIterator[tuple[trio.Process, str]]:
    """A node in its own process; yields it and the URL it printed once listening."""
    process = await trio.lowlevel.open_process(
        [sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(STARTUP):
            line = await _read_line(process.stdout)
        assert line.startswith("bootstrap node listening on ws://127.0.0.1:"), line
        yield process, line.split()[-1]
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            for pipe in (process.stdout, process.stderr):
                if pipe is not None:
                    await pipe.aclose()


async def _stop(process: trio.Process, signum: int) -> tuple[int, str]:
    assert process.stderr is not None
    process.send_signal(signum)
    with trio.fail_after(STARTUP):
        err = await _read_all(process.stderr)
        return await process.wait(), err


async def test_a_node_process_keeps_its_rooms_across_a_restart_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    state = str(tmp_path / "node.sqlite")
    ann = make_announcement(now=time.time(), lifetime=600)
    async with node_process("-m", "bootstrap", "--listen", "127.0.0.1:0",
                            "--state", state) as (process, url):
        assert url.endswith("/")
        assert await client.announce(url, ann) == "added"
        status, err = await _stop(process, signal.SIGTERM)
        assert (status, err) == (0, "")
    async with node_process("-m", "mitalk_p2p", "bootstrap", "--listen", "127.0.0.1:0",
                            "--state", state) as (process, url):
        assert await client.lookup_id(url, ROOM) == ann
        status, err = await _stop(process, signal.SIGINT)
        assert (status, err) == (130, "")
