"""Every parser of untrusted input raises only its documented error, and round-trips.

The parsers, and where each one's property tests live:

=================================  ==================================  =====================
parser                             documented error                    property tests
=================================  ==================================  =====================
wire ``Reader``, ``Term.decode``   ``WireError``                       core/test_control_parsers
control envelopes, ops, snapshots  ``WireError``; replicas count it    core/test_control_parsers
media frame header                 ``WireError``                       core/test_media_frame, here
frames into a live media session   dropped and counted, never played   here
media link messages, probes        ``WireError``                       core/test_media_parsers,
                                                                       and round trips here
invite token and bytes             ``InviteError``                     core/test_invite
saved invite file                  ignored (``None``)                  here
invite file (``mitalk join @F``)   one error line, exit status 2       here
link handshake messages 1-3        ``HandshakeError``                  core/test_handshake
Noise XX message of any size       ``NoiseError``                      here
identity proof                     ``WireError``                       here
link transport message             ``LinkError``                       core/test_handshake
link records (framing)             ``RecordError``                     here
contact directory                  ``WireError``; bad entries skipped  here
``HOST:PORT`` addresses            ``AddressError``                    here
bootstrap requests, responses      ``WireError`` (``ProtocolError``)   bootstrap/test_protocol,
                                                                       and round trips here
announcements, withdrawals         ``WireError``                       bootstrap/test_announcement
mDNS room record (TXT)             ``RecordError``                     discovery/test_room_record
scenario files (TOML)              ``ScenarioError``, one line         here
identity key file                  ``ProfileError``                    test_parsers_fuzz
``profile.toml``                   ``ProfileError``                    test_parsers_fuzz, here
saved room files (mitalk invite)   one error line, exit status 2       here
command-line argument types        ``ArgumentTypeError``               here
public keys typed in               ``MitalkError``                     here
room ids, role names               ``WireError``, ``ValueError``       test_parsers_fuzz
console commands                   ``ConsoleError``, one safe line     console/test_commands
Opus packets                       ``CodecError``                      here
WAV files, audio source specs      ``AudioSourceError``                here
=================================  ==================================  =====================

The same parsers are fuzzed with coverage guidance by ``make fuzz`` (see ``fuzz/``); what
that found is pinned in ``test_fuzz_regressions.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import math
import wave
from collections.abc import Callable
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, assume, example, given, settings

from bootstrap import command as bootstrap_command
from bootstrap.protocol import (
    COOKIE_SIZE,
    NO_COOKIE,
    Announce,
    Error,
    LookupId,
    LookupName,
    Ok,
    ProofRequired,
    Prove,
    Rooms,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from mitalk_p2p import cli, room_cli
from mitalk_p2p.arg_types import bounded_int
from mitalk_p2p.audio.sources import AudioSourceError, WavSource, source_from_spec
from mitalk_p2p.codec import CodecConfig, CodecError, OpusDecoder, OpusEncoder
from mitalk_p2p.core.errors import MitalkError, WireError
from mitalk_p2p.core.handshake import IdentityProof, link_prologue
from mitalk_p2p.core.identity import PublicKey
from mitalk_p2p.core.invite import create_invite
from mitalk_p2p.core.media_events import FrameReceived
from mitalk_p2p.core.media_frame import HEADER_SIZE, KeyGeneration, parse_header, room_tag
from mitalk_p2p.core.media_messages import (
    KeyGrant,
    MediaMessage,
    Neighbor,
    ParentSwitched,
    Probe,
    ProbeRole,
    RelayOffer,
    SwitchReason,
    TreePosition,
    decode_media_message,
    encode_media_message,
    encode_path,
)
from mitalk_p2p.core.noise import HandshakeState, KeyPair, NoiseError
from mitalk_p2p.core.roles import Role
from mitalk_p2p.discovery.joining import invite_path, load_saved_invite, save_invite
from mitalk_p2p.profile import ProfileError, load_identity, load_or_create_identity, profile_path
from mitalk_p2p.runtime.addresses import AddressError, format_address, parse_address
from mitalk_p2p.runtime.contacts import Contact, decode_contacts, encode_contacts
from mitalk_p2p.runtime.link_records import (
    DEFAULT_MAX_MESSAGE,
    LAST,
    MORE,
    Channel,
    Reassembler,
    RecordError,
    split_message,
)
from mitalk_p2p.sim.scenario import ScenarioError, parse_scenario
from tests.bootstrap import HOST as NODE_HOST
from tests.bootstrap import NOW as NODE_NOW
from tests.bootstrap import ROOM as NODE_ROOM
from tests.bootstrap import make_announcement
from tests.core.media_fixtures import MediaRoom, media_room
from tests.core.room_fixtures import ROOM, person
from tests.strategies import mutated

PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def one_line(text: str) -> bool:
    return bool(text) and "\n" not in text and "\r" not in text


# --- addresses and the contact directory ------------------------------------------------------

# Every kind of digit str.isdigit() knows, not only 0-9: "²" and "٣" are digits to it.
unicode_digits = st.characters(categories=["Nd", "No"])
port_texts = st.one_of(
    st.text(alphabet="0123456789", min_size=1, max_size=7),
    st.text(alphabet=unicode_digits, min_size=1, max_size=4),
    st.integers(0, 10**6).map(str),
    st.text(max_size=6),
)
hosts = st.sampled_from(["127.0.0.1", "0.0.0.0", "[::1]", "[fe80::1%eth0]", "::1", "host", ""])
addresses = st.one_of(
    st.builds(lambda host, port: f"{host}:{port}", hosts, port_texts),
    st.text(max_size=40),
)


@PROPS
@example(text="127.0.0.1:²", any_port=False)
@given(text=addresses, any_port=st.booleans())
def test_addresses_parse_or_give_address_errors(text: str, any_port: bool) -> None:
    try:
        host, port = parse_address(text, any_port=any_port)
    except AddressError as error:
        assert one_line(str(error))
        return
    assert (0 if any_port else 1) <= port <= 65535
    assert parse_address(format_address(host, port), any_port=any_port) == (host, port)


def usable(address: str) -> bool:
    try:
        parse_address(address)
    except AddressError:
        return False
    return True


contacts = st.lists(
    st.builds(
        Contact,
        st.binary(min_size=32, max_size=32).map(PublicKey),
        addresses.filter(lambda a: len(a.encode("utf-8")) <= 64),
    ),
    max_size=6,
)


@PROPS
@example(listed=[Contact(PublicKey(bytes(32)), "127.0.0.1:²")])
@given(listed=contacts)
def test_a_contact_list_keeps_exactly_its_usable_addresses(listed: list[Contact]) -> None:
    assert decode_contacts(encode_contacts(listed)) == [c for c in listed if usable(c.address)]


@PROPS
@given(data=st.one_of(st.binary(max_size=200), contacts.map(encode_contacts).flatmap(mutated)))
def test_contact_bytes_give_only_wire_errors(data: bytes) -> None:
    try:
        found = decode_contacts(data)
    except WireError:
        return
    assert all(usable(contact.address) for contact in found)
    assert decode_contacts(encode_contacts(found)) == found


# --- link records --------------------------------------------------------------------------


@PROPS
@given(records=st.lists(st.binary(max_size=40), max_size=12), limit=st.integers(1, 200))
def test_link_records_give_only_record_errors_and_respect_the_limit(
    records: list[bytes], limit: int
) -> None:
    reassembler = Reassembler(max_message=limit)
    for record in records:
        try:
            whole = reassembler.add(record)
        except RecordError as error:
            assert one_line(str(error))
            return
        if whole is None:
            assert record[0] == MORE
        else:
            channel, message = whole
            assert record[0] == LAST and isinstance(channel, Channel)
            assert len(message) < limit


@PROPS
@given(channel=st.sampled_from(list(Channel)), data=st.binary(max_size=300))
def test_what_is_split_into_records_comes_out_whole(channel: Channel, data: bytes) -> None:
    reassembler = Reassembler()
    out = [reassembler.add(record) for record in split_message(channel, data)]
    assert out[-1] == (channel, data) and not any(out[:-1])


def test_a_message_of_several_records_comes_out_whole_and_an_endless_one_is_refused() -> None:
    data = bytes(range(256)) * 600  # 153,600 bytes: three records
    records = split_message(Channel.CORE, data)
    assert len(records) == 3
    reassembler = Reassembler()
    assert [reassembler.add(r) for r in records] == [None, None, (Channel.CORE, data)]
    endless = Reassembler()
    with pytest.raises(RecordError, match="exceeds"):
        for _ in range(DEFAULT_MAX_MESSAGE // len(records[0][1:]) + 2):
            endless.add(records[0])


# --- handshake: identity proofs and the Noise layer -----------------------------------------------

ALICE = person("ann")


@PROPS
@given(data=st.one_of(
    st.binary(max_size=120),
    st.just(IdentityProof.create(ALICE, bytes(32)).to_bytes()).flatmap(mutated),
))
def test_identity_proofs_give_only_wire_errors_and_round_trip(data: bytes) -> None:
    try:
        proof = IdentityProof.from_bytes(data)
    except WireError:
        return
    assert proof.to_bytes() == data
    assert proof.verify(bytes(32)) == (data == IdentityProof.create(ALICE, bytes(32)).to_bytes())


KEYS = [KeyPair.from_private(bytes([n]) * 32) for n in (1, 2, 3, 4)]


def noise_message_2() -> bytes:
    initiator = HandshakeState.initialize(
        initiator=True, prologue=link_prologue(ROOM), static=KEYS[0], ephemeral=KEYS[1]
    )
    responder = HandshakeState.initialize(
        initiator=False, prologue=link_prologue(ROOM), static=KEYS[2], ephemeral=KEYS[3]
    )
    responder.read_message(initiator.write_message())
    return responder.write_message(b"payload")


@PROPS
@given(data=st.one_of(st.binary(max_size=300), st.just(noise_message_2()).flatmap(mutated)))
def test_a_noise_message_of_any_size_gives_only_noise_errors(data: bytes) -> None:
    """The generic Noise layer, below the link's exact-size checks."""
    initiator = HandshakeState.initialize(
        initiator=True, prologue=link_prologue(ROOM), static=KEYS[0], ephemeral=KEYS[1]
    )
    initiator.write_message()
    try:
        payload = initiator.read_message(data)
    except NoiseError:
        return
    assert data == noise_message_2() and payload == b"payload"


# --- frames into a live media session -------------------------------------------------------------


@functools.cache
def listening_room() -> tuple[MediaRoom, bytes]:
    room = media_room(2)
    [frame] = room.capture("host")
    return room, frame


@PROPS
@given(data=st.one_of(
    st.just(listening_room()[1]).flatmap(mutated),
    st.binary(max_size=300),
    st.binary(max_size=200).map(lambda tail: listening_room()[1][:1] + tail),
))
def test_every_damaged_datagram_is_dropped_once_and_nothing_is_played(data: bytes) -> None:
    room, frame = listening_room()
    assume(data != frame)
    listener = room["p000"]
    before = listener.statistics().media
    listener.receive_datagram(data, "sim:host", room.net.now)
    after = listener.statistics().media
    assert after.dropped_total == before.dropped_total + 1
    assert after.frames_accepted == before.frames_accepted == 0
    assert after.frames_decrypted == 0
    assert not any(isinstance(e, FrameReceived) for e in listener.events())


def test_the_genuine_frame_is_played_so_the_property_above_can_fail() -> None:
    room = media_room(2)
    [frame] = room.capture("host")
    listener = room["p000"]
    listener.receive_datagram(frame, "sim:host", room.net.now)
    assert listener.statistics().media.frames_accepted == 1


# --- media messages, probes and frame headers: what decodes is canonical -------------------------


def media_encodings() -> list[bytes]:
    a, b = PublicKey(b"a" * 32), PublicKey(b"b" * 32)
    tag = room_tag(ROOM)
    messages: list[MediaMessage] = [
        KeyGrant(7, KeyGeneration(1, 2), b"s" * 32),
        RelayOffer("127.0.0.1:4000", 6, 12),
        TreePosition(9, Neighbor(a, "127.0.0.1:1"), None, (Neighbor(b, "[::1]:2"),), 2),
        ParentSwitched(3, a, b, SwitchReason.CORRUPT),
    ]
    return [
        *(encode_media_message(m) for m in messages),
        Probe(tag, a, 5, ProbeRole.PARENT, 11, 10, 7, path=encode_path((a, b))).encode(),
        listening_room()[1],
    ]


@PROPS
@given(data=st.one_of(st.binary(max_size=300), st.sampled_from(media_encodings()).flatmap(mutated)))
def test_a_media_message_probe_or_frame_header_that_decodes_re_encodes_the_same(
    data: bytes,
) -> None:
    with contextlib.suppress(WireError):
        assert encode_media_message(decode_media_message(data)) == data
    with contextlib.suppress(WireError):
        assert Probe.decode(data).encode() == data
    with contextlib.suppress(WireError):
        assert parse_header(data).encode() == data[:HEADER_SIZE]


def test_the_media_encodings_above_decode() -> None:
    *messages, probe, frame = media_encodings()
    for data in messages:
        assert encode_media_message(decode_media_message(data)) == data
    assert Probe.decode(probe).encode() == probe
    assert parse_header(frame).encode() == frame[:HEADER_SIZE]


# --- the bootstrap protocol: what decodes is canonical ---------------------------------------


def request_encodings() -> list[bytes]:
    cookie = bytes(range(1, COOKIE_SIZE + 1))
    return [
        encode_request(request)
        for request in (
            Announce(make_announcement()),
            LookupId(NODE_ROOM),
            LookupName("jazz"),
            Prove(cookie, LookupName("jazz")),
            Prove(NO_COOKIE, Announce(make_announcement())),
        )
    ]


def response_encodings() -> list[bytes]:
    return [
        encode_response(response)
        for response in (
            Ok("added"),
            Rooms((make_announcement(), make_announcement(name="Folk"))),
            Error("stale-term", "too old"),
            ProofRequired(bytes(COOKIE_SIZE)),
        )
    ]


@PROPS
@given(data=st.one_of(
    st.binary(max_size=200),
    st.sampled_from(request_encodings()).flatmap(mutated),
    st.sampled_from(response_encodings()).flatmap(mutated),
))
def test_a_bootstrap_message_that_decodes_re_encodes_to_the_same_bytes(data: bytes) -> None:
    with contextlib.suppress(WireError):
        assert encode_request(decode_request(data)) == data
    with contextlib.suppress(WireError):
        assert encode_response(decode_response(data)) == data


def test_the_bootstrap_encodings_above_are_genuine() -> None:
    for data in request_encodings():
        assert encode_request(decode_request(data)) == data
    for data in response_encodings():
        assert encode_response(decode_response(data)) == data
    assert decode_request(request_encodings()[0]) == Announce(make_announcement())
    assert make_announcement().host == NODE_HOST.public_key and NODE_NOW > 0


# --- scenario files -------------------------------------------------------------------------

SHIPPED = sorted(SCENARIOS.glob("**/*.toml"))
toml_values = st.one_of(
    st.integers().map(str),
    st.integers(300, 5000).map(lambda digits: "1" * digits),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf") if math.isinf(f)
        else repr(f)
    ),
    st.sampled_from(["true", "false", '""', '"x"', "[]", "[1, 2]", '["host", "l001..l999"]',
                     "{}", "{ a = 1 }", "1979-05-27", "0x7fffffffffffffff", "inf", "nan"]),
    st.text(max_size=10).map(json.dumps),
)


@st.composite
def edited_scenarios(draw: st.DrawFn) -> str:
    """A shipped scenario with one value replaced, or a line dropped, doubled or added."""
    lines = draw(st.sampled_from(SHIPPED)).read_text(encoding="utf-8").splitlines()
    at = draw(st.integers(0, len(lines) - 1))
    how = draw(st.sampled_from(["value", "value", "drop", "double", "add"]))
    if how == "value" and "=" in lines[at]:
        key = lines[at].split("=", 1)[0]
        lines[at] = f"{key}= {draw(toml_values)}"
    elif how == "drop":
        del lines[at]
    elif how == "double":
        lines.insert(at, lines[at])
    else:
        key = draw(st.sampled_from(["duration", "listeners", "at", "min", "seed", "x", "peer"]))
        lines.insert(at, f"{key} = {draw(toml_values)}")
    return "\n".join(lines) + "\n"


def test_the_scenarios_edited_below_are_valid_to_start_with() -> None:
    assert len(SHIPPED) >= 5
    for path in SHIPPED:
        assert parse_scenario(path.read_text(encoding="utf-8")).duration > 0


@PROPS
@example(text="duration = 1" + "0" * 400)
@example(text="duration = 1" + "0" * 5000)
@example(text="duration = inf")
@given(text=st.one_of(edited_scenarios(), st.text(max_size=200)))
def test_scenario_files_give_only_scenario_errors_of_one_line(text: str) -> None:
    try:
        scenario = parse_scenario(text, file="edited.toml")
    except ScenarioError as error:
        assert str(error).startswith("edited.toml")
        assert one_line(error.reason)
        return
    assert math.isfinite(scenario.duration) and scenario.duration > 0
    for action in scenario.timeline:
        assert 0 <= action.at <= scenario.duration


# --- profile files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("profile") / "p"
    load_or_create_identity(directory, display_name="ann")
    return directory


toml_documents = st.lists(
    st.tuples(st.sampled_from(["display_name", "audio", "x", '"quoted key"']), toml_values),
    max_size=4,
).map(lambda pairs: "".join(f"{key} = {value}\n" for key, value in pairs))


@PROPS
@example(text="display_name = 1" + "0" * 5000 + "\n")
@given(text=toml_documents)
def test_profile_settings_give_only_profile_errors(profile_dir: Path, text: str) -> None:
    profile_path(profile_dir).write_text(text, encoding="utf-8")
    try:
        identity = load_identity(profile_dir)
    except ProfileError as error:
        assert one_line(str(error))
        return
    assert identity.display_name


room_files = st.one_of(
    st.text(max_size=60),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
            st.sampled_from(["room_id", "name", "addresses", "saved_at", "x"]), inner,
            max_size=5,
        ),
        max_leaves=8,
    ).map(json.dumps),
    st.fixed_dictionaries({
        "room_id": st.sampled_from([ROOM.hex, "zz", ""]) | st.integers(),
        "name": st.text(max_size=120) | st.integers(),
        "addresses": st.lists(addresses, max_size=3) | st.text(max_size=5) | st.integers(),
    }).map(json.dumps),
)


@FEW
@example(text='{"room_id": "' + ROOM.hex + '", "name": "Standup", "addresses": 5}')
@given(text=room_files)
def test_a_damaged_room_file_gives_one_error_line(profile_dir: Path, text: str) -> None:
    profile_path(profile_dir).write_text('display_name = "ann"\n', encoding="utf-8")
    rooms = profile_dir / "rooms"
    rooms.mkdir(mode=0o700, exist_ok=True)
    (rooms / f"{ROOM.hex}.json").write_text(text, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["--profile", str(profile_dir), "invite", "--room", ROOM.hex])
    if status == 0:
        assert out.getvalue().startswith("mitalk:") and not err.getvalue()
    else:
        assert status == cli.EXIT_ERROR
        assert len(err.getvalue().splitlines()) == 1


@FEW
@example(data=b"\xff\xfe")
@given(data=st.one_of(st.binary(max_size=80), st.text(max_size=80).map(str.encode),
                      st.binary(max_size=60).map(lambda b: b"mitalk:" + b)))
def test_an_invite_file_given_to_join_that_is_no_invite_is_one_error_line(
    profile_dir: Path, data: bytes
) -> None:
    """``mitalk join @FILE``: random bytes are never a signed invite, so always an error."""
    path = profile_dir / "pasted-invite"
    path.write_bytes(data)
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        status = cli.main(["--profile", str(profile_dir), "join", f"@{path}"])
    assert status == cli.EXIT_ERROR
    assert len(err.getvalue().splitlines()) == 1


@PROPS
@given(text=st.one_of(st.text(max_size=80), st.just("mitalk:").map(lambda p: p + "AAAA")))
def test_a_saved_invite_file_is_used_or_ignored(profile_dir: Path, text: str) -> None:
    path = invite_path(profile_dir, ROOM)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    assert load_saved_invite(profile_dir, ROOM, person("ann").public_key, 100.0) is None


def test_a_good_saved_invite_is_used(profile_dir: Path) -> None:
    invite = create_invite(person("host"), room_id=ROOM, room_name="Standup",
                           role=Role.LISTENER, now=0.0, lifetime=3600)
    save_invite(profile_dir, invite)
    assert load_saved_invite(profile_dir, ROOM, person("ann").public_key, 100.0) == invite


# --- command-line argument types ----------------------------------------------------------------

ARGUMENT_TYPES: dict[str, Callable[[str], object]] = {
    "duration": room_cli.duration,
    "address": room_cli.address,
    "bootstrap_node": room_cli.bootstrap_node,
    "role": room_cli.role,
    "seconds": room_cli.seconds,
    "ip_address": room_cli.ip_address,
    "positive_int": room_cli.positive_int,
    "bounded_int": bounded_int(-5, 5),
    "node_listen_address": bootstrap_command._listen_address,
    "node_positive_seconds": bootstrap_command._positive_seconds,
}
typed = st.one_of(
    st.text(max_size=20),
    st.builds(lambda n, unit: f"{n}{unit}", st.floats() | st.integers(),
              st.sampled_from(["", "s", "m", "h", "d", "x"])),
    addresses,
    st.sampled_from(["nan", "inf", "-inf", "1e400", "0x10", "1_000", "٣", "²", " 5 "]),
)


@PROPS
@given(name=st.sampled_from(sorted(ARGUMENT_TYPES)), text=typed)
def test_argument_types_give_only_argument_type_errors(name: str, text: str) -> None:
    try:
        value = ARGUMENT_TYPES[name](text)
    except argparse.ArgumentTypeError as error:
        assert one_line(str(error))
        return
    if isinstance(value, float):
        assert math.isfinite(value) and value > 0
    if name == "duration":
        assert isinstance(value, int) and room_cli.duration(f"{value}s") == value


@PROPS
@given(text=st.one_of(st.text(max_size=70), st.binary(min_size=1, max_size=40).map(bytes.hex)))
def test_typed_in_public_keys_give_only_mitalk_errors(text: str) -> None:
    try:
        key = room_cli._parse_key(text)
    except MitalkError as error:
        assert one_line(str(error))
        return
    assert room_cli._parse_key(key.raw.hex().upper()) == key


# --- audio: Opus packets, WAV files, source specs ---------------------------------------------


@functools.cache
def opus_packet() -> bytes:
    return OpusEncoder(CodecConfig()).encode(bytes(range(256)) * 7 + bytes(128))


@PROPS
@given(packet=st.one_of(st.binary(min_size=1, max_size=200),
                        st.just(opus_packet()).flatmap(mutated).filter(bool)))
def test_opus_packets_decode_or_give_codec_errors(packet: bytes) -> None:
    decoder = OpusDecoder(CodecConfig())
    for run in (decoder.decode, decoder.recover_from_fec):
        try:
            assert len(run(packet)) == CodecConfig().frame_bytes
        except CodecError as error:
            assert one_line(str(error))


def wav_file(channels: int = 1, width: int = 2, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(bytes(range(200)))
    return out.getvalue()


@PROPS
@example(data=b"RIFF\xb4\x01\x00\x00WAVEf\x00@\x17<a\x86\xab")  # a chunk overruns the file
@given(data=st.one_of(
    st.binary(max_size=100),
    st.builds(wav_file, st.integers(1, 3), st.sampled_from([1, 2, 4]),
              st.sampled_from([8000, 48000])).flatmap(mutated),
))
def test_wav_files_load_or_give_audio_source_errors(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("wav") / "input.wav"
    path.write_bytes(data)
    try:
        source = WavSource.open(path, max_seconds=5.0)
    except AudioSourceError as error:
        assert one_line(str(error)) and str(path) in str(error)
        return
    assert source.frame_count >= 1


@PROPS
@given(spec=st.one_of(
    st.text(max_size=20),
    st.builds(lambda n: f"tone:{n}", st.floats() | st.integers() | st.text(max_size=5)),
))
def test_audio_source_specs_give_only_audio_source_errors(spec: str) -> None:
    assume(spec.strip().partition(":")[0] != "wav")  # a file path: the WAV test covers it
    try:
        source = source_from_spec(spec, seed=1)
    except AudioSourceError as error:
        assert one_line(str(error))
        return
    assert source.read_frame()
