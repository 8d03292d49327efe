"""The status line, the member table and the relay tree, as a person sees them."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mitalk_p2p.console.status import (
    LISTED_HANDS,
    LinkQuality,
    StatusView,
    clean,
    clean_name,
    fingerprint_tags,
    fit,
    render_status,
    render_tree,
    render_who,
    status_view,
    text_width,
)
from mitalk_p2p.core.identity import PublicKey
from mitalk_p2p.core.ops import InviteToStage, Mute, RaiseHand, SelfMute
from mitalk_p2p.core.roles import Role
from mitalk_p2p.core.tree import Tree

from . import Room, build_room, is_one_safe_line, key_from


def garden() -> Room:
    room = build_room(
        ("Ana", Role.SPEAKER), ("Bo", Role.SPEAKER), "Cy", "Di", "Ed", ("Mo", Role.MODERATOR)
    )
    room.apply("Cy", RaiseHand())
    room.apply("Di", RaiseHand())
    return room


# --- text helpers ------------------------------------------------------------------------


def test_clean_keeps_names_on_one_harmless_line() -> None:
    assert clean("Ana\nMaria\t\x1b[31m") == "Ana Maria [31m"
    assert clean("Ev\u202ee\u2066\u200b\xad") == "Eve"
    assert clean("👩\u200d💻") == "👩\u200d💻"
    assert clean("  a   b  ") == "a b"
    assert clean("\ue000") == "?"
    assert clean("") == "" and clean_name(" \n") == "(unnamed)"
    assert clean("Zoë 日本") == "Zoë 日本"


def test_width_counts_wide_characters_twice_and_fit_cuts_to_columns() -> None:
    assert text_width("日本") == 4 and text_width("e\u0301") == 1
    assert fit("abcdef", 4) == "abc…"
    assert fit("日本語", 5) == "日本…"
    assert fit("abc", 3) == "abc" and fit("abc", 0) == ""


def test_fingerprint_tags_grow_until_unique() -> None:
    keys = [key_from(f"tag:{i}") for i in range(3000)]
    tags = fingerprint_tags(keys, keys)
    assert len(set(tags.values())) == len(keys)
    assert min(len(tag) for tag in tags.values()) == 5  # "@" and four characters
    assert max(len(tag) for tag in tags.values()) > 5  # 3000 keys share some prefixes
    assert tags[keys[0]].startswith("@" + keys[0].short)


# --- link quality ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rtt", "loss", "label"),
    [
        (12.0, 0.0, "good"),
        (150.0, 0.01, "good"),
        (151.0, 0.0, "fair"),
        (20.0, 0.02, "fair"),
        (400.0, 0.05, "fair"),
        (401.0, 0.0, "poor"),
        (20.0, 0.2, "poor"),
        (None, 0.0, "none"),
    ],
)
def test_link_labels_follow_the_documented_thresholds(
    rtt: float | None, loss: float, label: str
) -> None:
    assert LinkQuality(rtt, loss).label == label


@pytest.mark.parametrize(("rtt", "loss"), [(-1.0, 0.0), (float("nan"), 0.0), (10.0, 1.5)])
def test_link_quality_refuses_impossible_numbers(rtt: float, loss: float) -> None:
    with pytest.raises(ValueError):
        LinkQuality(rtt, loss)


def test_link_quality_text() -> None:
    assert str(LinkQuality(12.4, 0.0)) == "good 12 ms 0.0% loss"
    assert str(LinkQuality(None)) == "none"


# --- the status line ----------------------------------------------------------------------


def test_status_line_of_a_speaker() -> None:
    room = garden()
    view = status_view(
        room.state, room.key("Ana"), frozenset({room.key("Bo"), room.key("Ana")}), None
    )
    assert view.role is Role.SPEAKER and view.here == 7 and view.hand_count == 2
    view = StatusView(
        Role.SPEAKER,
        "Garden room",
        9,
        speaking=("Ana", "Bo"),
        hands=("Cy",),
        hand_count=1,
        link=LinkQuality(12, 0.0),
    )
    assert render_status(view) == (
        "[speaker] Garden room · 9 here · speaking: Ana, Bo · hands: Cy (1)"
        " · link: good 12 ms 0.0% loss"
    )


def test_status_view_shows_speakers_in_join_order_and_you() -> None:
    room = garden()
    view = status_view(
        room.state, room.key("Bo"), {room.key("Bo"), room.key("Ana"), key_from("gone")}, None
    )
    assert view.speaking == ("Ana", "you")
    assert view.hands == ("Cy", "Di")


def test_your_own_situation_is_flagged() -> None:
    room = garden()
    assert status_view(room.state, room.key("Di"), (), None).flags == ("hand #2",)
    room.apply("Host", InviteToStage(room.key("Ed")))
    assert status_view(room.state, room.key("Ed"), (), None).flags == ("invited: /accept",)
    room.apply("Host", Mute(room.key("Ana"), True))
    room.apply("Ana", SelfMute(True))
    assert status_view(room.state, room.key("Ana"), (), None).flags == ("muted", "mic off")
    line = render_status(status_view(room.state, room.key("Di"), (), None))
    assert line.startswith("[listener, hand #2] Garden room")


def test_status_outside_a_room() -> None:
    view = status_view(None, key_from("me"), (), LinkQuality(None))
    assert render_status(view) == "[not a member] not in a room · 0 here · link: none"


def test_only_the_first_hands_are_named() -> None:
    room = build_room(*(f"L{i}" for i in range(LISTED_HANDS + 4)))
    for i in range(LISTED_HANDS + 4):
        room.apply(f"L{i}", RaiseHand())
    view = status_view(room.state, room.host, (), None)
    assert view.hands == tuple(f"L{i}" for i in range(LISTED_HANDS))
    assert view.hand_count == LISTED_HANDS + 4
    assert render_status(view, 60).startswith("[host] Garden room · 13 here · hands: L0, L1")


def test_a_long_line_names_fewer_people_before_dropping_segments() -> None:
    speakers = tuple(f"Speaker{i}" for i in range(10))
    view = StatusView(Role.HOST, "Garden room", 40, speaking=speakers, link=LinkQuality(30, 0))
    line = render_status(view)
    assert "speaking: Speaker0, Speaker1" in line and "link: good" in line
    assert f"+{10 - line.count('Speaker')}" in line
    assert text_width(line) <= 100
    short = render_status(view, 40)
    assert short == "[host] Garden room · 40 here · …"


def test_long_room_names_are_cut() -> None:
    view = StatusView(Role.LISTENER, "A" * 100 + "\n", 3)
    line = render_status(view)
    assert "…" in line and "\n" not in line and text_width(line) <= 100


names_strategy = st.lists(st.text(min_size=1, max_size=20), max_size=12).map(tuple)


@given(
    width=st.integers(min_value=1, max_value=200),
    room_name=st.text(max_size=100),
    speaking=names_strategy,
    hands=names_strategy,
    flags=st.lists(st.sampled_from(["muted", "mic off", "hand #3"]), max_size=2).map(tuple),
    rtt=st.none() | st.floats(min_value=0, max_value=5000),
)
def test_status_always_fits_on_one_line(
    width: int,
    room_name: str,
    speaking: tuple[str, ...],
    hands: tuple[str, ...],
    flags: tuple[str, ...],
    rtt: float | None,
) -> None:
    view = StatusView(
        Role.SPEAKER,
        room_name,
        len(speaking) + len(hands),
        flags=flags,
        speaking=speaking,
        hands=hands,
        hand_count=len(hands) + 3,
        link=LinkQuality(rtt, 0.5),
    )
    line = render_status(view, width)
    assert text_width(line) <= width
    assert is_one_safe_line(line)


# --- /who ------------------------------------------------------------------------------------


def test_who_table() -> None:
    room = garden()
    room.apply("Host", InviteToStage(room.key("Ed")))
    room.apply("Ana", SelfMute(True))
    table = render_who(room.state, room.key("Cy"), {room.key("Bo")})
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "HAND", "MIC", "ID"]
    assert [line.split()[0] for line in lines[1:]] == ["Host", "Mo", "Ana", "Bo", "Cy", "Di", "Ed"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["Host"].split()[1:] == ["host", "on", f"@{room.host.short}"]
    assert rows["Ana"].split()[1:3] == ["speaker", "mic"]  # "mic off"
    assert "speaking" in rows["Bo"]
    assert rows["Cy"].split()[2] == "#1" and rows["Cy"].endswith("(you)")
    assert rows["Di"].split()[2] == "#2"
    assert rows["Ed"].split()[2] == "invited"
    assert len({len(line) for line in lines if "(you)" not in line}) <= 2  # aligned columns


def test_who_tags_select_the_member_even_when_short_fingerprints_collide() -> None:
    room = build_room()
    keys = [room.admit(f"g{i}", key=key_from(f"who:{i}")) for i in range(2000)]
    table = render_who(room.state, room.host, (), limit=None)
    tags = [line.split()[-1] for line in table.splitlines()[1:] if "(you)" not in line]
    assert len(tags) == len(set(tags)) == len(keys)


def test_who_is_limited_with_a_count_of_the_rest() -> None:
    room = build_room(*(f"L{i}" for i in range(30)))
    table = render_who(room.state, room.host, (), limit=10)
    lines = table.splitlines()
    assert len(lines) == 12 and lines[-1] == "… and 21 more"
    assert lines[1].startswith("Host")


def test_who_shows_hostile_names_safely() -> None:
    room = build_room()
    room.admit("x", name="Mallory\n\x1b[2J" + "x" * 50)
    table = render_who(room.state, room.host, ())
    assert len(table.splitlines()) == 3 and "\x1b" not in table and "…" in table


# --- /tree ------------------------------------------------------------------------------------


def names_of(room: Room) -> dict[PublicKey, str]:
    return {key: label for label, key in room.keys.items()}


def test_tree_drawing() -> None:
    room = garden()
    k = room.key
    parents: dict[PublicKey, PublicKey | None] = {
        room.host: None,
        k("Ana"): room.host,
        k("Bo"): room.host,
        k("Cy"): k("Ana"),
        k("Mo"): k("Ana"),
        k("Di"): k("Cy"),
        k("Ed"): k("Bo"),
    }
    drawing = render_tree(parents, names_of(room).__getitem__, room.host)
    assert drawing == "\n".join(
        [
            "Host",
            "├─ Ana",
            "│  ├─ Cy",
            "│  │  └─ Di",
            "│  └─ Mo",
            "└─ Bo",
            "   └─ Ed",
        ]
    )


def test_tree_from_a_core_tree_without_the_root_in_its_links() -> None:
    room = garden()
    k = room.key
    tree = Tree(
        room.host,
        {k("Ana"): room.host, k("Bo"): k("Ana")},
        backups={},
        capacities={room.host: 2, k("Ana"): 2, k("Bo"): 0},
    )
    assert render_tree(tree.parents, names_of(room).__getitem__, tree.root) == (
        "Host\n└─ Ana\n   └─ Bo"
    )
    # Without naming the root, the member without a parent is found as the top.
    assert render_tree(tree.parents, names_of(room).__getitem__).startswith("Host\n")


def test_tree_with_orphans_cycles_and_a_limit() -> None:
    room = garden()
    k = room.key
    parents: dict[PublicKey, PublicKey | None] = {
        k("Ana"): room.host,
        k("Bo"): None,  # an orphan waiting for a place starts its own tree
        k("Cy"): k("Di"),
        k("Di"): k("Cy"),  # a cycle: nobody reaches them
    }
    drawing = render_tree(parents, names_of(room).__getitem__, room.host)
    assert drawing.splitlines() == ["Host", "└─ Ana", "Bo", "not connected: Cy, Di"]
    limited = render_tree(parents, names_of(room).__getitem__, room.host, limit=2)
    assert limited.splitlines() == ["Host", "└─ Ana", "… 2 more lines"]


def test_tree_edge_cases() -> None:
    host = key_from("host")
    assert render_tree({}, lambda key: "Host") == "(no relay tree yet)"
    assert render_tree({}, lambda key: "Host", host) == "Host"
    assert render_tree({key_from("a"): host}, lambda key: "bad\nname") == ("bad name\n└─ bad name")


def test_a_deep_chain_does_not_recurse() -> None:
    keys = [key_from(f"chain:{i}") for i in range(5000)]
    parents = {child: parent for parent, child in itertools.pairwise(keys)}
    drawing = render_tree(parents, lambda key: "n", keys[0])
    assert len(drawing.splitlines()) == 5000
