"""``mitalk bench``: correctness of what it reports, never speed.

The fanout test runs a real (small) room through the command line: a host and
a speaker in this process, six listeners in one worker process, all on
127.0.0.1.  It checks that the JSON holds every key with values that make
sense together; the targets themselves are for BENCHMARKS.md, not for CI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mitalk_p2p import cli
from mitalk_p2p.bench import summary
from mitalk_p2p.bench.results import hops_from, judge
from mitalk_p2p.bench.stats import percentile, summary_ms
from mitalk_p2p.core.media_frame import FRAME_TYPE
from mitalk_p2p.runtime.media_meter import MediaMeter

REQUIRED = (
    "listeners",
    "fanout",
    "seconds",
    "delivered",
    "expected",
    "latency_ms",
    "latency_with_jitter_buffer_ms",
    "per_hop_ms",
    "cpu_us_per_forwarded_packet",
    "wire_kbit_s_per_listener",
)


def _ordered(figures: dict[str, float | None], keys: tuple[str, ...]) -> list[float]:
    values = [figures[key] for key in keys]
    assert all(value is not None for value in values), figures
    return [float(value) for value in values if value is not None]


def test_a_small_room_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "bench", "fanout", "--listeners", "6", "--fanout", "2", "--seconds", "2",
        "--processes", "1", "--jitter-every", "3", "--json",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    result: dict[str, Any] = json.loads(captured.out)
    assert "tree settled" in captured.err
    assert result["settled"] is True and result["listeners_failed"] == 0

    for key in REQUIRED:
        assert key in result, key
    assert (result["listeners"], result["fanout"], result["seconds"]) == (6, 2, 2.0)
    assert result["frames_sent"] > 0
    assert result["expected"] == 6 * result["frames_sent"]
    assert 0.9 * result["expected"] < result["delivered"] <= result["expected"]

    latency = _ordered(result["latency_ms"], ("p50", "p95", "p99", "max"))
    assert latency[0] > 0 and latency == sorted(latency)
    buffered = _ordered(result["latency_with_jitter_buffer_ms"], ("p50", "p95"))
    assert buffered == sorted(buffered)
    # A frame leaves the jitter buffer no earlier than it arrived.
    assert buffered[0] >= latency[0]
    assert result["jitter_buffer_listeners"] == 2  # listeners 0 and 3

    # With fanout 2, listeners relay to each other: every hop is sampled.
    hop = _ordered(result["per_hop_ms"], ("p50", "p99"))
    assert 0 < hop[0] <= hop[1] < latency[3] + 1
    assert result["per_hop_samples"] > 0
    assert result["cpu_us_per_forwarded_packet"] > 0
    # Opus at 24 kbit/s plus 129 bytes of headers per packet, 50 packets a second
    # while speaking: tens of kbit/s, never hundreds.
    assert 20 < result["wire_kbit_s_per_listener"] < 150
    breakdown = result["wire_bytes_per_packet"]
    assert (breakdown["signature"], breakdown["aead_tag"], breakdown["ip_udp"]) == (64, 16, 28)

    hops = result["latency_by_hops"]
    assert sum(group["listeners"] for group in hops.values()) == 6
    assert "unreached" not in hops
    assert {target["name"] for target in result["targets"]} >= {"latency p50", "per-hop p99"}


def test_bad_options_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "fanout", "--listeners", "zero"]) == 2
    assert cli.main(["bench", "fanout", "--seconds", "-1"]) == 2
    assert cli.main(["bench", "fanout", "--listeners", "2", "--input", "wav:/no/such.wav"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 3
    assert "zero" in errors[0] and "-1" in errors[1] and "/no/such.wav" in errors[2]


def test_a_worker_refuses_garbage_with_one_error_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mitalk_p2p.bench.worker"],
        input=b"this is not json\n",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["event"] == "error"
    assert b"Traceback" not in done.stderr


def test_bench_sim_times_a_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "sim", "--scenario", "small_room", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scenario"] == "small_room"
    assert result["virtual_s"] == 16.0
    assert 0 < result["wall_s"] < 60
    assert result["frame_deliveries"] > 0
    # wall_s is rounded to the millisecond in the output.
    rate = result["frame_deliveries"] / result["wall_s"]
    assert result["peer_frames_per_s"] == pytest.approx(rate, rel=0.01)
    assert result["expectations_ok"] is True
    assert "target_wall_s" not in result  # only large_room has a target


# --- the arithmetic ------------------------------------------------------------------


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([], 0.5) is None
    assert summary_ms([1000, 3000, 2000], ("p50", "max", "mean")) == {
        "p50": 2.0,
        "max": 3.0,
        "mean": 2.0,
    }


def test_hops_follow_tree_edges_both_ways() -> None:
    # host ← speaker ← a ← b, and host ← c: from the speaker, c is two hops away.
    parents = {"speaker": "host", "a": "speaker", "b": "a", "c": "host", "host": None}
    assert hops_from("speaker", parents) == {"speaker": 0, "host": 1, "a": 1, "b": 2, "c": 2}
    assert "lost" not in hops_from("speaker", {**parents, "lost": None})


def test_large_rooms_are_judged_by_the_large_room_targets() -> None:
    result: dict[str, Any] = {
        "listeners": 1000,
        "latency_ms": {"p50": 30.0, "p95": 140.0},
        "delivered": 999,
        "expected": 1000,
        "delivery_ratio": 0.999,
        "per_hop_ms": {"p50": 0.4, "p99": 2.5},
        "cpu_us_per_forwarded_packet": None,
        "wire_kbit_s_per_listener": 60.0,
    }
    verdicts = {target["name"]: target["met"] for target in judge(result)}
    assert verdicts == {
        "latency p95": True,
        "delivery": True,
        "per-hop p50": True,
        "per-hop p99": False,
        "CPU per forwarded packet": False,
        "wire per listener": True,
    }


def test_the_meter_tells_forwarded_copies_from_the_peers_own_sends() -> None:
    frame = bytes([FRAME_TYPE]) + bytes(150)
    probe = b"\x21" + bytes(40)
    meter = MediaMeter(active=True, cpu_sample_every=1)
    meter.sent(frame)  # outside a batch: the peer's own frame, not a forward
    meter.draining()
    meter.received([(frame, "a"), (probe, "b")])
    meter.handling()
    meter.sent(frame)
    meter.sent(frame)
    meter.sent(probe)
    meter.handled()
    meter.draining()
    meter.received([(frame, "a")])
    meter.handling()
    meter.handled()
    assert (meter.frames_received, meter.frame_bytes) == (2, 302)
    assert (meter.other_received, meter.other_bytes) == (1, 41)
    assert (meter.relay_batches, meter.relay_frames, meter.relay_copies) == (1, 1, 2)
    assert meter.leaf_frames == 1
    assert len(meter.hold_us) == len(meter.handling_us) == 2
    assert all(
        hold >= handling >= 0
        for hold, handling in zip(meter.hold_us, meter.handling_us, strict=True)
    )

    meter.active = False
    meter.draining()
    meter.received([(frame, "a")])
    meter.handling()
    meter.sent(frame)
    meter.handled()
    assert meter.frames_received == 2 and meter.relay_copies == 2


def test_the_meter_times_one_batch_in_n_at_random_and_counts_every_copy() -> None:
    frame = bytes([FRAME_TYPE]) + bytes(150)
    meter = MediaMeter(active=True, cpu_sample_every=4)
    for _ in range(400):
        meter.draining()
        meter.received([(frame, "a")])
        meter.handling()
        meter.sent(frame)
        meter.handled()
    assert meter.forwarded_copies == 400
    assert meter.relay_batches == meter.relay_frames == meter.relay_copies
    # One in four on average: 100 expected; below 40 or above 200 has odds far under 1e-9.
    assert 40 <= meter.relay_batches <= 200
    assert meter.relay_cpu > 0
    assert len(meter.hold_us) == 400


def test_the_summary_prints_medians_per_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = []
    for index, wall in enumerate((50.0, 70.0, 55.0)):
        path = tmp_path / f"sim-{index}.json"
        result = {
            "scenario": "large_room",
            "wall_s": wall,
            "virtual_s": 75.0,
            "peer_frames_per_s": 40000,
            "load_average": [1.0, 1.0, 1.0],
        }
        path.write_text(json.dumps(result))
        runs.append(str(path))
    assert summary.main(runs) == 0
    out = capsys.readouterr().out
    assert "bench sim --scenario large_room: 3 run(s)" in out
    assert "median 55   (50, 70, 55)" in out

    (tmp_path / "broken.json").write_text("{")
    assert summary.main([str(tmp_path / "broken.json")]) == 2
    assert "broken.json" in capsys.readouterr().err
