"""Malformed scenario files are refused before running, with file, line and reason."""

from __future__ import annotations

import pytest

from mitalk_p2p.sim.scenario import ScenarioError, load_scenario, parse_scenario

GOOD = """\
name = "t"
duration = 10.0

[peers]
listeners = 3

[[peer]]
name = "ann"

[[timeline]]
at = 1.0
action = "raise_hand"
peer = "ann"

[[expect]]
check = "delivery"
min = 0.9
"""


def refused(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, file="bad.toml")
    return caught.value


def test_a_good_file_parses() -> None:
    scenario = parse_scenario(GOOD)
    assert scenario.peer_names == ("host", "ann", "l001", "l002", "l003")
    assert scenario.timeline[0].kind == "raise_hand"
    assert scenario.expectations[0].min == 0.9


@pytest.mark.parametrize(
    ("edit", "line", "reason"),
    [
        (("[peers]\n", "[peers]\nlistenerz = 2\n"), 5, "peers.listenerz: unknown key"),
        (("duration = 10.0", 'duration = "long"'), 2, "duration: must be a number, not a string"),
        (('peer = "ann"', 'peer = "bob"'), 13, "timeline[0].peer: no peer named 'bob'"),
        (("at = 1.0", "at = 11.0"), 11, "after the end"),
        (("min = 0.9", "min = 1.5"), 17, "expect[0].min: must be between 0 and 1"),
        (('check = "delivery"', 'check = "vibes"'), 16, "'vibes' is not one of"),
        (('action = "raise_hand"', 'action = "dance"'), 12, "'dance' is not one of"),
        (("listeners = 3", "listeners = true"), 5, "must be an integer, not a boolean"),
    ],
)
def test_each_mistake_names_the_line_and_the_reason(
    edit: tuple[str, str], line: int, reason: str
) -> None:
    error = refused(GOOD.replace(*edit, 1))
    assert error.file == "bad.toml"
    assert error.line == line
    assert reason in str(error)
    assert str(error).startswith(f"bad.toml:{line}: ")


def test_times_out_of_order_are_refused() -> None:
    text = GOOD + '\n[[timeline]]\nat = 0.5\naction = "lower_hand"\npeer = "ann"\n'
    error = refused(text)
    assert error.line == 20
    assert "before the previous action" in error.reason


def test_not_toml_at_all() -> None:
    error = refused("name = \n")
    assert error.line == 1
    assert "not valid TOML" in error.reason


def test_a_missing_file_is_a_clear_error(tmp_path: object) -> None:
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario("/nonexistent/x.toml")


def test_partition_groups_expand_ranges_and_check_names() -> None:
    text = (
        GOOD
        + '\n[[timeline]]\nat = 2.0\naction = "partition"\n'
        + 'groups = [["host", "l001..l002"], ["rest"]]\n'
    )
    scenario = parse_scenario(text)
    assert scenario.timeline[-1].groups == (("host", "l001", "l002"), ("rest",))
    bad = text.replace("l001..l002", "l001..l009")
    assert "no peer named 'l004'" in str(refused(bad))


def test_a_second_host_is_refused() -> None:
    text = (
        GOOD + '\n[[peer]]\nname = "bea"\nrole = "host"\n\n[[peer]]\nname = "cy"\nrole = "host"\n'
    )
    assert "a room has one host" in str(refused(text))
