"""``mitalk scenario``: exit status, the table, the JSON schema, the report, the list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mitalk_p2p.cli import main
from mitalk_p2p.sim.command import SHIPPED

SMALL_ROOM = str(SHIPPED / "small_room.toml")


def test_run_prints_a_table_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenario", "run", "small_room"]) == 0
    out = capsys.readouterr().out
    assert "small_room: PASSED" in out
    assert "ok    role l002 is speaker" in out
    assert "latency         p50" in out


def test_json_has_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenario", "run", SMALL_ROOM, "--json", "--seed", "4"]) == 0
    document = json.loads(capsys.readouterr().out)
    for key in ("scenario", "seed", "peers", "virtual_s", "wall_s", "trace_digest"):
        assert key in document
    assert document["seed"] == 4
    metrics = document["metrics"]
    assert set(metrics["delivery_ratio"]) == {"min", "mean"}
    assert set(metrics["latency_ms"]) == {"p50", "p95", "p99"}
    assert "max" in metrics["tree_repair_ms"] and "max" in metrics["host_takeover_ms"]
    assert all(set(e) == {"name", "ok", "detail"} for e in document["expectations"])


def test_a_failed_expectation_exits_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    strict = Path(SMALL_ROOM).read_text().replace("max_ms = 60", "max_ms = 1")
    path = tmp_path / "strict.toml"
    path.write_text(strict)
    assert main(["scenario", "run", str(path)]) == 1
    assert "FAIL  latency p95 <= 1 ms" in capsys.readouterr().out


def test_a_malformed_scenario_exits_two_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('duration = 5.0\n[peers]\nlisteners = 2\nspeed = "fast"\n')
    assert main(["scenario", "run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:4: peers.speed: unknown key" in err
    assert "Traceback" not in err


def test_an_unknown_scenario_name_lists_the_shipped_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["scenario", "run", "no_such_room"]) == 2
    assert "shipped scenarios: decoding_room, host_crash" in capsys.readouterr().err


def test_report_writes_a_self_contained_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scenario", "run", "relay_crash", "--report", str(tmp_path / "r")]) == 0
    page = (tmp_path / "r" / "index.html").read_text()
    assert page.count("<svg") >= 4  # latency CDF, delivery, tree before and after
    assert "before crash of" in page and "after repair" in page


def test_list_shows_every_shipped_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenario", "list"]) == 0
    out = capsys.readouterr().out
    for name in (
        "small_room",
        "relay_crash",
        "host_crash",
        "partition_heal",
        "lossy_lan",
        "kick_rotation",
        "large_room",
    ):
        assert name in out


def _digest_under(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-m", "mitalk_p2p", "scenario", "run", "host_crash", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    digest: str = json.loads(done.stdout)["trace_digest"]
    return digest


def test_the_digest_does_not_depend_on_the_hash_seed() -> None:
    assert _digest_under("0") == _digest_under("4242")
